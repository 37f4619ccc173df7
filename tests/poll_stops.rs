//! Spec (issue 32, part 2): what subscribers see after a poller's `stop_when` held. The poller
//! publishes the value that met the condition and stops; streams stay open (heartbeats only)
//! for as long as their clients keep them; a client that subscribes while the topic is still
//! alive gets that final value at once, under its id (a polled topic detects changes, so a
//! newcomer starts on its newest event); a new poller starts only once every subscriber has
//! left (and the linger has passed).
//!
//! And what they are told: `event = "..."` names the values' events, `error_event = "..."` the
//! failed polls' (default `poll-error`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sse_integration_tests::{SseClient, TestServer};
use sse_runtime::{Manager, PollError, sse_poll};

static BUILD_STEP: AtomicU64 = AtomicU64::new(0);
/// Notified when the build's poller has stopped.
static STOPPED: tokio::sync::Notify = tokio::sync::Notify::const_new();

fn stopped() {
    STOPPED.notify_one();
}

/// A build that finishes at step 3.
#[sse_poll(
    path = "/sse/build",
    interval = "10ms",
    stop_when = |step: &u64| *step >= 3,
    on_stop = stopped
)]
async fn build() -> Result<u64, PollError> {
    Ok(BUILD_STEP.fetch_add(1, Ordering::SeqCst) + 1)
}

static RELEASE_POLLS: AtomicU64 = AtomicU64::new(0);

/// A release that is not found at first, then found.
#[sse_poll(
    path = "/sse/release",
    interval = "10ms",
    event = "release",
    error_event = "release-error",
    stop_when = |n: &u64| *n >= 2
)]
async fn release() -> Result<u64, PollError> {
    match RELEASE_POLLS.fetch_add(1, Ordering::SeqCst) {
        0 => Err(PollError::new(
            http::StatusCode::NOT_FOUND,
            "no release yet",
        )),
        n => Ok(n),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pollers_values_and_errors_arrive_under_the_names_it_gives_them() {
    let manager = Manager::new();
    let server = TestServer::start_direct(
        sse_runtime::routes::router_with(&manager),
        Duration::from_secs(30),
    )
    .await;
    let mut client = SseClient::connect(&server.url("/sse/release")).await;
    let failed = client.event().await;
    assert_eq!(failed.event, "release-error");
    let payload: serde_json::Value = serde_json::from_str(&failed.data).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({"apiVersion": "v1", "statusCode": 404, "message": "no release yet"})
    );
    for n in ["1", "2"] {
        let value = client.event().await;
        assert_eq!((value.event.as_str(), value.data.as_str()), ("release", n));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_gets_the_final_value_of_a_stopped_poller() {
    let manager = Manager::new();
    let server = TestServer::start_direct(
        sse_runtime::routes::router_with(&manager),
        Duration::from_secs(30),
    )
    .await;
    let mut first = SseClient::connect(&server.url("/sse/build")).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(first.event().await);
    }
    assert_eq!(
        seen.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    tokio::time::timeout(sse_integration_tests::PATIENCE, STOPPED.notified())
        .await
        .expect("the poller stops after the final value");
    assert_eq!(
        manager.stats().subscribers,
        1,
        "the stream stays open after the stop"
    );

    let mut late = SseClient::connect(&server.url("/sse/build")).await;
    let last = late.event().await;
    assert_eq!(
        (last.data.as_str(), last.id.as_str()),
        ("3", seen[2].id.as_str())
    );
    assert_eq!(
        BUILD_STEP.load(Ordering::SeqCst),
        3,
        "no poll after the stop"
    );
    assert_eq!(
        manager.stats().pollers_started,
        1,
        "no poller restarts while the topic is alive"
    );
}
