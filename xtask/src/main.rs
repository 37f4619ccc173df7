//! `cargo xtask test [--no-browser] [-- <cargo test args>]`: the README's test command.
//! (`cargo xtask contract` writes the examples' event contracts, see [`contract`].)
//!
//! 1. Installs what the tests need and the machine lacks, with apt-get when it can (as root,
//!    or through `sudo -n`): Chromium and its driver for the browser tests, `redis-server` (and
//!    `redis-cli`, to make a cluster) for the backplane tests, nginx and Caddy for the proxy tests (they start their own on free
//!    ports); and node's packages of `node-tests/` (the AsyncAPI parser) with `npm ci`.
//! 2. Checks what it cannot install: PostgreSQL on 127.0.0.1:5432 (or `DATABASE_URL`) for the
//!    `orders` example's tests.
//! 3. Runs `cargo test --workspace --no-fail-fast`, then prints one summary: the totals of every
//!    test binary, the failures by name, and every test that did not run, with why.
//!
//! A test that did not run is never counted as passed. Without Chromium the browser tests
//! fail (they say so); `--no-browser` leaves them out on purpose, lists them as not run, and
//! still exits non-zero unless everything else passed.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The package and test target holding the browser tests.
const BROWSER_TESTS: (&str, &str) = ("dashboard", "browser");

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("contract") => contract(),
        _ => {
            eprintln!(
                "usage: cargo xtask test [--no-browser] [-- <cargo test arguments>]\n       cargo xtask contract"
            );
            ExitCode::from(2)
        }
    }
}

fn test(args: &[String]) -> ExitCode {
    let (ours, passthrough) = match args.iter().position(|a| a == "--") {
        Some(split) => (&args[..split], &args[split + 1..]),
        None => (args, &[][..]),
    };
    let mut no_browser = false;
    for arg in ours {
        match arg.as_str() {
            "--no-browser" => no_browser = true,
            other => {
                eprintln!(
                    "unknown option {other}; usage: cargo xtask test [--no-browser] [-- <cargo test arguments>]"
                );
                return ExitCode::from(2);
            }
        }
    }

    // The layers depend one way: a circle between the runtime's modules fails the run.
    step("module dependencies (xtask/tools/module-cycles.py)");
    if let Err(why) = module_cycles() {
        eprintln!("\n*** {why} ***\n");
        return ExitCode::FAILURE;
    }

    let mut missing: Vec<&str> = Vec::new();
    if !no_browser && !browser_installed() {
        missing.extend(["chromium", "chromium-driver"]);
    }
    if which("redis-server").is_none() {
        missing.push("redis-server");
    }
    // The cluster tests make their cluster with `redis-cli --cluster create`.
    if which("redis-cli").is_none() {
        missing.push("redis-tools");
    }
    // The proxy tests run real ones (tests/proxies.rs, the browser tests behind nginx).
    if which("nginx").is_none() && !Path::new("/usr/sbin/nginx").is_file() {
        missing.push("nginx");
    }
    if which("caddy").is_none() {
        missing.push("caddy");
    }
    if !missing.is_empty() {
        step(&format!("installing {}", missing.join(" ")));
        if let Err(why) = apt_install(&missing) {
            eprintln!(
                "\n*** could not install {}: {why}\n*** install them yourself (apt-get install {}), \
                 or run `cargo xtask test --no-browser` to leave the browser tests out ***\n",
                missing.join(" "),
                missing.join(" ")
            );
            return ExitCode::FAILURE;
        }
    }
    // The contract's checks run the official AsyncAPI parser: node's packages, from the
    // lockfile. Installed when missing or older than the lockfile.
    if let Err(why) = node_packages() {
        eprintln!("\n*** {why} ***\n");
        return ExitCode::FAILURE;
    }
    let database = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let postgres_up = reachable(&database);
    if !postgres_up {
        eprintln!(
            "\n*** PostgreSQL is not reachable at {database} (set DATABASE_URL): the orders \
             example's tests will fail ***\n"
        );
    }

    let mut not_run: Vec<(String, &str)> = Vec::new();
    let mut cargo = cargo();
    cargo.args(["test", "--workspace", "--no-fail-fast"]);
    if no_browser {
        let (package, target) = BROWSER_TESTS;
        for name in list_tests(package, target) {
            not_run.push((format!("{package} --test {target}: {name}"), "--no-browser"));
        }
        // Every test binary, but the browser one of its package left out.
        cargo.args(["--exclude", package]);
    }
    cargo.args(passthrough);
    step(&format!("{cargo:?}"));
    let mut outcome = run_and_tally(cargo);
    if no_browser {
        let (package, _) = BROWSER_TESTS;
        let mut rest = self::cargo();
        rest.args([
            "test",
            "--no-fail-fast",
            "--package",
            package,
            // Its unit tests (a binary crate: no `--lib`, which cargo refuses for it).
            "--bins",
        ]);
        rest.args(passthrough);
        step(&format!("{rest:?}"));
        outcome.add(run_and_tally(rest));
    }

    summary(&outcome, &not_run, postgres_up);
    if outcome.ok() && not_run.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The applications whose event contract is checked in, and where.
const CONTRACTS: &[(&str, &str)] = &[("dashboard", "examples/dashboard/contract")];

/// `cargo xtask contract`: writes each application's event contract (`asyncapi.json`,
/// `events.d.ts`) from its code; their tests fail while the checked-in files are stale.
fn contract() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (package, dir) in CONTRACTS {
        step(&format!("{package}: {dir}"));
        let status = cargo()
            .args(["run", "-q", "-p", package, "--", "--contract"])
            .arg(root.join(dir))
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("\n*** could not write the contract of {package} ***\n");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Runs the repository's copy of the module-cycle checker over both crates: it prints each
/// module's dependencies and fails on any circle.
fn module_cycles() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new("python3")
        .arg(root.join("xtask/tools/module-cycles.py"))
        .arg(root.join("sse-runtime"))
        .arg(root.join("sse-macros"))
        .status()
        .map_err(|error| format!("could not run python3 for the module-cycle check: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(
            "the modules of sse-runtime or sse-macros depend on each other in a circle (above)"
                .into(),
        )
    }
}

/// Totals over every `test result:` line, and the names of failed tests.
#[derive(Default)]
struct Outcome {
    passed: u64,
    failed: u64,
    ignored: u64,
    binaries: u64,
    failures: Vec<String>,
    /// Whether cargo itself succeeded (a build error fails with no `test result:` line).
    cargo_ok: bool,
}

impl Outcome {
    fn add(&mut self, other: Outcome) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.binaries += other.binaries;
        self.failures.extend(other.failures);
        self.cargo_ok &= other.cargo_ok;
    }

    fn ok(&self) -> bool {
        self.cargo_ok && self.failed == 0
    }
}

