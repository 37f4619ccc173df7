//! One subscriber's membership of a topic, and the options it joins with.
//!
//! A [`Subscription`] yields the topic's encoded frames and says how it joined
//! ([`Joined`]); turning that into a response (the `retry:` hint, a `reset` event) is the
//! stream's business ([`SseStream`](crate::SseStream)).
//!
//! ```
//! use sse_runtime::Manager;
//! use sse_runtime::subscription::{Joined, SubscribeOptions};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let manager = Manager::new();
//! let mut sub = manager.subscribe_with("t", SubscribeOptions::new().history(16)).unwrap();
//! assert_eq!(sub.joined(), Some(Joined::Live));
//! manager.publish("t", &1);
//! assert!(sub.recv().await.unwrap().ends_with(b"data: 1\n\n"));
//! # }
//! ```

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use crate::config::{HistoryOverrides, StreamSettings};
use crate::event_id::EventId;
use crate::hub::{Hub, Join};
use crate::log::Chunk;
use crate::producer::PollingService;
use crate::topic::{Membership, Read, Start, Subscriber, Topic};

pub use crate::refusal::{RefusalAnswer, SubscribeError};
pub use crate::topic::{Joined, ResetReason};

/// Options for [`Manager::subscribe_with`](crate::Manager::subscribe_with).
///
/// The history settings apply only when this subscription creates the topic's broadcaster;
/// otherwise the broadcaster already has its own.
///
/// ```
/// use sse_runtime::subscription::SubscribeOptions;
///
/// let options = SubscribeOptions::new()
///     .change_detection(true)
///     .last_event_id("18c2f0a9d3e00-41");
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct SubscribeOptions {
    polling: Option<Arc<dyn PollingService>>,
    change_detection: Option<bool>,
    history: HistoryOverrides,
    last_event_id: Option<Result<EventId, ()>>,
    client: Option<IpAddr>,
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

    /// Whether a new broadcaster skips a payload identical to the previous one. Its events are
    /// then states: a subscriber that does not resume starts on the newest one, so it gets the
    /// current state at once. Default: on for polled topics, off otherwise. Only the
    /// subscription that creates the broadcaster decides.
    pub fn change_detection(mut self, on: bool) -> Self {
        self.change_detection = Some(on);
        self
    }

    /// [`ManagerBuilder::history`](crate::manager::ManagerBuilder::history), for a new
    /// broadcaster only.
    pub fn history(mut self, events: usize) -> Self {
        self.history.events = Some(events);
        self
    }

    /// [`ManagerBuilder::history_bytes`](crate::manager::ManagerBuilder::history_bytes), for a
    /// new broadcaster only.
    pub fn history_bytes(mut self, bytes: usize) -> Self {
        self.history.bytes = Some(bytes);
        self
    }

    /// [`ManagerBuilder::retention`](crate::manager::ManagerBuilder::retention), for a new
    /// broadcaster only.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.history.retention = Some(retention);
        self
    }

    /// Resume after this event id (the `Last-Event-ID` a reconnecting client sends). A
    /// malformed id is treated like one the topic no longer has: the subscription joins with
    /// [`Joined::Reset`], then goes on live.
    pub fn last_event_id(mut self, id: &str) -> Self {
        self.last_event_id = Some(id.parse().map_err(drop));
        self
    }

    /// Resume after this event id.
    pub fn resume_after(mut self, id: EventId) -> Self {
        self.last_event_id = Some(Ok(id));
        self
    }

    /// The client's address, counted against
    /// [`max_streams_per_client`](crate::manager::ManagerBuilder::max_streams_per_client)
    /// while the subscription lasts. [`SseHandler`](crate::SseHandler) sets it from the
    /// request's `ConnectInfo<SocketAddr>`; behind a reverse proxy, give the address the
    /// proxy vouches for (its `X-Forwarded-For`, if only the proxy can reach the server).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::net::{IpAddr, Ipv4Addr};
    /// use sse_runtime::{Manager, subscription::{SubscribeError, SubscribeOptions}};
    ///
    /// let manager = Manager::builder().max_streams_per_client(1).build().unwrap();
    /// let alice = || SubscribeOptions::new().client(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    /// let _open = manager.subscribe_with("a", alice()).unwrap();
    /// let refused = manager.subscribe_with("b", alice()).unwrap_err();
    /// assert_eq!(refused, SubscribeError::TooManyFromClient);
    /// assert_eq!(manager.stats().refused.per_client, 1);
    /// # }
    /// ```
    pub fn client(mut self, address: IpAddr) -> Self {
        self.client = Some(address);
        self
    }

    /// What the registry needs to join the topic.
    pub(crate) fn into_join(self) -> Join {
        Join {
            start: match self.last_event_id {
                None => Start::Live,
                Some(Ok(id)) => Start::After(id),
                Some(Err(())) => Start::Malformed,
            },
            change_detection: self.change_detection.unwrap_or(self.polling.is_some()),
            history: self.history,
            poller: self.polling,
            client: self.client,
        }
    }
}

