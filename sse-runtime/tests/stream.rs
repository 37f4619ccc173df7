//! The response body: SSE headers, a `retry:` hint first, events as they come, and the
//! heartbeat `:\n\n` after a heartbeat interval of silence.

mod common;

use std::time::Duration;

use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::BodyExt;
use sse_runtime::{Manager, SseStream};
use tokio::time::Instant;

const HEARTBEAT: Duration = Duration::from_secs(30);

async fn next_frame(body: &mut axum::body::Body) -> Option<Bytes> {
    let frame = tokio::time::timeout(Duration::from_secs(120), body.frame())
        .await
        .expect("a frame in time")?;
    Some(frame.expect("infallible").into_data().expect("data frame"))
}

fn open(manager: &Manager, topic: &str) -> axum::response::Response {
    SseStream::new(manager.subscribe(topic).unwrap(), manager.heartbeat()).into_response()
}

#[tokio::test]
async fn the_response_carries_the_sse_headers() {
    let manager = Manager::new();
    let response = open(&manager, "t");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
}

async fn retry_hint(manager: &Manager) -> u64 {
    let mut body = open(manager, "t").into_body();
    let first = next_frame(&mut body).await.unwrap();
    let text = std::str::from_utf8(&first).unwrap();
    // The retry hint's block; the stream's position follows in a block of its own.
    text.strip_prefix("retry: ")
        .and_then(|rest| rest.split_once("\n\n"))
        .unwrap()
        .0
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_stream_opens_with_a_jittered_retry_hint() {
    let manager = Manager::new();
    let mut hints = std::collections::HashSet::new();
    for _ in 0..20 {
        let millis = retry_hint(&manager).await;
        assert!(
            (2000..3000).contains(&millis),
            "2 s plus up to 1 s of jitter: {millis}"
        );
        hints.insert(millis);
    }
    assert!(hints.len() > 1, "jittered: {hints:?}");
}

#[tokio::test]
async fn the_retry_hint_is_configurable() {
    let manager = Manager::builder()
        .retry(Duration::from_secs(10))
        .build()
        .unwrap();
    let millis = retry_hint(&manager).await;
    assert!((10_000..15_000).contains(&millis), "{millis}");
    assert!(Manager::builder().retry(Duration::ZERO).build().is_err());
}

#[tokio::test(start_paused = true)]
async fn an_idle_stream_gets_a_heartbeat_every_interval() {
    let manager = Manager::new();
    let mut body = open(&manager, "t").into_body();
    next_frame(&mut body).await; // retry hint
    let start = Instant::now();
    for n in 1..=3 {
        assert_eq!(
            next_frame(&mut body).await.unwrap(),
            Bytes::from_static(b":\n\n")
        );
        assert_eq!(start.elapsed(), HEARTBEAT * n);
    }
}

#[tokio::test(start_paused = true)]
async fn events_postpone_the_heartbeat() {
    let manager = Manager::new();
    let mut body = open(&manager, "t").into_body();
    next_frame(&mut body).await;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    manager.publish("t", &"event");
    let event = next_frame(&mut body).await.unwrap();
    assert!(event.ends_with(b"data: \"event\"\n\n"));
    assert_eq!(
        next_frame(&mut body).await.unwrap(),
        Bytes::from_static(b":\n\n")
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(50),
        "30 s after the event, not after connect"
    );
}

#[tokio::test(start_paused = true)]
async fn a_configured_heartbeat_interval_is_used() {
    let manager = Manager::builder()
        .heartbeat(Duration::from_millis(250))
        .build()
        .unwrap();
    let mut body = open(&manager, "t").into_body();
    next_frame(&mut body).await;
    let start = Instant::now();
    assert_eq!(
        next_frame(&mut body).await.unwrap(),
        Bytes::from_static(b":\n\n")
    );
    assert_eq!(start.elapsed(), Duration::from_millis(250));
}

#[tokio::test]
async fn a_behind_subscriber_gets_its_queued_events_in_one_chunk() {
    let manager = Manager::new();
    let mut body = open(&manager, "t").into_body();
    next_frame(&mut body).await;
    for i in 0..50 {
        manager.publish("t", &i);
    }
    let chunk = next_frame(&mut body).await.unwrap();
    let events = common::parse(&chunk);
    assert_eq!(events.len(), 50, "coalesced into one write");
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.data == i.to_string())
    );
}

