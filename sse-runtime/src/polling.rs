//! Pollers: a function called on an interval whose results are published to a topic, running
//! only while the topic has subscribers.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use http::StatusCode;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::manager::Inner;
use crate::topic::Topic;

/// Interval between polls when none is set.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// API version reported in error payloads when none is set.
pub const DEFAULT_API_VERSION: &str = "v1";

/// The future returned by [`PollingService::stop`].
pub type StopFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Something that produces a topic's events while the topic has subscribers.
///
/// The manager calls [`start`](Self::start) once, when the first subscriber creates the topic's
/// broadcaster, and [`stop`](Self::stop) once, off the unsubscribe path, when the last subscriber
/// has left. [`Polling`] is the bundled implementation; implement this trait for other sources.
///
/// ```
/// use std::sync::Arc;
/// use sse_runtime::{PollingService, Publisher, StopFuture, TopicPublisher};
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

/// Publishes into one topic (the Go package's `Publisher`).
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
    manager: Weak<Inner>,
}

impl TopicPublisher {
    pub(crate) fn new(topic: &Arc<Topic>, manager: &Arc<Inner>) -> Self {
        Self {
            topic: Arc::downgrade(topic),
            manager: Arc::downgrade(manager),
        }
    }

    /// The topic this publisher feeds, while its broadcaster is alive.
    pub fn topic(&self) -> Option<String> {
        self.topic.upgrade().map(|topic| topic.name.to_string())
    }

    /// Whether the broadcaster is gone (its last subscriber left, or the manager shut down).
    pub fn is_closed(&self) -> bool {
        self.topic.upgrade().is_none_or(|topic| topic.is_closed())
    }

    /// Publishes the error payload `{"apiVersion", "statusCode", "message"}`.
    pub fn publish_error(&self, error: &PollError, api_version: &str) {
        self.publish(&ErrorPayload {
            api_version,
            status_code: error.status.as_u16(),
            message: &error.message,
        });
    }
}

impl Publisher for TopicPublisher {
    fn publish<T: Serialize + ?Sized>(&self, value: &T) {
        if let (Some(topic), Some(manager)) = (self.topic.upgrade(), self.manager.upgrade())
            && let Some(data) = manager.encode(&topic.name, value)
        {
            manager.deliver(&topic, None, data);
        }
    }
}

impl fmt::Debug for TopicPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicPublisher")
            .field("topic", &self.topic())
            .finish()
    }
}

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
/// Any `std::error::Error` converts into one with status 500, so `?` works in poll functions;
/// give a status with [`PollError::new`] or [`with_status`](Self::with_status).
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
/// assert_eq!(parse("x").unwrap_err().status(), StatusCode::INTERNAL_SERVER_ERROR);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollError {
    status: StatusCode,
    message: String,
}

impl PollError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
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

impl<E: std::error::Error + Send + Sync + 'static> From<E> for PollError {
    fn from(error: E) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

type StopCondition<T> = Arc<dyn Fn(&T) -> bool + Send + Sync>;
type StopCallback = Arc<dyn Fn() + Send + Sync>;

/// Calls an async function on an interval and publishes each result (the Go package's
/// `NewPolling`).
///
/// - The first poll runs at once, then one every [`interval`](Self::interval) (default 5 s).
/// - A successful result is published, then the [stop condition](Self::stop_when) is tested; if
///   it holds, polling stops by itself.
/// - An error is published as an error payload (status from the [`PollError`], 500 otherwise);
///   the stop condition is not tested. A panic in the poll function is caught and published as
///   a 500 error; polling goes on.
/// - The poll function gets a [`CancellationToken`] that is cancelled on stop; its future is
///   also dropped on stop, so an `.await` inside it never delays stopping.
/// - The [stop callback](Self::on_stop) runs exactly once per start, whatever ended it.
///
/// ```
/// use std::time::Duration;
/// use sse_runtime::{Manager, Polling, PollError, SubscribeOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let manager = Manager::new();
/// let polling = Polling::new(|_cancel| async { Ok::<_, PollError>(42) })
///     .interval(Duration::from_secs(1))
///     .stop_when(|n: &i32| *n == 42);
/// let mut sub = manager
///     .subscribe_with("answer", SubscribeOptions::new().polling(polling))
///     .unwrap();
/// let frame = sub.recv().await.unwrap();
/// assert!(frame.ends_with(b"data: 42\n\n"));
/// # }
/// ```
pub struct Polling<F, T> {
    poll: Arc<F>,
    interval: Duration,
    api_version: Cow<'static, str>,
    stop_when: Option<StopCondition<T>>,
    on_stop: Option<StopCallback>,
    run: Mutex<Option<Run>>,
    _payload: PhantomData<fn() -> T>,
}

