//! Spec: `sse_runtime::serve` writes an SSE stream without allocating per delivered event
//! (issue 15), whether a stream is woken for each event or reads a backlog of several at once.
//!
//! A real server on loopback and real TCP clients, in one process whose global allocator
//! counts: the clients read into fixed buffers, so what is counted while events flow is the
//! publishes' own allocations (a handful each, whatever the number of subscribers) and whatever
//! the server allocates to deliver them, which must be nothing. This file holds one test:
//! nothing else may allocate while it counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use sse_runtime::{Manager, SseHandler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "common/counting.rs"]
mod counting;

use counting::{Counting, count};

#[global_allocator]
static GLOBAL: Counting = Counting;

const CLIENTS: usize = 100;

/// Most allocations one publish makes (serializing, encoding, sharing the frame, the log's
/// growth; see tests/allocations.rs, which counts them alone).
const PER_PUBLISH: u64 = 5;

/// Subscribes over HTTP and counts the SSE frames it receives (each ends with a blank line),
/// reading into a fixed buffer so that it allocates nothing itself.
async fn client(addr: SocketAddr, frames: Arc<AtomicUsize>) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /sse/readings HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut previous = 0u8;
    loop {
        let n = socket.read(&mut buf).await.unwrap();
        if n == 0 {
            return;
        }
        let mut ended = 0;
        for &byte in &buf[..n] {
            if byte == b'\n' && previous == b'\n' {
                ended += 1;
            }
            previous = byte;
        }
        frames.fetch_add(ended, Ordering::Relaxed);
    }
}

/// Waits, letting the server and the clients run, until the clients have received `total`
/// frames in all.
async fn until_received(frames: &AtomicUsize, total: usize) {
    while frames.load(Ordering::Relaxed) < total {
        tokio::task::yield_now().await;
    }
}

#[test]
fn serve_writes_each_event_without_allocating() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let manager = Manager::builder().history(64).build().unwrap();
        let app = Router::new().route(
            "/sse/readings",
            get(SseHandler::new(&manager).topic("readings")),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(sse_runtime::serve(listener, app));
        let frames = Arc::new(AtomicUsize::new(0));
        for _ in 0..CLIENTS {
            tokio::spawn(client(addr, frames.clone()));
        }
        manager.wait_until(|s| s.subscribers == CLIENTS).await;
        // The `retry:` preamble of every stream, then a warm-up: the first events grow the
        // log, the wakers' slots and the scratch buffer the streams are written from.
        let mut expected = CLIENTS;
        until_received(&frames, expected).await;
        for n in 0..3 {
            manager.publish("readings", &n);
            expected += CLIENTS;
            until_received(&frames, expected).await;
        }

        // One event at a time: every stream is woken for each one.
        let before = count();
        for n in 0..10 {
            manager.publish("readings", &n);
            expected += CLIENTS;
            until_received(&frames, expected).await;
        }
        let one_at_a_time = count() - before;

        // Ten events published before any stream runs: each stream writes them together.
        let before = count();
        for n in 0..10 {
            manager.publish("readings", &n);
        }
        expected += 10 * CLIENTS;
        until_received(&frames, expected).await;
        let backlog = count() - before;

        eprintln!(
            "10 publishes, {} deliveries one at a time: {one_at_a_time} allocations; \
             the same as a backlog of 10: {backlog}",
            10 * CLIENTS
        );
        assert!(
            one_at_a_time <= 10 * PER_PUBLISH,
            "{one_at_a_time} allocations for 10 publishes and {} deliveries",
            10 * CLIENTS
        );
        assert!(
            backlog <= 10 * PER_PUBLISH,
            "{backlog} allocations for 10 publishes and {} deliveries read as a backlog",
            10 * CLIENTS
        );
    });
}
