//! Slow and silent request heads. Spec: both engines of `sse_runtime::Server` (the framework's
//! own and hyper) close a connection whose request head is not complete within the head
//! timeout, whether the client sends nothing or a byte now and then, and an idle keep-alive
//! connection after it; an SSE stream, whose client sends nothing after its request, lives on.
//! (The setup the README showed before, `axum::serve` over `WriteDeadline`, kept such
//! connections open for as long as the client liked.)

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use sse_integration_tests::{PATIENCE, RawClient};
use sse_runtime::{Manager, Server, SseHandler, WriteDeadline};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const HEAD_TIMEOUT: Duration = Duration::from_millis(300);

struct Running {
    addr: std::net::SocketAddr,
    manager: Manager,
    _stop: sse_runtime::CancellationToken,
}

async fn start(hyper: bool) -> Running {
    let manager = Manager::builder()
        .heartbeat(Duration::from_millis(900))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/sse", get(SseHandler::new(&manager).topic("t")))
        .route("/hello", get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = Server::new(app).head_timeout(HEAD_TIMEOUT);
    if hyper {
        server = server.hyper();
    }
    let stop = sse_runtime::CancellationToken::new();
    tokio::spawn(server.run_with_shutdown(
        WriteDeadline::new(listener, Duration::from_secs(30)),
        stop.clone().cancelled_owned(),
    ));
    Running {
        addr,
        manager,
        _stop: stop,
    }
}

/// Reads until the server closes the connection; returns what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    received
}

async fn a_silent_connection_is_closed(hyper: bool) {
    let server = start(hyper).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    until_closed(&mut stream).await;
    assert!(started.elapsed() >= HEAD_TIMEOUT);
}

async fn a_trickling_head_is_closed(hyper: bool) {
    let server = start(hyper).await;
    let started = Instant::now();
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for byte in b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle() {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // the attacker's pace
        }
    });
    let mut received = Vec::new();
    tokio::time::timeout(PATIENCE, read.read_to_end(&mut received))
        .await
        .expect("closed while the head still trickles in")
        .ok();
    assert!(started.elapsed() >= HEAD_TIMEOUT);
    assert!(
        !String::from_utf8_lossy(&received).contains("hello"),
        "never answered"
    );
    trickle.abort();
}

async fn an_idle_keep_alive_connection_is_closed_and_a_stream_is_not(hyper: bool) {
    let server = start(hyper).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = until_closed(&mut idle).await;
    assert!(String::from_utf8_lossy(&answered).ends_with("hello"));

    let mut stream = RawClient::send(server.addr, b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n").await;
    server.manager.wait_until(|s| s.subscribers == 1).await;
    let opened = Instant::now();
    // The heartbeat comes 900 ms into the stream, three head timeouts later; the stream is not
    // closed before it (read_until_contains fails on a close).
    stream.read_until_contains(b":\n\n").await;
    assert!(opened.elapsed() > HEAD_TIMEOUT);
    assert_eq!(server.manager.stats().subscribers, 1);
}

#[tokio::test]
async fn the_framework_engine_closes_a_silent_connection() {
    a_silent_connection_is_closed(false).await;
}

#[tokio::test]
async fn the_hyper_engine_closes_a_silent_connection() {
    a_silent_connection_is_closed(true).await;
}

#[tokio::test]
async fn the_framework_engine_closes_a_trickling_head() {
    a_trickling_head_is_closed(false).await;
}

#[tokio::test]
async fn the_hyper_engine_closes_a_trickling_head() {
    a_trickling_head_is_closed(true).await;
}

#[tokio::test]
async fn the_framework_engine_closes_idle_keep_alives_but_not_streams() {
    an_idle_keep_alive_connection_is_closed_and_a_stream_is_not(false).await;
}

#[tokio::test]
async fn the_hyper_engine_closes_idle_keep_alives_but_not_streams() {
    an_idle_keep_alive_connection_is_closed_and_a_stream_is_not(true).await;
}
