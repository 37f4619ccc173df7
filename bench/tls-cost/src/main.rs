//! What a connection costs over TLS, measured on `bench-server` (release build, default
//! settings but the caps) in one run, rounds alternating between the setups:
//!
//! - `plain`: HTTP/1.1 over TCP, one stream per connection (the baseline of the run);
//! - `tls-h1`: HTTP/1.1 over TLS (`HTTP2=0`), the framework's engine, one stream per connection;
//! - `tls-h2`: HTTP/2 over TLS, one stream per connection (a browser tab with one stream);
//! - `tls-h2x10`: HTTP/2 over TLS, ten streams per connection (a page with ten streams).
//!
//! For each: the server's resident memory per idle stream (RSS after `--streams` streams are
//! open, less RSS before, over the count), then its CPU time per delivery while `--events`
//! events go to every stream (user + system time from /proc, over streams x events). The
//! clients (rustls and hyper, in this process) read and parse every event.
//!
//!   cargo build --release -p bench-server -p tls-cost
//!   target/release/tls-cost [--streams 2000] [--events 200] [--rounds 3]
//!
//! (`BENCH_SERVER` names another bench-server binary.)

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sse_integration_tests::tls::{BodyEvents, TestCert};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Barrier;

// The load generator's, shared: this tool reads CPU and RSS, not the peak.
#[path = "../../loadgen/src/proc_stats.rs"]
#[allow(dead_code)]
mod proc_stats;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Setup {
    Plain,
    TlsH1,
    TlsH2,
    TlsH2x10,
}

impl Setup {
    const ALL: [Self; 4] = [Self::Plain, Self::TlsH1, Self::TlsH2, Self::TlsH2x10];

    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::TlsH1 => "tls-h1",
            Self::TlsH2 => "tls-h2",
            Self::TlsH2x10 => "tls-h2x10",
        }
    }

    fn streams_per_connection(self) -> usize {
        if self == Self::TlsH2x10 { 10 } else { 1 }
    }
}

/// One connection's way to send requests.
#[derive(Clone)]
enum Sender {
    H1(Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn connect(setup: Setup, cert: &TestCert, addr: SocketAddr) -> Self {
        match setup {
            Setup::Plain => {
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
                Self::h1(TokioIo::new(tcp)).await
            }
            Setup::TlsH1 => {
                let tls = cert.connect(addr, &[b"http/1.1"]).await.expect("TLS");
                Self::h1(TokioIo::new(tls)).await
            }
            Setup::TlsH2 | Setup::TlsH2x10 => {
                let tls = cert.connect(addr, &[b"h2"]).await.expect("TLS");
                let (sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                        .await
                        .expect("HTTP/2 handshake");
                tokio::spawn(connection);
                Self::H2(sender)
            }
        }
    }

    async fn h1<I>(io: TokioIo<I>) -> Self
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        Self::H1(Arc::new(tokio::sync::Mutex::new(sender)))
    }

    async fn send(
        &mut self,
        method: http::Method,
        path: &str,
        body: &'static str,
    ) -> http::Response<hyper::body::Incoming> {
        let request = |uri: String| {
            http::Request::builder()
                .method(method.clone())
                .uri(uri)
                .header("host", "localhost")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap()
        };
        match self {
            Self::H1(sender) => {
                let mut sender = sender.lock().await;
                sender.ready().await.expect("ready");
                sender.send_request(request(path.to_owned())).await
            }
            Self::H2(sender) => {
                sender
                    .send_request(request(format!("https://localhost{path}")))
                    .await
            }
        }
        .expect("response")
    }
}

struct Measured {
    kib_per_stream: f64,
    ns_per_delivery: f64,
}

async fn measure(
    setup: Setup,
    cert: &TestCert,
    dir: &std::path::Path,
    streams: usize,
    events: usize,
) -> Measured {
    let (cert_path, key_path) = cert.write_to(dir);
    let binary =
        std::env::var("BENCH_SERVER").unwrap_or_else(|_| "target/release/bench-server".into());
    let mut command = tokio::process::Command::new(binary);
    command
        .env("PORT", "0")
        .env("MAX_STREAMS", "1000000")
        .env("MAX_STREAMS_PER_IP", "1000000")
        .env("METRICS", "0")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if setup != Setup::Plain {
        command
            .env("TLS_CERT", &cert_path)
            .env("TLS_KEY", &key_path);
    }
    if setup == Setup::TlsH1 {
        command.env("HTTP2", "0");
    }
    let mut server = command.spawn().expect("bench-server starts");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().expect("a first line");
    let addr: SocketAddr = first
        .rsplit('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let process = proc_stats::Process::new(server.id().unwrap());

    // Warm up: one connection's worth of streams opened and closed, so that what the first
    // connections allocate once (the runtime's tables, the TLS session cache) is not counted.
    {
        let mut warm = Sender::connect(setup, cert, addr).await;
        let stream = warm.send(http::Method::GET, "/sse/warm", "").await;
        drop(BodyEvents::new(stream));
    }
    let mut control = Sender::connect(setup, cert, addr).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = process.rss_kib();

    let per = setup.streams_per_connection();
    let opened = Arc::new(Barrier::new(streams + 1));
    let done = Arc::new(Barrier::new(streams + 1));
    let go = Arc::new(Barrier::new(streams + 1));
    let mut tasks = Vec::new();
    for _ in 0..streams / per {
        let sender = Sender::connect(setup, cert, addr).await;
        for _ in 0..per {
            let mut sender = sender.clone();
            let (opened, go, done) = (opened.clone(), go.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let mut stream =
                    BodyEvents::new(sender.send(http::Method::GET, "/sse/feed", "").await);
                opened.wait().await;
                go.wait().await;
                for _ in 0..events {
                    stream.next().await.expect("every event");
                }
                done.wait().await;
                drop(stream);
            }));
        }
    }
    opened.wait().await;
    // The streams' first frames are written as they open; let the allocator settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = process.rss_kib();