/// How long one test may run before the run is stopped as hung: libtest reports a test
/// running for over 60 seconds, and none of ours needs minutes.
const TEST_LIMIT: Duration = Duration::from_secs(10 * 60);
/// How long the whole `cargo test` may take, builds included (CI allows 90 minutes for
/// everything, installs and checks too): a hang fails here, loudly and by name, instead of
/// running into CI's limit with nothing said.
const RUN_LIMIT: Duration = Duration::from_secs(55 * 60);

/// Runs `command` with its output shown as it comes, and tallies the results it prints.
/// A test that runs past [`TEST_LIMIT`], or a run past [`RUN_LIMIT`], stops the run: its
/// process group is killed and the tests still running are counted as failed ("hung").
fn run_and_tally(mut command: Command) -> Outcome {
    use std::collections::HashMap;
    use std::os::unix::process::CommandExt;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let mut child = command
        .stdout(Stdio::piped())
        // Its own process group, so that a kill reaches the test binaries cargo started.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
    let group = child.id();
    // Tests libtest said were running for over 60 seconds, and since when; a test leaves
    // when its result line comes. `None` once the output ended.
    let slow: Arc<Mutex<Option<HashMap<String, Instant>>>> =
        Arc::new(Mutex::new(Some(HashMap::new())));
    let hung: Arc<Mutex<Vec<String>>> = Arc::default();
    let watchdog = {
        let (slow, hung) = (slow.clone(), hung.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            loop {
                std::thread::sleep(Duration::from_secs(5));
                let slow = slow.lock().unwrap();
                let Some(slow) = slow.as_ref() else { return };
                let over: Vec<String> = slow
                    .iter()
                    .filter(|(_, since)| since.elapsed() + Duration::from_secs(60) > TEST_LIMIT)
                    .map(|(name, _)| name.clone())
                    .collect();
                if over.is_empty() && started.elapsed() < RUN_LIMIT {
                    continue;
                }
                let mut named: Vec<String> = if over.is_empty() {
                    slow.keys().cloned().collect()
                } else {
                    over
                };
                if named.is_empty() {
                    named.push(format!(
                        "the run itself, past {} minutes",
                        RUN_LIMIT.as_secs() / 60
                    ));
                }
                eprintln!("\n*** hung, stopping the run: {} ***\n", named.join(", "));
                hung.lock().unwrap().extend(named);
                kill_group(group);
                return;
            }
        })
    };

    let mut outcome = Outcome::default();
    let stdout = child.stdout.take().expect("piped");
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(out, "{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            outcome.binaries += 1;
            outcome.passed += count(rest, " passed");
            outcome.failed += count(rest, " failed");
            outcome.ignored += count(rest, " ignored");
        } else if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" has been running for over 60 seconds"))
        {
            if let Some(slow) = slow.lock().unwrap().as_mut() {
                slow.insert(name.to_owned(), Instant::now());
            }
        } else if let Some((name, result)) = line
            .strip_prefix("test ")
            .and_then(|l| l.rsplit_once(" ... "))
        {
            if let Some(slow) = slow.lock().unwrap().as_mut() {
                slow.remove(name);
            }
            if result == "FAILED" {
                outcome.failures.push(name.to_owned());
            }
        }
    }
    drop(out);
    slow.lock().unwrap().take();
    let _ = watchdog.join();
    outcome.cargo_ok = child.wait().map(|status| status.success()).unwrap_or(false);
    for name in hung.lock().unwrap().drain(..) {
        outcome.failed += 1;
        outcome.failures.push(format!("{name} (hung)"));
        outcome.cargo_ok = false;
    }
    outcome
}