impl fmt::Debug for SubscribeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscribeOptions")
            .field("polling", &self.polling.is_some())
            .field("change_detection", &self.change_detection)
            .field("history", &self.history)
            .field("last_event_id", &self.last_event_id)
            .field("client", &self.client)
            .finish()
    }
}

/// Why a subscription ended.
///
/// ```
/// use sse_runtime::{Manager, subscription::EndReason};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let manager = Manager::new();
/// let mut sub = manager.subscribe("t").unwrap();
/// manager.shutdown();
/// assert_eq!(sub.recv().await, None);
/// assert_eq!(sub.end_reason(), Some(EndReason::ShutDown));
/// # }
/// ```
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
    /// The topic's producer finished and ended its streams (a poller whose stop condition
    /// held, with [`Polling::end_on_stop`](crate::polling::Polling::end_on_stop)), after this
    /// subscription had read everything.
    Finished,
}

/// Membership of one topic: the frames published to it, from the moment of subscribing (or
/// from the resume point).
///
/// Dropping it unsubscribes; the last subscriber out removes the topic's broadcaster at once.
/// [`SseStream`](crate::SseStream) turns it into an HTTP response body.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let manager = sse_runtime::Manager::new();
/// let sub = manager.subscribe("alarms").unwrap();
/// assert_eq!((sub.topic(), manager.subscriber_count("alarms")), ("alarms", 1));
/// drop(sub);
/// assert_eq!(manager.subscriber_count("alarms"), 0);
/// # }
/// ```
pub struct Subscription {
    hub: Arc<Hub>,
    topic: Arc<Topic>,
    subscriber: Arc<Subscriber>,
    key: usize,
    /// The address counted against the per-client cap, given back on leaving.
    client: Option<IpAddr>,
    /// `None` until the topic has synced with its broker (never, in-process).
    joined: Option<Joined>,
    exempt_until: u64,
    ended: Option<EndReason>,
}

impl Subscription {
    /// Subscribes to `name` on `hub`.
    pub(crate) fn join(
        hub: &Arc<Hub>,
        name: &str,
        options: SubscribeOptions,
    ) -> Result<Self, SubscribeError> {
        let join = options.into_join();
        let client = join.client;
        let (topic, membership) = hub.join(name, join)?;
        let Membership {
            key,
            subscriber,
            joined,
            exempt_until,
            fetch: _, // asked for by the hub
        } = membership;
        Ok(Self {
            hub: hub.clone(),
            topic,
            subscriber,
            key,
            client,
            joined,
            exempt_until,
            ended: None,
        })
    }

    /// The topic subscribed to.
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    /// How this subscription joined its topic: live, resumed after the client's last event id,
    /// or reset because that id could not be resumed from.
    ///
    /// `None` while a manager with a backplane waits for the broker's view of the topic (the ids,
    /// the history): nothing is sent before, and [`ready`](Self::ready) waits for it. In a single
    /// process it is always known when the subscription is made.
    pub fn joined(&self) -> Option<Joined> {
        self.joined
    }

    /// Waits until [`joined`](Self::joined) is known and returns it (at once in-process). Ends
    /// early, with `None`, if the subscription ends first.
    ///
    /// ```
    /// use sse_runtime::Manager;
    /// use sse_runtime::subscription::Joined;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let manager = Manager::new();
    /// let mut sub = manager.subscribe("t").unwrap();
    /// assert_eq!(sub.ready().await, Some(Joined::Live));
    /// # }
    /// ```
    pub async fn ready(&mut self) -> Option<Joined> {
        std::future::poll_fn(|cx| self.poll_joined(cx)).await
    }

    /// Polls for [`joined`](Self::joined): ready once known (or with `None` once ended).
    pub(crate) fn poll_joined(&mut self, cx: &Context<'_>) -> Poll<Option<Joined>> {
        if self.joined.is_none() && self.ended.is_none() {
            match self.topic.resolve(&self.subscriber, self.key, cx.waker()) {
                Some((joined, exempt_until)) => {
                    self.joined = Some(joined);
                    self.exempt_until = exempt_until;
                }
                None if self.topic.is_closed() || self.hub.is_shut_down() => {
                    return Poll::Ready(None);
                }
                None => return Poll::Pending,
            }
        }
        Poll::Ready(self.joined)
    }

