//! Spec (issue 13): 10 000 clients, each opening a distinct polled URL, in bounded batches
//! (a batch waits until the running pollers leave room for it under the default cap), leave
//! nothing behind: once they are gone and their pollers' linger and their histories'
//! retention have passed, every count is zero and the process's memory is back to its idle
//! level (measured after a warm-up round of the same shape, so the allocator's own growth is
//! not counted as a leak).

use std::net::Ipv4Addr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use sse_integration_tests::{PATIENCE, RawClient, TestServer, rss_kib};
use sse_runtime::config::DEFAULT_MAX_POLLERS;
use sse_runtime::{Manager, PollError, SseHandler, polling::Polling};

const CLIENTS: usize = 10_000;
const WARM_UP: usize = 1_000;
const BATCH: usize = 200;

async fn run_clients(manager: &Manager, server: &TestServer, range: std::ops::Range<usize>) {
    let addr = server.addr;
    let mut next = range.start;
    while next < range.end {
        let batch = BATCH.min(range.end - next);
        tokio::time::timeout(
            PATIENCE,
            manager.wait_until(|s| s.pollers + batch <= DEFAULT_MAX_POLLERS),
        )
        .await
        .expect("lingering pollers end");
        let clients: Vec<_> = (next..next + batch)
            .map(|n| {
                tokio::spawn(async move {
                    // Spread over loopback addresses, as many clients would be.
                    let from =
                        Ipv4Addr::new(127, 0, 1 + (n / 250 % 200) as u8, 1 + (n % 250) as u8);
                    let mut client = RawClient::get_from(from, addr, &format!("/p/{n}")).await;
                    assert_eq!(client.status(), 200, "{}", client.head);
                    client.read_until_contains(b"data:").await;
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
        next += batch;
    }
}

async fn idle(manager: &Manager) {
    tokio::time::timeout(
        PATIENCE,
        manager.wait_until(|s| {
            s.subscribers == 0 && s.topics == 0 && s.pollers == 0 && s.retained == 0
        }),
    )
    .await
    .expect("everything released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_clients_on_distinct_polled_urls_leave_nothing_behind() {
    let manager = Manager::builder()
        .retention(Duration::from_millis(500))
        .build()
        .unwrap();
    let app = Router::new().route(
        "/p/{name}",
        get(SseHandler::new(&manager).polling(|_| {
            Polling::new(|_| async { Ok::<_, PollError>("sample") })
                .interval(Duration::from_secs(1))
        })),
    );
    let server = TestServer::start_direct(app, Duration::from_secs(10)).await;

    run_clients(&manager, &server, 0..WARM_UP).await;
    idle(&manager).await;
    let idle_kib = rss_kib();

    run_clients(&manager, &server, WARM_UP..CLIENTS).await;
    let busy_kib = rss_kib();
    idle(&manager).await;
    let after_kib = rss_kib();
    let stats = manager.stats();
    eprintln!(
        "RSS: {idle_kib} KiB idle after the warm-up, {busy_kib} KiB at the end of the soak, \
         {after_kib} KiB once released; {} pollers started, {} refused",
        stats.pollers_started,
        stats.refused.total()
    );
    assert_eq!(stats.pollers_started, CLIENTS as u64);
    assert_eq!(stats.pollers_stopped, CLIENTS as u64);
    assert_eq!(
        stats.refused.total(),
        0,
        "the batches stayed under the caps"
    );
    assert!(
        after_kib - idle_kib < 8 * 1024,
        "memory back to its idle level: {idle_kib} KiB idle, {after_kib} KiB after"
    );
}
