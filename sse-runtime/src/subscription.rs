//! One subscriber's membership of a topic, and the options it joins with.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::Serialize;

use crate::config::Limits;
use crate::event_id::EventId;
use crate::frame;
use crate::manager::Inner;
use crate::polling::PollingService;
use crate::topic::{Joined, Read, ResetReason, Start, Subscriber, Topic};

/// Options for [`Manager::subscribe_with`](crate::Manager::subscribe_with).
///
/// ```
/// use sse_runtime::SubscribeOptions;
///
/// let options = SubscribeOptions::new()
///     .change_detection(true)
///     .last_event_id("18c2f0a9d3e00-41");
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct SubscribeOptions {
    pub(crate) polling: Option<Arc<dyn PollingService>>,
    change_detection: Option<bool>,
    history: Option<usize>,
    history_bytes: Option<usize>,
    retention: Option<std::time::Duration>,
    last_event_id: Option<Result<EventId, ()>>,
}

impl SubscribeOptions {
    /// Defaults: no poller, change detection off, start live.
    pub fn new() -> Self {
        Self::default()
    }

    /// A poller to bind to the topic if this subscription creates its broadcaster. It is
    /// started then, and stopped when the last subscriber leaves. Turns change detection on
    /// unless [`change_detection`](Self::change_detection) says otherwise.
    pub fn polling(self, polling: impl PollingService) -> Self {
        self.shared_polling(Arc::new(polling))
    }

    /// Like [`polling`](Self::polling), for a poller that is already shared.
    pub fn shared_polling(mut self, polling: Arc<dyn PollingService>) -> Self {
        self.polling = Some(polling);
        self
    }

    /// Whether a new broadcaster skips a payload identical to the previous one (subscribers
    /// that have received nothing yet get it regardless). Default: on for polled topics, off
    /// otherwise. Only the subscription that creates the broadcaster decides.
    pub fn change_detection(mut self, on: bool) -> Self {
        self.change_detection = Some(on);
        self
    }

    /// How many events a new broadcaster keeps for resuming clients, instead of the manager's
    /// setting. Only the subscription that creates the broadcaster decides.
    pub fn history(mut self, events: usize) -> Self {
        self.history = Some(events);
        self
    }

    /// Upper bound on the bytes of events a new broadcaster keeps for resuming clients, instead
    /// of the manager's setting. Only the subscription that creates the broadcaster decides.
    pub fn history_bytes(mut self, bytes: usize) -> Self {
        self.history_bytes = Some(bytes);
        self
    }

    /// How long a new broadcaster's history outlives its last subscriber, instead of the
    /// manager's setting. Only the subscription that creates the broadcaster decides.
    pub fn retention(mut self, retention: std::time::Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Resume after this event id (the `Last-Event-ID` a reconnecting client sends). A
    /// malformed id is treated like one the topic no longer has: the stream starts with a
    /// `reset` event, then goes on live.
    pub fn last_event_id(mut self, id: &str) -> Self {
        self.last_event_id = Some(id.parse().map_err(drop));
        self
    }

    /// Resume after this event id.
    pub fn resume_after(mut self, id: EventId) -> Self {
        self.last_event_id = Some(Ok(id));
        self
    }

    pub(crate) fn change_detection_or_default(&self) -> bool {
        self.change_detection.unwrap_or(self.polling.is_some())
    }

    pub(crate) fn limits(&self, mut limits: Limits) -> Limits {
        if let Some(events) = self.history {
            limits.history_events = events;
        }
        if let Some(bytes) = self.history_bytes {
            limits.history_bytes = bytes;
        }
        if let Some(retention) = self.retention {
            limits.retention = retention;
        }
        limits
    }

    pub(crate) fn start(&self) -> Start {
        match self.last_event_id {
            None => Start::Live,
            Some(Ok(id)) => Start::After(id),
            Some(Err(())) => Start::Malformed,
        }
    }
}

impl fmt::Debug for SubscribeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscribeOptions")
            .field("polling", &self.polling.is_some())
            .field("change_detection", &self.change_detection)
            .field("history", &self.history)
            .field("history_bytes", &self.history_bytes)
            .field("retention", &self.retention)
            .field("last_event_id", &self.last_event_id)
            .finish()
    }
}

/// Why a subscription could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The manager has been shut down.
    ShutDown,
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShutDown => f.write_str("the SSE manager has been shut down"),
        }
    }
}

impl std::error::Error for SubscribeError {}

