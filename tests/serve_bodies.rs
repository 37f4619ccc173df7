//! Request bodies under `sse_runtime::serve`, attacked the way the issue found them: many
//! connections declaring large bodies. Spec: nothing of a body is read unless its handler asks
//! (an SSE GET or a 404 declaring 2 MiB costs no memory for it), and the bodies that handlers
//! do read hold at most `MAX_PENDING_BODIES` bytes together. Its own test binary, so the
//! process's memory is this test's alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use futures_util::StreamExt;
use sse_integration_tests::TestServer;
use sse_runtime::{Manager, SseHandler, serve::MAX_BODY, serve::MAX_PENDING_BODIES};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Opens a connection, sends `head` declaring `MAX_BODY` bytes, then all of them but one.
async fn declare_and_hold_back(addr: std::net::SocketAddr, head: &'static str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("{head}Host: x\r\nContent-Length: {MAX_BODY}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(&vec![b'x'; MAX_BODY - 1]).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_gets_declaring_big_bodies_subscribe_at_once_and_cost_no_memory_for_them() {
    let manager = Manager::new();
    let app = Router::new().route("/alarms", get(SseHandler::new(&manager).topic("alarms")));
    let server = TestServer::start_direct(app, Duration::from_secs(30)).await;
    let before = sse_integration_tests::rss_kib();
    let clients: Vec<_> = (0..150)
        .map(|_| {
            tokio::spawn(declare_and_hold_back(
                server.addr,
                "GET /alarms HTTP/1.1\r\n",
            ))
        })
        .collect();
    // Before the fix the server waited for each body's last byte: nobody ever subscribed.
    tokio::time::timeout(
        Duration::from_secs(60),
        manager.wait_until(|s| s.subscribers == 150),
    )
    .await
    .expect("every stream opens without its body");
    let mut held = Vec::new();
    for client in clients {
        held.push(client.await.unwrap());
    }
    let growth_mib = (sse_integration_tests::rss_kib() - before) as f64 / 1024.0;
    eprintln!("150 x 2 MiB declared: RSS grew {growth_mib:.1} MiB");
    assert!(
        growth_mib < 32.0,
        "RSS grew {growth_mib:.1} MiB for 300 MiB of unread bodies"
    );
    drop(held);
    manager.wait_until(|s| s.subscribers == 0).await;
}

/// Bytes of bodies the handlers are holding, and the most they ever held.
#[derive(Default)]
struct Held {
    now: AtomicUsize,
    most: AtomicUsize,
    readers: AtomicUsize,
    changed: Notify,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bodies_handlers_read_hold_at_most_the_budget_together() {
    let held = Arc::new(Held::default());
    let app = Router::new().route(
        "/upload",
        post({
            let held = held.clone();
            move |body: Body| {
                let held = held.clone();
                async move {
                    held.readers.fetch_add(1, Ordering::SeqCst);
                    let mut mine = 0;
                    let mut stream = body.into_data_stream();
                    while let Some(Ok(chunk)) = stream.next().await {
                        mine += chunk.len();
                        let now = held.now.fetch_add(chunk.len(), Ordering::SeqCst) + chunk.len();
                        held.most.fetch_max(now, Ordering::SeqCst);
                        held.changed.notify_waiters();
                    }
                    held.now.fetch_sub(mine, Ordering::SeqCst);
                    "done"
                }
            }
        }),
    );
    let server = TestServer::start_direct(app, Duration::from_secs(30)).await;
    let admitted = MAX_PENDING_BODIES / MAX_BODY;
    let clients: Vec<_> = (0..admitted + 8)
        .map(|_| {
            tokio::spawn(declare_and_hold_back(
                server.addr,
                "POST /upload HTTP/1.1\r\n",
            ))
        })
        .collect();
    // Wait until the admitted bodies have arrived in full but for their last byte.
    let full = admitted * (MAX_BODY - 1);
    loop {
        let notified = held.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if held.now.load(Ordering::SeqCst) >= full {
            break;
        }
        tokio::time::timeout(Duration::from_secs(30), notified)
            .await
            .expect("the admitted bodies arrive");
    }
    let most = held.most.load(Ordering::SeqCst);
    eprintln!(
        "{} uploads, {} handlers reading, at most {most} bytes held",
        admitted + 8,
        held.readers.load(Ordering::SeqCst)
    );
    assert!(most <= MAX_PENDING_BODIES, "{most} bytes held together");
    drop(clients);
}
