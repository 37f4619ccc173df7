//! The producer contract: what produces a topic's events ([`PollingService`]), the handle it
//! publishes through ([`TopicPublisher`]), and the error a poll reports ([`PollError`]).
//!
//! A producer holds only the topic it feeds (weakly) and the counters its publishes are counted
//! in; it cannot reach the registry, so a stale producer can never revive a topic.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

use crate::config::Limits;
use crate::publish::PublishError;
use crate::remote::{Lease, Outgoing, Publish};
use crate::stats::Counters;
use crate::topic::{Published, Recorded, Topic};

/// The future returned by [`PollingService::stop`].
pub type StopFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Something that produces a topic's events while the topic has subscribers.
///
/// The manager calls [`start`](Self::start) once, when the first subscriber creates the topic's
/// broadcaster, and [`stop`](Self::stop) once, off the unsubscribe path, when the last subscriber
/// has left. [`Polling`](crate::polling::Polling) is the bundled implementation; implement this trait for other sources.
///
/// ```
/// use std::sync::Arc;
/// use sse_runtime::{polling::PollingService, polling::Publisher, polling::StopFuture, polling::TopicPublisher};
/// use parking_lot::Mutex;
///
/// /// Publishes one greeting when started.
/// struct Greeter(Mutex<Option<TopicPublisher>>);
///
/// impl PollingService for Greeter {
///     fn start(&self, publisher: TopicPublisher) {
///         publisher.publish(&"hello");
///         *self.0.lock() = Some(publisher);
///     }
///     fn stop(&self) -> StopFuture<'_> {
///         Box::pin(async move { self.0.lock().take(); })
///     }
/// }
/// # let _: Arc<dyn PollingService> = Arc::new(Greeter(Mutex::new(None)));
/// ```
pub trait PollingService: Send + Sync + 'static {
    /// Begins producing events into `publisher`. Must not block: spawn the work.
    fn start(&self, publisher: TopicPublisher);

    /// Ends production; the future completes once it has ended. May be called when `start` never
    /// was, and more than once: both must be harmless.
    fn stop(&self) -> StopFuture<'_>;
}

/// Publishes into one topic .
pub trait Publisher {
    /// Serializes `value` once and sends it to every subscriber of the topic. Fire-and-forget:
    /// returns nothing, never blocks; a value that fails to serialize is logged and skipped.
    fn publish<T: Serialize + ?Sized>(&self, value: &T);
}

/// A handle on one topic's broadcaster, given to [`PollingService::start`].
///
/// It does not keep the broadcaster alive: once the last subscriber has left, publishing through
/// it does nothing, even if a new broadcaster has since been created for the same topic (that one
/// has its own poller).
#[derive(Clone)]
pub struct TopicPublisher {
    topic: Weak<Topic>,
    counters: Arc<Counters>,
    /// With a backplane: the broker that numbers the events, and the lease they are fenced by.
    remote: Option<(Arc<dyn Publish>, Arc<Lease>)>,
}

impl TopicPublisher {
    pub(crate) fn new(topic: &Arc<Topic>, counters: &Arc<Counters>) -> Self {
        Self {
            topic: Arc::downgrade(topic),
            counters: counters.clone(),
            remote: None,
        }
    }

    /// The same publisher sending to `broker` under `lease`: once the lease is lost its
    /// publishes are refused by the broker, and [`may_poll`](Self::may_poll) says stop.
    pub(crate) fn fenced(&self, broker: Arc<dyn Publish>, lease: Arc<Lease>) -> Self {
        Self {
            remote: Some((broker, lease)),
            ..self.clone()
        }
    }

    /// Whether a poll may run now: the topic is live and, with a backplane, this instance
    /// still holds the topic's lease (so two instances never poll at once).
    pub(crate) fn may_poll(&self) -> bool {
        !self.is_closed()
            && self
                .remote
                .as_ref()
                .is_none_or(|(_, lease)| lease.is_held())
    }

    /// The topic this publisher feeds, while its broadcaster is alive.
    pub fn topic(&self) -> Option<String> {
        self.topic.upgrade().map(|topic| topic.name.to_string())
    }

