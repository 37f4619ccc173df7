//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use sse_runtime::subscription::Subscription;

/// One parsed SSE event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }

    pub fn sequence(&self) -> u64 {
        self.id
            .as_deref()
            .expect("event has an id")
            .parse::<sse_runtime::event_id::EventId>()
            .expect("id parses")
            .sequence()
    }
}

/// Parses whole frames (as the runtime emits them). Comments and `retry:` are skipped.
pub fn parse(chunk: &[u8]) -> Vec<Event> {
    let text = std::str::from_utf8(chunk).expect("frames are UTF-8");
    assert!(
        text.ends_with("\n\n"),
        "chunk ends on a frame boundary: {text:?}"
    );
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let mut event = Event {
            id: None,
            event: None,
            data: String::new(),
        };
        let mut data_lines = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                event.id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("event: ") {
                event.event = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data_lines.push(v);
            }
        }
        if !data_lines.is_empty() {
            event.data = data_lines.join("\n");
            events.push(event);
        }
    }
    events
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