/// Sends SIGKILL to process group `group`. Through libc, not `kill(1)`: here procps-ng
/// 4.0.2's `kill -KILL -<pgid>` reached far more than the group (it took the shell that ran
/// the tests with it).
fn kill_group(group: u32) {
    unsafe extern "C" {
        fn kill(pid: i32, signal: i32) -> i32;
    }
    const SIGKILL: i32 = 9;
    let group = i32::try_from(group).expect("a pid fits in i32");
    assert!(group > 1, "never signal every process");
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    unsafe {
        kill(-group, SIGKILL);
    }
}

/// The number before `label` in a `test result:` line (`ok. 5 passed; 0 failed; ...`).
fn count(line: &str, label: &str) -> u64 {
    line.split(';')
        .map(|part| {
            let part = part.trim();
            part.strip_prefix("ok. ")
                .or_else(|| part.strip_prefix("FAILED. "))
                .unwrap_or(part)
        })
        .find_map(|part| part.strip_suffix(label)?.trim().parse().ok())
        .unwrap_or(0)
}

fn summary(outcome: &Outcome, not_run: &[(String, &str)], postgres_up: bool) {
    println!("\n== summary");
    println!(
        "{} passed, {} failed, {} ignored, in {} test binaries; {} not run",
        outcome.passed,
        outcome.failed,
        outcome.ignored,
        outcome.binaries,
        not_run.len()
    );
    for name in &outcome.failures {
        println!("  FAILED   {name}");
    }
    for (name, why) in not_run {
        println!("  NOT RUN  {name} ({why})");
    }
    if !outcome.cargo_ok && outcome.failed == 0 {
        println!("  cargo test itself failed (a build error?): see above");
    }
    if !postgres_up {
        println!("  PostgreSQL was not reachable: the orders tests above failed for that reason");
    }
    if outcome.ok() && not_run.is_empty() {
        println!("everything ran, and passed");
    }
}

/// The tests of one test target, listed without running them.
fn list_tests(package: &str, target: &str) -> Vec<String> {
    let output = cargo()
        .args([
            "test",
            "--package",
            package,
            "--test",
            target,
            "--",
            "--list",
        ])
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .map(str::to_owned)
        .collect()
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// `apt-get install` as root, or through passwordless sudo.
fn apt_install(packages: &[&str]) -> Result<(), String> {
    if which("apt-get").is_none() {
        return Err("this machine has no apt-get".into());
    }
    let prefix: Vec<&str> = if is_root() {
        Vec::new()
    } else if which("sudo").is_some()
        && Command::new("sudo")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success())
    {
        vec!["sudo", "-n"]
    } else {
        return Err("installing needs root or passwordless sudo".into());
    };
    let run = |args: &[&str]| -> Result<(), String> {
        let mut words: Vec<&str> = prefix.clone();
        words.extend(args);
        let status = Command::new(words[0])
            .args(&words[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("{}: {e}", words.join(" ")))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`{}` failed ({status})", words.join(" ")))
        }
    };
    run(&["apt-get", "update", "-qq"])?;
    let mut install = vec!["apt-get", "install", "-y", "-qq"];
    install.extend(packages);
    run(&install)
}

/// `npm ci` in `node-tests/` unless its `node_modules` is newer than its lockfile.
fn node_packages() -> Result<(), String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node-tests");
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let installed = modified(dir.join("node_modules/.package-lock.json"));
    let locked = modified(dir.join("package-lock.json"));
    if installed.is_some() && installed >= locked {
        return Ok(());
    }
    if which("npm").is_none() {
        return Err(
            "npm is missing: the contract's checks need node and npm (apt-get install nodejs npm)"
                .into(),
        );
    }
    step("installing node-tests' packages (npm ci)");
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .map_err(|error| format!("could not run npm: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`npm ci` in {} failed ({status})", dir.display()))
    }
}

fn browser_installed() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// Whether a TCP connection to the host and port of a `postgres://` URL opens within 2 s.
fn reachable(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
}

fn step(what: &str) {
    println!("== {what}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_are_read_from_a_test_result_line() {
        let line =
            "FAILED. 5 passed; 2 failed; 1 ignored; 0 measured; 3 filtered out; finished in 0.10s";
        assert_eq!(
            [" passed", " failed", " ignored"].map(|label| super::count(line, label)),
            [5, 2, 1]
        );
    }
}