/// Why a subscription ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// The manager was shut down.
    ShutDown,
    /// The subscriber fell further behind than the lag limit allows; its client should
    /// reconnect with its last event id.
    Lagged,
    /// The topic was closed.
    Closed,
    /// [`Subscription::unsubscribe`] was called.
    Unsubscribed,
}

/// Membership of one topic: the frames published to it, from the moment of subscribing (or
/// from the resume point).
///
/// Dropping it unsubscribes; the last subscriber out removes the topic's broadcaster at once.
/// [`SseStream`](crate::SseStream) turns it into an HTTP response body.
pub struct Subscription {
    manager: Arc<Inner>,
    topic: Arc<Topic>,
    subscriber: Arc<Subscriber>,
    key: usize,
    joined: Joined,
    ended: Option<EndReason>,
}

impl Subscription {
    pub(crate) fn new(
        manager: Arc<Inner>,
        topic: Arc<Topic>,
        key: usize,
        subscriber: Arc<Subscriber>,
        joined: Joined,
    ) -> Self {
        Self {
            manager,
            topic,
            subscriber,
            key,
            joined,
            ended: None,
        }
    }

    /// The topic subscribed to.
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    /// The manager's write-batching window.
    pub(crate) fn write_batch(&self) -> std::time::Duration {
        self.manager.config.write_batch
    }

    /// Whether frames are waiting to be read (registers the waker either way).
    pub(crate) fn has_pending(&self, cx: &Context<'_>) -> bool {
        self.ended.is_none() && self.topic.has_pending(&self.subscriber, cx.waker())
    }

    /// The manager's `retry:` hint.
    pub(crate) fn retry_hint(&self) -> std::time::Duration {
        self.manager.config.retry
    }

    /// Why the subscription ended, once it has.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.ended
    }

    /// The next chunk of encoded frames: one or more whole events, coalesced when the subscriber
    /// is behind. `None` once the subscription has ended (see [`end_reason`](Self::end_reason)).
    pub async fn recv(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polling form of [`recv`](Self::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.ended.is_some() {
            return Poll::Ready(None);
        }
        if self.manager.config.token.is_cancelled() {
            return self.end(EndReason::ShutDown);
        }
        let exempt_until = match self.joined {
            Joined::Resumed { head } => head,
            _ => 0,
        };
        match self.topic.read(&self.subscriber, exempt_until, cx.waker()) {
            Read::Frames(chunk) => Poll::Ready(Some(chunk)),
            Read::Empty => Poll::Pending,
            Read::Lagged => {
                self.manager.counters.lagged.fetch_add(1, Ordering::Relaxed);
                tracing::info!(topic = %self.topic.name, "subscriber fell behind; disconnecting it so it resumes");
                self.end(EndReason::Lagged)
            }
            Read::Closed => self.end(EndReason::Closed),
        }
    }

    /// Leaves the topic now.
    pub fn unsubscribe(mut self) {
        let _ = self.end(EndReason::Unsubscribed);
    }

    /// What the stream sends before any event: a `reset` event when the client's last event id
    /// could not be resumed from.
    pub(crate) fn preamble(&self) -> Option<Bytes> {
        let Joined::Reset { reason, next } = self.joined else {
            return None;
        };
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Reset<'a> {
            reason: &'a str,
            continue_from: String,
        }
        let reason = match reason {
            ResetReason::Malformed => "malformed-last-event-id",
            ResetReason::UnknownEpoch => "unknown-epoch",
            ResetReason::HistoryExceeded => "history-exceeded",
            ResetReason::FromTheFuture => "unknown-sequence",
        };
        let data = serde_json::to_vec(&Reset {
            reason,
            continue_from: next.to_string(),
        })
        .expect("plain struct serializes");
        // The reset carries the id just before the live stream, so a reconnect after it resumes
        // from here instead of being reset again.
        let here = EventId::new(next.epoch(), next.sequence() - 1);
        Some(frame::event(Some(&here.to_string()), Some("reset"), &data))
    }

    fn end(&mut self, reason: EndReason) -> Poll<Option<Bytes>> {
        if self.ended.is_none() {
            self.ended = Some(reason);
            self.manager.unsubscribe(&self.topic, self.key);
        }
        Poll::Ready(None)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.ended.is_none() {
            self.ended = Some(EndReason::Unsubscribed);
            self.manager.unsubscribe(&self.topic, self.key);
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic.name)
            .field("ended", &self.ended)
            .finish()
    }
}
