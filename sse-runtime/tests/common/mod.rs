//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use sse_runtime::subscription::Subscription;

/// One parsed SSE event: the workspace's one frame parser (`test-support/frames`).
pub use sse_test_frames::Frame as Event;

/// Parses whole frames (as the runtime emits them). Comments and `retry:` are skipped.
pub fn parse(chunk: &[u8]) -> Vec<Event> {
    sse_test_frames::whole_frames(chunk)
}

/// The next chunk of the subscription, failing the test after 10 s.
pub async fn next_chunk(sub: &mut Subscription) -> Option<Bytes> {
    tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("no chunk within 10 s")
}

/// The next events of the subscription (one chunk's worth).
pub async fn next_events(sub: &mut Subscription) -> Vec<Event> {
    parse(&next_chunk(sub).await.expect("subscription still open"))
}

/// Exactly `n` events, across chunks.
pub async fn take_events(sub: &mut Subscription, n: usize) -> Vec<Event> {
    let mut events = Vec::new();
    while events.len() < n {
        events.extend(next_events(sub).await);
    }
    assert_eq!(events.len(), n, "no more than {n} events");
    events
}

/// Asserts that nothing is ready to be read right now (after letting other tasks run).
pub async fn assert_nothing_pending(sub: &mut Subscription) {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let polled = futures_util::poll!(std::pin::pin!(sub.recv()));
    assert!(polled.is_pending(), "unexpected chunk: {polled:?}");
}