struct Run {
    token: CancellationToken,
    task: JoinHandle<()>,
}

impl<F, Fut, T, E> Polling<F, T>
where
    F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Serialize + Send + 'static,
    E: Into<PollError> + Send + 'static,
{
    /// A poller calling `poll` with default settings.
    pub fn new(poll: F) -> Self {
        Self {
            poll: Arc::new(poll),
            interval: DEFAULT_INTERVAL,
            api_version: Cow::Borrowed(DEFAULT_API_VERSION),
            stop_when: None,
            on_stop: None,
            run: Mutex::new(None),
            _payload: PhantomData,
        }
    }

    /// Time between the starts of two polls (default 5 s). A poll that overruns delays the next
    /// one instead of piling up.
    ///
    /// # Panics
    /// When `interval` is zero.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        assert!(!interval.is_zero(), "polling interval must be positive");
        self.interval = interval;
        self
    }

    /// API version reported in error payloads (default `"v1"`).
    #[must_use]
    pub fn api_version(mut self, version: impl Into<Cow<'static, str>>) -> Self {
        self.api_version = version.into();
        self
    }

    /// Stop polling after publishing a result for which `condition` holds.
    #[must_use]
    pub fn stop_when(mut self, condition: impl Fn(&T) -> bool + Send + Sync + 'static) -> Self {
        self.stop_when = Some(Arc::new(condition));
        self
    }

    /// Called once each time polling stops, for any reason.
    #[must_use]
    pub fn on_stop(mut self, callback: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_stop = Some(Arc::new(callback));
        self
    }

    /// The configured interval.
    pub fn polling_interval(&self) -> Duration {
        self.interval
    }

    /// The configured API version.
    pub fn polling_api_version(&self) -> &str {
        &self.api_version
    }

    /// Whether a run is in progress (started and not yet stopped).
    pub fn is_running(&self) -> bool {
        self.run
            .lock()
            .as_ref()
            .is_some_and(|run| !run.task.is_finished())
    }
}

impl<F, Fut, T, E> PollingService for Polling<F, T>
where
    F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Serialize + Send + 'static,
    E: Into<PollError> + Send + 'static,
{
    /// Starts a run, unless one is in progress (then this is a no-op).
    fn start(&self, publisher: TopicPublisher) {
        let mut run = self.run.lock();
        if run.as_ref().is_some_and(|run| !run.task.is_finished()) {
            tracing::warn!("Polling::start called while already running; ignored");
            return;
        }
        let token = CancellationToken::new();
        let task = tokio::spawn(poll_loop(
            self.poll.clone(),
            self.interval,
            self.api_version.clone(),
            self.stop_when.clone(),
            OnStop(self.on_stop.clone()),
            publisher,
            token.clone(),
        ));
        *run = Some(Run { token, task });
    }

    fn stop(&self) -> StopFuture<'_> {
        let run = self.run.lock().take();
        Box::pin(async move {
            if let Some(Run { token, task }) = run {
                token.cancel();
                if let Err(error) = task.await {
                    tracing::error!(%error, "polling task failed");
                }
            }
        })
    }
}

/// Runs the stop callback when dropped: at the end of the loop, on cancellation and on unwind
/// alike, so it runs exactly once per start.
struct OnStop(Option<StopCallback>);

impl Drop for OnStop {
    fn drop(&mut self) {
        if let Some(callback) = self.0.take() {
            callback();
        }
    }
}

async fn poll_loop<F, Fut, T, E>(
    poll: Arc<F>,
    interval: Duration,
    api_version: Cow<'static, str>,
    stop_when: Option<StopCondition<T>>,
    _on_stop: OnStop,
    publisher: TopicPublisher,
    token: CancellationToken,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    T: Serialize,
    E: Into<PollError>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let outcome = tokio::select! {
            biased;
            () = token.cancelled() => return,
            outcome = AssertUnwindSafe(poll(token.clone())).catch_unwind() => outcome,
        };
        match outcome {
            Ok(Ok(value)) => {
                publisher.publish(&value);
                if stop_when
                    .as_ref()
                    .is_some_and(|condition| condition(&value))
                {
                    tracing::debug!(topic = ?publisher.topic(), "stop condition met");
                    return;
                }
            }
            Ok(Err(error)) => {
                let error: PollError = error.into();
                tracing::warn!(topic = ?publisher.topic(), %error, "poll failed");
                publisher.publish_error(&error, &api_version);
            }
            Err(panic) => {
                let message = panic_message(&panic);
                tracing::error!(topic = ?publisher.topic(), panic = %message, "poll function panicked");
                publisher.publish_error(
                    &PollError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("poll function panicked: {message}"),
                    ),
                    &api_version,
                );
            }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}
