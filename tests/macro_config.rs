//! Per-topic options on the attributes, and publishes that no route can deliver.
//!
//! Spec: `history = N`, `history_bytes = N` and `retention = ".."` on `#[sse_topic]` and
//! `#[sse_poll]` override the manager's settings for that route's topics, as
//! `SseHandler::history` etc. do by hand. A generated `publish_*` helper publishes into the
//! global manager; when the macro routes are mounted on another manager (`router_with`), such a
//! publish reaches nobody, so it is counted in `Stats::unrouted` and logged as an error, never
//! silently lost. (Global state: this binary mounts the routes on other managers only.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use sse_integration_tests::{SseClient, TestServer};
use sse_runtime::{Manager, PollError, sse_poll, sse_topic};

#[sse_topic("ticks", history = 2, retention = "0s")]
#[derive(Serialize)]
struct Tick(u32);

#[sse_topic("quotes", history_bytes = 100)]
#[derive(Serialize)]
struct Quote(String);

static COUNTER: AtomicU64 = AtomicU64::new(0);

#[sse_poll(
    interval = "10ms",
    change_detection = false,
    history = 1,
    retention = "1h"
)]
async fn counter() -> Result<u64, PollError> {
    Ok(COUNTER.fetch_add(1, Ordering::SeqCst))
}

async fn start(manager: &Manager) -> TestServer {
    TestServer::start(
        sse_runtime::routes::router_with(manager),
        Duration::from_secs(30),
    )
    .await
}

async fn first_event_after(server: &TestServer, path: &str, id: &str) -> eventsource_stream::Event {
    SseClient::connect_with(&server.url(path), Some(id))
        .await
        .event()
        .await
}

#[tokio::test]
async fn history_on_sse_topic_bounds_what_a_reconnect_can_resume_from() {
    let manager = Manager::builder().history(1000).build().unwrap();
    let server = start(&manager).await;
    let mut client = SseClient::connect(&server.url("/sse/ticks")).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        publish_tick_to(&manager, &Tick(n));
        ids.push(client.event().await.id);
    }
    let resumed = first_event_after(&server, "/sse/ticks", &ids[1]).await;
    assert_eq!(
        (resumed.id.as_str(), resumed.data.as_str()),
        (ids[2].as_str(), "2")
    );
    let reset = first_event_after(&server, "/sse/ticks", &ids[0]).await;
    assert_eq!(
        reset.event, "reset",
        "the manager keeps 1000, the topic 2: {reset:?}"
    );
    assert!(reset.data.contains("history-exceeded"), "{}", reset.data);
}

#[tokio::test]
async fn retention_on_sse_topic_overrides_the_managers() {
    let manager = Manager::builder()
        .retention(Duration::from_secs(3600))
        .build()
        .unwrap();
    let server = start(&manager).await;
    let client = SseClient::connect(&server.url("/sse/ticks")).await;
    publish_tick_to(&manager, &Tick(1));
    drop(client);
    manager.wait_until(|stats| stats.subscribers == 0).await;
    let stats = manager.stats();
    assert_eq!(
        (stats.topics, stats.retained),
        (0, 0),
        "retention \"0s\": nothing kept"
    );

    // A topic without the option keeps the manager's hour.
    let client = SseClient::connect(&server.url("/sse/quotes")).await;
    publish_quote_to(&manager, &Quote("ACME 12.5".to_owned()));
    drop(client);
    manager.wait_until(|stats| stats.subscribers == 0).await;
    assert_eq!(manager.stats().retained, 1);
}

#[tokio::test]
async fn history_bytes_on_sse_topic_bounds_the_history_by_size() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut client = SseClient::connect(&server.url("/sse/quotes")).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        publish_quote_to(
            &manager,
            &Quote(format!("quote {n:02}: {}", "x".repeat(20))),
        );
        ids.push(client.event().await.id);
    }
    // Each frame is about 60 bytes: 100 bytes hold the newest, not six.
    let resumed = first_event_after(&server, "/sse/quotes", &ids[4]).await;
    assert_eq!(resumed.id, ids[5]);
    let reset = first_event_after(&server, "/sse/quotes", &ids[0]).await;
    assert_eq!(reset.event, "reset", "{reset:?}");
}

#[tokio::test]
async fn history_and_retention_on_sse_poll_apply_to_the_polled_topic() {
    let manager = Manager::builder()
        .retention(Duration::ZERO)
        .build()
        .unwrap();
    let server = start(&manager).await;
    let mut client = SseClient::connect(&server.url("/sse/counter")).await;
    let ids = [
        client.event().await.id,
        client.event().await.id,
        client.event().await.id,
    ];
    drop(client);
    manager.wait_until(|stats| stats.pollers == 0).await;
    let stats = manager.stats();
    assert_eq!(
        stats.retained, 1,
        "retention \"1h\" beats the manager's zero: {stats:?}"
    );
    let reset = first_event_after(&server, "/sse/counter", &ids[0]).await;
    assert_eq!(reset.event, "reset", "history = 1: {reset:?}");
}

#[tokio::test]
async fn a_plain_publish_helper_while_routes_serve_another_manager_is_counted_not_lost_silently() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut client = SseClient::connect(&server.url("/sse/ticks")).await;

    publish_tick(&Tick(7)); // into the global manager, which mounts no route
    publish_tick(&Tick(8));
    assert_eq!(Manager::global().stats().unrouted, 2);
    assert_eq!(manager.stats().unrouted, 0);

    publish_tick_to(&manager, &Tick(9));
    assert_eq!(
        client.event().await.data,
        "9",
        "7 and 8 never reached the route"
    );
}
