//! Spec (issue 32, part 2): what subscribers see after a poller's `stop_when` held. The poller
//! publishes the value that met the condition and stops; streams stay open (heartbeats only)
//! for as long as their clients keep them; a client that subscribes while the topic is still
//! alive gets that final value at once, under its id (a polled topic detects changes, so a
//! newcomer starts on its newest event); a new poller starts only once every subscriber has
//! left (and the linger has passed).
//!
//! And what they are told: `event = "..."` names the values' events, `error_event = "..."` the
//! failed polls' (default `poll-error`).
//!
//! With `end_on_stop = true`, the stop also ends the streams: each gets the final value, then
//! an `end` event, then its end (in a multi-topic stream, `<topic>#end`, and the other topics go
//! on); a client that joins while the topic is still open gets the final value and `end`.
//! `Manager::restart_poller` makes a stopped poller of an open topic poll again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::routing::get;
use sse_integration_tests::{SseClient, TestServer};
use sse_runtime::multi::MultiHandler;
use sse_runtime::{Manager, PollError, sse_poll, sse_topic};

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

static DEPLOY_STEP: AtomicU64 = AtomicU64::new(0);

/// A deploy that finishes at step 2 and ends its streams.
#[sse_poll(
    path = "/sse/deploy",
    interval = "10ms",
    stop_when = |step: &u64| *step >= 2,
    end_on_stop = true
)]
async fn deploy() -> Result<u64, PollError> {
    Ok(DEPLOY_STEP.fetch_add(1, Ordering::SeqCst) + 1)
}

static MIGRATION_STEP: AtomicU64 = AtomicU64::new(0);

/// The same, for the multi-topic stream.
#[sse_poll(
    path = "/sse/migration",
    interval = "10ms",
    stop_when = |step: &u64| *step >= 2,
    end_on_stop = true
)]
async fn migration() -> Result<u64, PollError> {
    Ok(MIGRATION_STEP.fetch_add(1, Ordering::SeqCst) + 1)
}

#[sse_topic("notes", path = "/sse/notes")]
#[derive(serde::Serialize)]
struct Note {
    text: &'static str,
}

/// A manager whose polled topics linger long enough for a late joiner to find them open.
async fn lingering() -> (Manager, TestServer) {
    let manager = Manager::builder()
        .poller_linger(Duration::from_secs(60))
        .build()
        .unwrap();
    let routes = sse_runtime::routes::router_with(&manager);
    let app = routes.clone().route("/sse", get(MultiHandler::new(routes)));
    let server = TestServer::start_direct(app, Duration::from_secs(30)).await;
    (manager, server)
}

fn end_payload() -> serde_json::Value {
    serde_json::json!({"reason": "finished"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_on_stop_ends_every_stream_after_the_final_value_and_a_late_joiner_gets_both() {
    let (manager, server) = lingering().await;
    let mut first = SseClient::connect(&server.url("/sse/deploy")).await;
    let values: Vec<String> = [first.event().await, first.event().await]
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(values, ["1", "2"]);
    let end = first.event().await;
    assert_eq!(end.event, "end");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&end.data).unwrap(),
        end_payload()
    );
    assert!(first.next().await.is_none(), "the stream ends after `end`");

    // Still open (lingering): the final value, then `end`, and no new poll.
    let mut late = SseClient::connect(&server.url("/sse/deploy")).await;
    let last = late.event().await;
    assert_eq!((last.event.as_str(), last.data.as_str()), ("message", "2"));
    assert_eq!(late.event().await.event, "end");
    assert!(late.next().await.is_none());
    assert_eq!(
        DEPLOY_STEP.load(Ordering::SeqCst),
        2,
        "no poll after the stop"
    );
    assert_eq!(manager.stats().pollers_started, 1);
    let refused = manager.stats().refused;
    assert_eq!(refused, Default::default(), "an end is no refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_multi_topic_stream_only_the_finished_topic_ends() {
    let (manager, server) = lingering().await;
    let mut client =
        SseClient::connect(&server.url("/sse?topic=/sse/migration&topic=/sse/notes")).await;
    let mut seen = Vec::new();
    loop {
        let event = client.event().await;
        let done = event.event == "/sse/migration#end";
        seen.push((event.event, event.data));
        if done {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            ("/sse/migration".to_owned(), "1".to_owned()),
            ("/sse/migration".to_owned(), "2".to_owned()),
            ("/sse/migration#end".to_owned(), end_payload().to_string()),
        ]
    );
    // The other topic goes on, on the same stream.
    publish_note_to(&manager, &Note { text: "still here" });
    let note = client.event().await;
    assert_eq!(note.event, "/sse/notes");
    assert_eq!(note.data, r#"{"text":"still here"}"#);
}

static REBUILD_STEP: AtomicU64 = AtomicU64::new(0);
static REBUILD_STOPPED: tokio::sync::Notify = tokio::sync::Notify::const_new();

fn rebuild_stopped() {
    REBUILD_STOPPED.notify_one();
}

/// Each run polls until its step reaches 2 (a second run stops at once, at step 3).
#[sse_poll(
    path = "/sse/rebuild",
    interval = "10ms",
    stop_when = |step: &u64| *step >= 2,
    on_stop = rebuild_stopped
)]
async fn rebuild() -> Result<u64, PollError> {
    Ok(REBUILD_STEP.fetch_add(1, Ordering::SeqCst) + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_poller_of_a_subscribed_topic_polls_again_when_restarted() {
    let (manager, server) = lingering().await;
    let mut client = SseClient::connect(&server.url("/sse/rebuild")).await;
    assert_eq!(client.event().await.data, "1");
    assert_eq!(client.event().await.data, "2");
    tokio::time::timeout(sse_integration_tests::PATIENCE, REBUILD_STOPPED.notified())
        .await
        .expect("the first run stops");
    assert!(manager.restart_poller("/sse/rebuild").await);
    assert_eq!(
        client.event().await.data,
        "3",
        "the re-run's value reaches the open stream"
    );
    assert_eq!(manager.stats().pollers_started, 2);
    assert!(!manager.restart_poller("/sse/nobody").await);
}