    let cpu_before = process.cpu_seconds();
    go.wait().await;
    for _ in 0..events {
        let answer = control
            .send(
                http::Method::POST,
                "/publish/feed",
                r#"{"n":1,"payload":"0123456789abcdef0123456789abcdef"}"#,
            )
            .await;
        assert!(answer.status().is_success(), "{}", answer.status());
    }
    done.wait().await;
    let cpu_after = process.cpu_seconds();
    for task in tasks {
        task.await.unwrap();
    }
    drop(server);
    Measured {
        kib_per_stream: (rss_after as f64 - rss_before as f64) / streams as f64,
        ns_per_delivery: (cpu_after - cpu_before) * 1e9 / (streams * events) as f64,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let mut streams = 2000;
    let mut events = 200;
    let mut rounds = 3;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value: usize = args
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a number after the flag");
        match flag.as_str() {
            "--streams" => streams = value,
            "--events" => events = value,
            "--rounds" => rounds = value,
            other => panic!("unknown flag {other}"),
        }
    }
    let cert = TestCert::new();
    let dir = std::env::temp_dir().join(format!("tls-cost-{}", std::process::id()));
    let mut results: Vec<(Setup, Vec<Measured>)> =
        Setup::ALL.iter().map(|s| (*s, Vec::new())).collect();
    for round in 0..rounds {
        for (setup, measured) in &mut results {
            let m = measure(*setup, &cert, &dir, streams, events).await;
            println!(
                "{}",
                serde_json::json!({
                    "round": round, "setup": setup.name(), "streams": streams, "events": events,
                    "kib_per_stream": m.kib_per_stream, "ns_per_delivery": m.ns_per_delivery,
                })
            );
            measured.push(m);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let plain_kib = median(results[0].1.iter().map(|m| m.kib_per_stream).collect());
    let plain_ns = median(results[0].1.iter().map(|m| m.ns_per_delivery).collect());
    println!(
        "\n| setup | KiB per idle stream | vs plain | server CPU ns per delivery | vs plain |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (setup, measured) in &results {
        let kib = median(measured.iter().map(|m| m.kib_per_stream).collect());
        let ns = median(measured.iter().map(|m| m.ns_per_delivery).collect());
        println!(
            "| {} | {kib:.2} | {:.2}x | {ns:.0} | {:.2}x |",
            setup.name(),
            kib / plain_kib,
            ns / plain_ns
        );
    }
}
