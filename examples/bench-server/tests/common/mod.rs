//! A bench-server process driven from outside, as the benchmarks and operators run it.

#![allow(dead_code, reason = "each test file uses a part")]

use std::process::{Child, Command, Stdio};

/// A bench-server process on a free port, with `env`; killed when dropped.
pub struct Node {
    pub child: Child,
    pub addr: String,
    /// The lines it printed after the first, as they come.
    lines: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>,
}

impl Node {
    pub fn start(env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bench-server"))
            .env("PORT", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .expect("bench-server starts");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("bench-server listening on http://")
            .or_else(|| {
                line.trim()
                    .strip_prefix("bench-server listening on https://")
            })
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        // Drained by a thread of its own, so the process never blocks on a full pipe.
        let (send, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(stdout).map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        Self {
            child,
            addr,
            lines: tokio::sync::Mutex::new(lines),
        }
    }

    /// Waits until it prints a line containing `needle` (lines before it are skipped).
    pub async fn wait_for_line(&self, needle: &str) -> String {
        let mut lines = self.lines.lock().await;
        tokio::time::timeout(sse_integration_tests::PATIENCE, async {
            while let Some(line) = lines.recv().await {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("bench-server exited before printing {needle:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("bench-server did not print {needle:?} in time"))
    }

    pub fn port(&self) -> u64 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub async fn stats(&self) -> serde_json::Value {
        let body = reqwest_get(&self.url("/stats")).await;
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn reqwest_get(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Waits until `/stats` satisfies `done` (the server's own counts: what it has seen, not a
/// guess at how long it takes).
pub async fn stats_until(
    node: &Node,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + sse_integration_tests::PATIENCE;
    loop {
        let stats = node.stats().await;
        if done(&stats) {
            return stats;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