    /// Whether the broadcaster is gone (its last subscriber left, or the manager shut down).
    pub fn is_closed(&self) -> bool {
        self.topic.upgrade().is_none_or(|topic| topic.is_closed())
    }

    /// Ends the topic's streams once each has sent what was published so far (its producer is
    /// done): each gets an [`end`](crate::frame::END_EVENT) event, then its end; a client that
    /// subscribes while the topic is open gets what it starts on, then the same. With a
    /// backplane, it ends this instance's streams.
    pub fn finish(&self) {
        if let Some(topic) = self.topic.upgrade()
            && topic.finish()
        {
            tracing::debug!(topic = %topic.name, "producer finished; ending its streams");
        }
    }

    /// Publishes the error payload `{"apiVersion", "statusCode", "message"}` as a
    /// [`DEFAULT_ERROR_EVENT`] event (`poll-error`), apart from the values.
    pub fn publish_error(&self, error: &PollError, api_version: &str) {
        self.publish_error_as(DEFAULT_ERROR_EVENT, error, api_version);
    }

    /// Publishes the error payload as an event named `event`.
    pub fn publish_error_as(&self, event: &str, error: &PollError, api_version: &str) {
        let payload = ErrorPayload {
            api_version,
            status_code: error.status.as_u16(),
            message: &error.message,
        };
        self.publish_as(Some(event), &payload);
    }

    /// Publishes `value` as an event named `event` (`None`: a plain `message` event, as
    /// [`Publisher::publish`] does).
    pub fn publish_as<T: Serialize + ?Sized>(&self, event: Option<&str>, value: &T) {
        // Live topic only: once it has closed, its poller is stopping and what it still
        // produces belongs to nobody (a new broadcaster for the name has its own poller).
        let Some(topic) = self.topic.upgrade() else {
            return;
        };
        let Ok(data) = encode(&self.counters, &topic.name, value) else {
            return;
        };
        match &self.remote {
            None => {
                if let Published::Recorded(recorded) = topic.publish(event, data) {
                    tally(&self.counters, &topic.name, recorded);
                }
            }
            Some((broker, lease)) => {
                let settings = topic.settings();
                let outgoing = outgoing(&self.counters, topic.name.clone(), event, &data, settings);
                if let Ok(mut message) = outgoing {
                    message.fence = Some(lease.clone());
                    // A poller runs while its topic has subscribers here.
                    message.listened = true;
                    broker.publish(message);
                }
            }
        }
    }
}

impl Publisher for TopicPublisher {
    fn publish<T: Serialize + ?Sized>(&self, value: &T) {
        self.publish_as(None, value);
    }
}

impl fmt::Debug for TopicPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicPublisher")
            .field("topic", &self.topic())
            .finish()
    }
}

/// The name of the event a failed poll is published as, unless the poller names another
/// ([`Polling::error_event`](crate::polling::Polling::error_event)): apart from the values, so a
/// client tells them apart by the event's name, not by the payload's shape. (Not `error`: that
/// is the name of `EventSource`'s own event for a lost connection.)
pub const DEFAULT_ERROR_EVENT: &str = "poll-error";

/// The payload published when a poll fails.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorPayload<'a> {
    api_version: &'a str,
    status_code: u16,
    message: &'a str,
}

/// A failed poll: an HTTP-style status and a message, published to subscribers as
/// `{"apiVersion": "v1", "statusCode": 404, "message": "..."}`.
///
/// Any `std::error::Error` converts into an internal one, so `?` works in poll functions:
/// subscribers get status 500 and the message `internal error`, and the error's own text, with
/// its `source()` chain, goes to the log only ([`detail`](Self::detail)), since a library
/// error's text may hold paths, host names or queries. To tell clients something, give a status
/// and a message with [`PollError::new`]. `String` and `anyhow::Error` are not
/// `std::error::Error`: convert them with `.map_err(PollError::internal)?`.
///
/// ```
/// use http::StatusCode;
/// use sse_runtime::PollError;
///
/// fn parse(s: &str) -> Result<u32, PollError> {
///     if s.is_empty() {
///         return Err(PollError::new(StatusCode::NOT_FOUND, "no such device"));
///     }
///     Ok(s.parse::<u32>()?) // ParseIntError -> 500
/// }
/// assert_eq!(parse("").unwrap_err().status(), StatusCode::NOT_FOUND);
/// let internal = parse("x").unwrap_err();
/// assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
/// assert_eq!(internal.message(), "internal error");
/// assert_eq!(internal.detail(), Some("invalid digit found in string"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollError {
    status: StatusCode,
    message: String,
    /// What the server keeps of an internal error: its text and its `source()` chain. Logged,
    /// never sent.
    detail: Option<String>,
}

