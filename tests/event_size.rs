//! Event size and lag. Spec: an event whose encoded frame is over `max_event_bytes` is refused
//! at publish (logged, counted in `Stats::oversized`, no id spent) and reaches nobody; lag is
//! measured on what queues up *behind* the event a subscriber is sending, so one large event
//! never disconnects anyone, and the next event reaches every subscriber.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use sse_integration_tests::{SseClient, TestServer};
use sse_runtime::{
    Manager, SseHandler, config::DEFAULT_MAX_EVENT_BYTES, config::DEFAULT_MAX_LAG_BYTES,
    event_id::EventId,
};

async fn two_subscribers(manager: &Manager) -> (TestServer, [SseClient; 2]) {
    let app = Router::new().route("/feed", get(SseHandler::new(manager).topic("feed")));
    let server = TestServer::start_direct(app, Duration::from_secs(30)).await;
    let a = SseClient::connect(&server.url("/feed")).await;
    let b = SseClient::connect(&server.url("/feed")).await;
    manager.wait_until(|s| s.subscribers == 2).await;
    (server, [a, b])
}

#[tokio::test]
async fn an_event_over_the_size_limit_is_refused_and_everyone_gets_the_next_one() {
    let manager = Manager::new();
    let (_server, mut clients) = two_subscribers(&manager).await;
    manager.publish("feed", &"x".repeat(DEFAULT_MAX_EVENT_BYTES + 1));
    manager.publish("feed", &"next");
    for client in &mut clients {
        let event = client.event().await;
        assert_eq!(event.data, "\"next\"");
        assert_eq!(
            event.id.parse::<EventId>().unwrap().sequence(),
            1,
            "the refused event spent no id"
        );
    }
    let stats = manager.stats();
    assert_eq!(
        (stats.oversized, stats.lagged, stats.subscribers),
        (1, 0, 2)
    );
}

#[tokio::test]
async fn an_event_as_large_as_the_lag_limit_reaches_every_subscriber_with_those_after_it() {
    let manager = Manager::new();
    let (_server, mut clients) = two_subscribers(&manager).await;
    // Frame overhead included, this event alone is nearly the whole lag budget in bytes.
    let large = "y".repeat(DEFAULT_MAX_LAG_BYTES - 100);
    manager.publish("feed", &large);
    for small in 0..3 {
        manager.publish("feed", &small);
    }
    for client in &mut clients {
        assert_eq!(client.event().await.data.len(), large.len() + 2);
        for small in 0..3 {
            assert_eq!(client.event().await.data, small.to_string());
        }
    }
    assert_eq!(manager.stats().lagged, 0);
}

#[tokio::test]
async fn a_subscriber_with_too_much_queued_behind_its_next_event_is_still_disconnected() {
    let manager = Manager::builder().max_lag_bytes(64 * 1024).build().unwrap();
    let mut sub = manager.subscribe("feed").unwrap();
    let chunk = "z".repeat(16 * 1024);
    for i in 0..6 {
        manager.publish("feed", &(i, &chunk));
    }
    assert!(sub.recv().await.is_none(), "80 KiB behind its next event");
    assert_eq!(manager.stats().lagged, 1);
}