    /// The id of the last event before the next one this subscription yields: the last one
    /// it has handed out, or, before any, the one before the first it will hand out (the one
    /// it resumed after; `<epoch>-0` before the topic's first event). A client that has
    /// received everything handed out resumes from it without a gap. `None` while
    /// [`joined`](Self::joined) is not known, or once the subscription fell out of the log.
    pub(crate) fn position(&self) -> Option<EventId> {
        self.topic.position(&self.subscriber)
    }

    /// The client address it is counted by, if it was given one.
    pub(crate) fn client(&self) -> Option<IpAddr> {
        self.client
    }

    /// How the manager wants this subscription streamed.
    pub(crate) fn stream_settings(&self) -> StreamSettings {
        self.hub.config.stream
    }

    /// Whether frames are waiting to be read (registers the waker either way).
    pub(crate) fn has_pending(&self, cx: &Context<'_>) -> bool {
        self.ended.is_none() && self.topic.has_pending(&self.subscriber, cx.waker())
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
        self.poll_chunk(cx)
            .map(|chunk| chunk.map(|chunk| chunk.bytes))
    }

    /// Like [`poll_recv`](Self::poll_recv), with how many events the chunk holds and when the
    /// first was published.
    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        self.poll_chunk_to(cx, None)
    }

    /// Like [`poll_chunk`](Self::poll_chunk); with `append_to`, the frames are appended to
    /// that buffer and the chunk's bytes are empty (no allocation, however many it reads).
    pub(crate) fn poll_chunk_to(
        &mut self,
        cx: &mut Context<'_>,
        append_to: Option<&mut Vec<u8>>,
    ) -> Poll<Option<Chunk>> {
        if self.ended.is_some() {
            return Poll::Ready(None);
        }
        if self.hub.is_closing() {
            return self.end(EndReason::ShutDown);
        }
        if self.joined.is_none() && self.poll_joined(cx).is_pending() {
            return Poll::Pending;
        }
        match self
            .topic
            .read(&self.subscriber, self.exempt_until, cx.waker(), append_to)
        {
            Read::Frames(chunk) => Poll::Ready(Some(chunk)),
            Read::Empty => Poll::Pending,
            Read::Lagged => {
                self.hub.counters.lagged.fetch_add(1, Ordering::Relaxed);
                tracing::info!(topic = %self.topic.name, "subscriber fell behind; disconnecting it so it resumes");
                self.end(EndReason::Lagged)
            }
            Read::Closed => self.end(EndReason::Closed),
            Read::Finished => self.end(EndReason::Finished),
        }
    }

    /// Leaves the topic now.
    pub fn unsubscribe(mut self) {
        let _ = self.end::<()>(EndReason::Unsubscribed);
    }

    fn end<T>(&mut self, reason: EndReason) -> Poll<Option<T>> {
        if self.ended.is_none() {
            self.ended = Some(reason);
            self.hub.leave(&self.topic, self.key, self.client);
        }
        Poll::Ready(None)
    }
}

/// The manager of a subscription, as a server that streams it keeps it: so that its graceful
/// shutdown can end the streams it serves (see
/// [`serve_with_shutdown`](crate::serve_with_shutdown)). It does not keep the manager alive.
#[derive(Clone)]
pub(crate) struct ManagerHandle(std::sync::Weak<Hub>);

impl ManagerHandle {
    /// [`Manager::shutdown`](crate::Manager::shutdown), if the manager is still there.
    pub(crate) fn shutdown(&self) {
        if let Some(hub) = self.0.upgrade() {
            hub.shut_down();
        }
    }

    /// Whether both are handles of one manager.
    pub(crate) fn same(&self, other: &Self) -> bool {
        std::sync::Weak::ptr_eq(&self.0, &other.0)
    }

    /// Whether its manager is gone or shut down.
    pub(crate) fn is_done(&self) -> bool {
        self.0.upgrade().is_none_or(|hub| hub.is_shut_down())
    }
}

impl Subscription {
    /// A handle of its manager, for a server's graceful shutdown.
    pub(crate) fn manager_handle(&self) -> ManagerHandle {
        ManagerHandle(Arc::downgrade(&self.hub))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.end::<()>(EndReason::Unsubscribed);
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic.name)
            .field("joined", &self.joined)
            .field("ended", &self.ended)
            .finish()
    }
}
