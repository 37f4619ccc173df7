//! The event contract's checks that run node: the official AsyncAPI parser, and `tsc`.

/// Runs the official AsyncAPI parser (`node-tests/`, installed by `cargo xtask test`) on
/// `document`: whether it passed, and its diagnostics.
pub fn asyncapi_parser(document: &serde_json::Value) -> (bool, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("node-tests");
    assert!(
        root.join("node_modules/@asyncapi/parser").is_dir(),
        "the AsyncAPI parser is not installed: `cargo xtask test` installs it (npm ci in {})",
        root.display()
    );
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("asyncapi-{}-{run}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec_pretty(document).unwrap()).unwrap();
    let output = std::process::Command::new("node")
        .arg(root.join("validate-asyncapi.mjs"))
        .arg(&file)
        .output()
        .expect("node runs (it is needed for the contract's checks)");
    let _ = std::fs::remove_file(&file);
    let diagnostics = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), diagnostics)
}

/// Runs `tsc` (`node-tests/`, installed by `cargo xtask test`) in `dir` on what `args` name,
/// with what every check of the contract uses: no output files, ES2022 modules, the DOM's
/// types. Whether it passed, and its errors (trimmed; file names relative to `dir`).
pub fn tsc(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let tsc = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("node-tests/node_modules/typescript/bin/tsc");
    assert!(
        tsc.is_file(),
        "tsc is not installed: `cargo xtask test` installs it (npm ci in node-tests)"
    );
    let output = std::process::Command::new("node")
        .arg(&tsc)
        .args(["--noEmit", "--target", "es2022", "--module", "es2022"])
        .args(["--lib", "es2022,dom"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("node runs tsc (it is needed for the contract's checks)");
    let errors = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success(), errors)
}
