//! Pollers: a function called on an interval whose results are published to a topic, running
//! only while the topic has subscribers.
//!
//! [`Polling`] is the bundled [`PollingService`]; the contract itself (and [`TopicPublisher`],
//! [`PollError`]) is re-exported here so everything a producer needs is in one place.

use std::borrow::Cow;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub use crate::producer::{
    DEFAULT_ERROR_EVENT, PollError, PollingService, Publisher, StopFuture, TopicPublisher,
};

/// Interval between polls when none is set.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// API version reported in error payloads when none is set.
pub const DEFAULT_API_VERSION: &str = "v1";

/// While a poller keeps failing, how often a summary of its failures is logged. The first
/// failure is logged at once (`WARN`), the recovery too (`INFO`); the failures between are
/// counted and summarized at most this often, so a poller failing every few milliseconds
/// writes a few lines a minute, not one per poll.
pub const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

type StopCondition<T> = Arc<dyn Fn(&T) -> bool + Send + Sync>;
type StopCallback = Arc<dyn Fn() + Send + Sync>;

/// Calls an async function on an interval and publishes each result.
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
/// use sse_runtime::{Manager, polling::Polling, PollError, subscription::SubscribeOptions};
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
    /// How values and errors are published: event names, the errors' API version.
    publishing: Publishing,
    stop_when: Option<StopCondition<T>>,
    on_stop: Option<StopCallback>,
    run: Mutex<Option<Run>>,
    _payload: PhantomData<fn() -> T>,
}

struct Run {
    token: CancellationToken,
    task: JoinHandle<()>,
}

