//! The event contract's checks that run node: the official AsyncAPI parser.

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
