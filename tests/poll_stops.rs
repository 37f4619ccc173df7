//! Spec (issue 32, part 2): what subscribers see after a poller's `stop_when` held. The poller
//! publishes the value that met the condition and stops; streams stay open (heartbeats only)
//! for as long as their clients keep them; a client that subscribes while the topic is still
//! alive gets that final value at once, under its id (a polled topic detects changes, so a
//! newcomer starts on its newest event); a new poller starts only once every subscriber has
//! left (and the linger has passed).

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