/// How a poller publishes, shared with its runs: the values' event name (`None`: plain
/// `message` events), the errors' event name and the API version their payload reports, and
/// whether a stop by the stop condition ends the topic's streams.
#[derive(Clone)]
struct Publishing {
    value: Option<Cow<'static, str>>,
    error: Cow<'static, str>,
    api_version: Cow<'static, str>,
    end_on_stop: bool,
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
            publishing: Publishing {
                value: None,
                error: Cow::Borrowed(DEFAULT_ERROR_EVENT),
                api_version: Cow::Borrowed(DEFAULT_API_VERSION),
                end_on_stop: false,
            },
            stop_when: None,
            on_stop: None,
            run: Mutex::new(None),
            _payload: PhantomData,
        }
    }

    /// Time between the starts of two polls (default 5 s). A poll that overruns delays the next
    /// one instead of piling up. A zero interval would poll in a busy loop: it falls back to
    /// [`DEFAULT_INTERVAL`], with a warning in the log.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sse_runtime::{PollError, polling::{DEFAULT_INTERVAL, Polling}};
    ///
    /// let polling = Polling::new(|_| async { Ok::<_, PollError>(1) }).interval(Duration::ZERO);
    /// assert_eq!(polling.polling_interval(), DEFAULT_INTERVAL);
    /// ```
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        if interval.is_zero() {
            tracing::warn!(default = ?DEFAULT_INTERVAL, "polling interval of zero; using the default");
            self.interval = DEFAULT_INTERVAL;
        } else {
            self.interval = interval;
        }
        self
    }

    /// API version reported in error payloads (default `"v1"`).
    #[must_use]
    pub fn api_version(mut self, version: impl Into<Cow<'static, str>>) -> Self {
        self.publishing.api_version = version.into();
        self
    }

    /// The name of the events the values are published as (default none: plain `message`
    /// events, which `EventSource.onmessage` receives).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use sse_runtime::{Manager, PollError, polling::Polling, subscription::SubscribeOptions};
    ///
    /// let manager = Manager::new();
    /// let polling = Polling::new(|_| async { Ok::<_, PollError>(42) }).event("answer");
    /// let mut sub = manager
    ///     .subscribe_with("t", SubscribeOptions::new().polling(polling))
    ///     .unwrap();
    /// let frame = sub.recv().await.unwrap();
    /// assert!(frame.ends_with(b"event: answer\ndata: 42\n\n"));
    /// # }
    /// ```
    #[must_use]
    pub fn event(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.publishing.value = Some(name.into());
        self
    }

    /// The name of the events a failed poll is published as (default
    /// [`DEFAULT_ERROR_EVENT`], `poll-error`), with the payload
    /// `{"apiVersion", "statusCode", "message"}`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use http::StatusCode;
    /// use sse_runtime::{Manager, PollError, polling::Polling, subscription::SubscribeOptions};
    ///
    /// let manager = Manager::new();
    /// let failing = |_| async { Err::<u8, _>(PollError::new(StatusCode::NOT_FOUND, "gone")) };
    /// let polling = Polling::new(failing).error_event("build-error");
    /// let mut sub = manager
    ///     .subscribe_with("t", SubscribeOptions::new().polling(polling))
    ///     .unwrap();
    /// let frame = String::from_utf8(sub.recv().await.unwrap().to_vec()).unwrap();
    /// assert!(frame.contains("event: build-error\ndata: {\"apiVersion\":\"v1\",\"statusCode\":404"));
    /// # }
    /// ```
    #[must_use]
    pub fn error_event(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.publishing.error = name.into();
        self
    }

    /// Stop polling after publishing a result for which `condition` holds.
    #[must_use]
    pub fn stop_when(mut self, condition: impl Fn(&T) -> bool + Send + Sync + 'static) -> Self {
        self.stop_when = Some(Arc::new(condition));
        self
    }

    /// When the [stop condition](Self::stop_when) holds, also end the topic's streams: each
    /// subscriber gets what was published up to the final value, then an
    /// [`end`](crate::frame::END_EVENT) event, and its stream ends (so a browser tab frees its
    /// connection; in a multi-topic stream only that topic ends). A client that subscribes
    /// while the topic is still open gets the final value and the `end` event. A browser closes
    /// its `EventSource` on `end`; one that reconnects instead, once the topic is gone, starts
    /// a new poller. Without it (the default), streams stay open after the stop, with
    /// heartbeats only, until their clients leave. With a backplane, the streams of the
    /// instance that polled end; those of other instances stay open.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use sse_runtime::{Manager, PollError, polling::Polling, subscription::{EndReason, SubscribeOptions}};
    ///
    /// let manager = Manager::new();
    /// let polling = Polling::new(|_| async { Ok::<_, PollError>("done") })
    ///     .stop_when(|state: &&str| *state == "done")
    ///     .end_on_stop(true);
    /// let mut sub = manager
    ///     .subscribe_with("build", SubscribeOptions::new().polling(polling))
    ///     .unwrap();
    /// assert!(sub.recv().await.unwrap().ends_with(b"data: \"done\"\n\n"));
    /// assert_eq!(sub.recv().await, None);
    /// assert_eq!(sub.end_reason(), Some(EndReason::Finished));
    /// # }
    /// ```
    #[must_use]
    pub fn end_on_stop(mut self, end: bool) -> Self {
        self.publishing.end_on_stop = end;
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
        &self.publishing.api_version
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
        // One span per run: its failures (with an internal error's detail) are logged in it.
        let topic = publisher.topic().unwrap_or_default();
        let span = tracing::info_span!("sse_poller", topic = %crate::telemetry::redacted(&topic));
        let task = tokio::spawn(tracing::Instrument::instrument(
            poll_loop(
                self.poll.clone(),
                self.interval,
                self.publishing.clone(),
                self.stop_when.clone(),
                OnStop(self.on_stop.clone()),
                publisher,
                token.clone(),
            ),
            span,
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
    publishing: Publishing,
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
    let mut failures = FailureLog::default();
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if !publisher.may_poll() {
            // With a backplane: the lease lapsed (a pause, a partition); the lease keeper
            // stops this run or wins the lease back. Never poll without it.
            continue;
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            biased;
            () = token.cancelled() => return,
            outcome = AssertUnwindSafe(poll(token.clone())).catch_unwind() => outcome,
        };
        crate::telemetry::polled(started.elapsed(), !matches!(outcome, Ok(Ok(_))));
        match outcome {
            Ok(Ok(value)) => {
                failures.recovered(&publisher);
                publisher.publish_as(publishing.value.as_deref(), &value);
                if stop_when
                    .as_ref()
                    .is_some_and(|condition| condition(&value))
                {
                    tracing::debug!(topic = ?publisher.topic(), "stop condition met");
                    if publishing.end_on_stop {
                        publisher.finish();
                    }
                    return;
                }
            }
            Ok(Err(error)) => {
                let error: PollError = error.into();
                failures.failed(&publisher, &error);
                publisher.publish_error_as(&publishing.error, &error, &publishing.api_version);
            }
            Err(panic) => {
                // The panic's message stays on the server, as any internal error's does.
                let error = PollError::internal(format_args!(
                    "poll function panicked: {}",
                    panic_message(&panic)
                ));
                failures.failed(&publisher, &error);
                publisher.publish_error_as(&publishing.error, &error, &publishing.api_version);
            }
        }
    }
}

/// The log of one run's consecutive failures: the first at once, then a summary at most every
/// [`ERROR_LOG_INTERVAL`], then the recovery.
#[derive(Default)]
struct FailureLog {
    /// Consecutive failures so far, and since the last line logged.
    failures: u64,
    unlogged: u64,
    last_logged: Option<tokio::time::Instant>,
}

impl FailureLog {
    fn failed(&mut self, publisher: &TopicPublisher, error: &PollError) {
        self.failures += 1;
        let now = tokio::time::Instant::now();
        match self.last_logged {
            None => {
                tracing::warn!(topic = ?publisher.topic(), %error, "poll failed; further failures are summarized");
            }
            Some(at) if now.duration_since(at) >= ERROR_LOG_INTERVAL => {
                tracing::warn!(
                    topic = ?publisher.topic(),
                    %error,
                    failures = self.failures,
                    since_last_report = self.unlogged + 1,
                    "poll still failing",
                );
            }
            Some(_) => {
                self.unlogged += 1;
                return;
            }
        }
        self.last_logged = Some(now);
        self.unlogged = 0;
    }

    fn recovered(&mut self, publisher: &TopicPublisher) {
        if self.failures > 0 {
            tracing::info!(topic = ?publisher.topic(), failures = self.failures, "poll recovered");
            *self = Self::default();
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