impl PollError {
    /// What subscribers are told of an internal error: a library error's text may hold paths,
    /// host names or queries, which are the server's business.
    pub const INTERNAL_MESSAGE: &str = "internal error";

    /// An error with this status and message, both sent to every subscriber of the topic: the
    /// way to tell clients something.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            detail: None,
        }
    }

    /// An internal error: subscribers get `500` and [`INTERNAL_MESSAGE`](Self::INTERNAL_MESSAGE); `error` (with `{:#}`,
    /// which for `anyhow::Error` is its whole chain) is only logged, as [`detail`](Self::detail).
    /// For errors that are not `std::error::Error` (`String`, `anyhow::Error`), which `?` does
    /// not convert: `.map_err(PollError::internal)?`.
    ///
    /// ```
    /// use sse_runtime::PollError;
    ///
    /// let error = PollError::internal("cannot open /srv/secret/db.sqlite");
    /// assert_eq!((error.status().as_u16(), error.message()), (500, "internal error"));
    /// assert_eq!(error.detail(), Some("cannot open /srv/secret/db.sqlite"));
    /// ```
    pub fn internal(error: impl fmt::Display) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: Self::INTERNAL_MESSAGE.to_owned(),
            detail: Some(format!("{error:#}")),
        }
    }

    /// What the server keeps of an internal error (its text and source chain), if this is one.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The same error with another status.
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The status reported in the payload.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message reported in the payload.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// `?` on a library error: an internal error (see [`PollError::internal`]), whose detail is the
/// error's text followed by each of its `source()`s.
impl<E: std::error::Error + Send + Sync + 'static> From<E> for PollError {
    fn from(error: E) -> Self {
        let mut detail = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::internal(detail)
    }
}

/// The message and status, and an internal error's detail: what the log shows.
impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

/// Serializes a payload; a failure is logged, counted and skipped.
pub(crate) fn encode<T: Serialize + ?Sized>(
    counters: &Counters,
    topic: &str,
    value: &T,
) -> Result<Bytes, PublishError> {
    match serde_json::to_vec(value) {
        Ok(data) => Ok(Bytes::from(data)),
        Err(error) => {
            counters.serialize_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%topic, %error, "event payload failed to serialize; skipped");
            Err(PublishError::Serialize(error.to_string()))
        }
    }
}

/// An event for the broker under a topic's settings (change detection, limits); one over the
/// size limit is counted and logged here, as [`tally`] does in-process.
pub(crate) fn outgoing(
    counters: &Counters,
    topic: Arc<str>,
    event: Option<&str>,
    data: &[u8],
    (change_detection, limits): (bool, Limits),
) -> Result<Outgoing, PublishError> {
    match Outgoing::new(topic.clone(), event, data, limits) {
        Ok(mut message) => {
            message.dedup = change_detection;
            Ok(message)
        }
        Err(error) => {
            if let PublishError::TooLarge { size, .. } = error {
                tally(counters, &topic, Recorded::TooLarge(size));
            }
            Err(error)
        }
    }
}

/// Counts what became of a published event (and logs a refusal).
pub(crate) fn tally(counters: &Counters, topic: &str, recorded: Recorded) {
    match recorded {
        Recorded::Appended(_) => {
            counters.published();
        }
        Recorded::Duplicate => {
            counters.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        Recorded::TooLarge(size) => {
            counters.oversized.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%topic, size, "event over max_event_bytes; refused");
        }
    }
}
