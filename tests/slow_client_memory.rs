//! Memory stays bounded whatever a client does: a client that never reads while 50 MiB is
//! published is disconnected, the topic's log stays under its byte bound, and the process's
//! resident memory grows by a fraction of what was published.
//!
//! Alone in its test binary: resident memory is a property of the whole process, and a test
//! running next to it would move the numbers.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use sse_integration_tests::{PATIENCE, SseClient, TestServer};
use sse_runtime::{Manager, SseHandler, WriteDeadline};

fn feed(manager: &Manager) -> Router {
    Router::new().route("/feed", get(SseHandler::new(manager).topic("feed")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_and_memory_stays_bounded() {
    let history_bytes = 2 << 20;
    let deadline = Duration::from_millis(300);
    let manager = Manager::builder()
        .heartbeat(deadline)
        .history(100_000)
        .history_bytes(history_bytes)
        .max_lag_bytes(1 << 20)
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = TestServer::serve(WriteDeadline::new(listener, deadline), feed(&manager));

    let stalled = sse_integration_tests::stalled_client(server.addr, "/feed").await;
    let mut fast = SseClient::connect(&server.url("/feed")).await;
    manager.wait_until(|s| s.subscribers == 2).await;

    // 50 MiB in 64 KiB events; the fast client reads each one before the next is published.
    let rss_before = sse_integration_tests::rss_kib();
    let payload = "x".repeat(64 * 1024);
    let mut largest_log = 0;
    for i in 0..800u32 {
        manager.publish("feed", &(i, &payload));
        let event = fast.event().await;
        assert!(
            event.data.starts_with(&format!("[{i},")),
            "every event, in order, at once"
        );
        largest_log = largest_log.max(manager.topics()[0].history_bytes);
    }
    let growth_mib = (sse_integration_tests::rss_kib() - rss_before) as f64 / 1024.0;
    eprintln!("50 MiB published: log at most {largest_log} bytes, RSS grew {growth_mib:.1} MiB");

    assert!(
        largest_log <= history_bytes,
        "the log never exceeds its bound: {largest_log}"
    );
    // Unbounded queueing for the stalled client would hold on to all 50 MiB.
    assert!(
        growth_mib < 32.0,
        "RSS grew {growth_mib:.1} MiB while 50 MiB was published"
    );
    let stats = tokio::time::timeout(PATIENCE, manager.wait_until(|s| s.subscribers == 1))
        .await
        .expect("the stalled client is disconnected");
    assert_eq!(stats.topics, 1);
    drop(stalled);
}