#[tokio::test]
async fn shutdown_ends_the_body_with_when_to_come_back() {
    let manager = Manager::new();
    let mut body = open(&manager, "t").into_body();
    next_frame(&mut body).await;
    manager.shutdown();
    let last = next_frame(&mut body).await.expect("the last frame");
    assert!(last.starts_with(b"retry: "), "{last:?}");
    assert_eq!(next_frame(&mut body).await, None);
    assert!(http_body::Body::is_end_stream(&body));
}

/// The `retry:` a shut-down stream ends with, in milliseconds.
async fn comeback(body: &mut axum::body::Body) -> u64 {
    let last = next_frame(body).await.expect("the last frame");
    let text = std::str::from_utf8(&last).unwrap();
    let millis = text
        .strip_prefix("retry: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("a retry frame: {text:?}"));
    assert_eq!(next_frame(body).await, None, "then the end");
    millis.parse().unwrap()
}

/// Spec (issue 31, part 2): a restart must not bring every browser back in the same instant.
/// 1 000 streams ended by one shutdown close with a `retry:` of the retry hint (2 s) plus a
/// random part of the shutdown window (10 s by default): the browsers come back spread over
/// the window, every second of it, none more than a few times its share.
#[tokio::test]
async fn a_thousand_streams_shut_down_at_once_come_back_spread_over_the_window() {
    let manager = Manager::builder()
        .max_streams_per_client(10_000)
        .build()
        .unwrap();
    let mut bodies = Vec::new();
    for n in 0..1000 {
        let mut body = open(&manager, &format!("t{}", n % 10)).into_body();
        next_frame(&mut body).await;
        bodies.push(body);
    }
    manager.shutdown();
    let mut seconds = [0usize; 10];
    for body in &mut bodies {
        let millis = comeback(body).await;
        assert!((2000..12_000).contains(&millis), "{millis}");
        seconds[((millis - 2000) / 1000) as usize] += 1;
    }
    eprintln!("returns per second of the window, from 2 s after the shutdown: {seconds:?}");
    assert!(
        seconds.iter().all(|&n| (40..=200).contains(&n)),
        "spread over every second (100 each on average): {seconds:?}"
    );

    // A window of zero: the retry hint alone.
    let manager = Manager::builder()
        .shutdown_spread(Duration::ZERO)
        .retry(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut body = open(&manager, "t").into_body();
    next_frame(&mut body).await;
    manager.shutdown();
    assert_eq!(comeback(&mut body).await, 500);
}

#[tokio::test]
async fn dropping_the_body_unsubscribes() {
    let manager = Manager::new();
    let body = open(&manager, "t").into_body();
    assert_eq!(manager.stats().subscribers, 1);
    drop(body);
    assert_eq!(manager.stats().subscribers, 0);
    assert_eq!(manager.stats().topics, 0);
}

#[tokio::test(start_paused = true)]
async fn write_batching_holds_events_that_follow_a_write_closely_and_sends_them_together() {
    let manager = Manager::builder()
        .write_batch(Duration::from_millis(10))
        .build()
        .unwrap();
    let mut body = open(&manager, "t").into_body();
    next_frame(&mut body).await; // retry hint, written at t = 0
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    manager.publish("t", &1);
    let first = next_frame(&mut body).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "a quiet stream writes at once"
    );
    assert_eq!(common::parse(&first).len(), 1);
    manager.publish("t", &2);
    manager.publish("t", &3);
    let batch = next_frame(&mut body).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(10),
        "held until the window closed"
    );
    let values: Vec<String> = common::parse(&batch).into_iter().map(|e| e.data).collect();
    assert_eq!(values, ["2", "3"], "in one write");
}

#[tokio::test(start_paused = true)]
async fn without_write_batching_events_go_out_at_once() {
    let manager = Manager::new();
    let mut body = open(&manager, "t").into_body();
    next_frame(&mut body).await;
    let start = Instant::now();
    manager.publish("t", &1);
    next_frame(&mut body).await.unwrap();
    manager.publish("t", &2);
    next_frame(&mut body).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}
