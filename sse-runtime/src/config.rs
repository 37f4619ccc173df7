//! Manager configuration and its validation.

use std::fmt;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Manager;

/// Default `retry:` hint: how long a browser waits before reconnecting (plus jitter).
pub const DEFAULT_RETRY: Duration = Duration::from_secs(2);

/// Default interval between heartbeats on an idle stream (and the write deadline).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);

/// How many events a topic keeps for slow subscribers and for resume, by default.
pub const DEFAULT_HISTORY_EVENTS: usize = 1024;

/// How many bytes of encoded events a topic keeps, by default.
pub const DEFAULT_HISTORY_BYTES: usize = 4 << 20;

/// How long a topic's history outlives its last subscriber, by default: long enough for a page
/// reload to resume.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30);

/// How far (in events) a subscriber may fall behind its topic before it is disconnected.
pub const DEFAULT_MAX_LAG_EVENTS: usize = 512;

/// How far (in bytes of encoded events) a subscriber may fall behind before it is disconnected.
pub const DEFAULT_MAX_LAG_BYTES: usize = 1 << 20;

/// Largest encoded event (its `id:`, `event:` and `data:` lines) a topic accepts, by default.
/// A publish over it is refused: logged, counted in [`Stats::oversized`](crate::Stats), and
/// never seen by any subscriber.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// Settings shared by every topic of a [`Manager`].
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) heartbeat: Duration,
    pub(crate) retry: Duration,
    pub(crate) write_batch: Duration,
    pub(crate) limits: Limits,
    pub(crate) token: CancellationToken,
}

/// Memory bounds of one topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) history_events: usize,
    pub(crate) history_bytes: usize,
    pub(crate) max_lag_events: usize,
    pub(crate) max_lag_bytes: usize,
    pub(crate) max_event_bytes: usize,
    pub(crate) retention: Duration,
}

impl Limits {
    /// The topic keeps what either use needs: the resume history, and the window a live
    /// subscriber may lag behind. At least the newest event is always kept, because change
    /// detection re-delivers it to subscribers that have not received anything yet.
    pub(crate) fn retained_events(&self) -> usize {
        self.history_events.max(self.max_lag_events).max(1)
    }

    pub(crate) fn retained_bytes(&self) -> usize {
        self.history_bytes.max(self.max_lag_bytes)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            history_events: DEFAULT_HISTORY_EVENTS,
            history_bytes: DEFAULT_HISTORY_BYTES,
            max_lag_events: DEFAULT_MAX_LAG_EVENTS,
            max_lag_bytes: DEFAULT_MAX_LAG_BYTES,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            retention: DEFAULT_RETENTION,
        }
    }
}

/// Builds a [`Manager`] with non-default settings.
///
/// ```
/// use std::time::Duration;
///
/// let manager = sse_runtime::Manager::builder()
///     .heartbeat(Duration::from_secs(15))
///     .build()
///     .expect("valid configuration");
/// assert_eq!(manager.heartbeat(), Duration::from_secs(15));
///
/// let err = sse_runtime::Manager::builder().heartbeat(Duration::ZERO).build().unwrap_err();
/// assert!(err.to_string().contains("heartbeat"));
/// ```
#[derive(Debug, Default)]
#[must_use = "call .build() to get a Manager"]
pub struct ManagerBuilder {
    heartbeat: Option<Duration>,
    retry: Option<Duration>,
    write_batch: Duration,
    limits: Limits,
    token: Option<CancellationToken>,
}

impl ManagerBuilder {
    /// Interval of the `:\n\n` heartbeat on idle streams, default 30 s. It is also the write
    /// deadline that [`WriteDeadline`](crate::WriteDeadline) is meant to be given. Must be at
    /// least one millisecond.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = Some(interval);
        self
    }

    /// The `retry:` hint sent when a stream opens (default 2 s): how long a browser waits before
    /// reconnecting. Each stream adds a random jitter of up to half of it, so the clients of a
    /// restarting server do not all come back in the same instant. Must be at least 1 ms.
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Write batching (default off): a stream that wrote less than `window` ago holds new events
    /// until `window` has passed, then writes them in one go. Trades at most `window` of extra
    /// latency, under load only, for far fewer write system calls when events come faster than
    /// a subscriber's writes (the per-event write is what a fan-out server spends most of its
    /// CPU on). A few milliseconds is typical.
    pub fn write_batch(mut self, window: Duration) -> Self {
        self.write_batch = window;
        self
    }

    /// Binds the manager to a parent cancellation token: cancelling it shuts the manager down,
    /// like [`Manager::shutdown`]. (The Go package's parent context.)
    pub fn cancellation_token(mut self, token: CancellationToken) -> Self {
        self.token = Some(token);
        self
    }

    /// How many of its latest events each topic keeps for resuming clients (default 1024;
    /// 0 keeps none beyond what live subscribers need).
    pub fn history(mut self, events: usize) -> Self {
        self.limits.history_events = events;
        self
    }

    /// Upper bound on the bytes of encoded events each topic keeps for history (default 4 MiB).
    pub fn history_bytes(mut self, bytes: usize) -> Self {
        self.limits.history_bytes = bytes;
        self
    }

    /// How long a topic's history is kept after its last subscriber has left (default 30 s), so
    /// a client that reconnects (a page reload) still resumes. The broadcaster itself (and its
    /// poller) goes at once; a new first subscriber within the retention time brings the history
    /// back, ids continuing where they were. `Duration::ZERO` drops history with the topic.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.limits.retention = retention;
        self
    }

    /// How many events a subscriber may fall behind before it is disconnected (default 512).
    /// A disconnected browser reconnects and resumes from history.
    pub fn max_lag(mut self, events: usize) -> Self {
        self.limits.max_lag_events = events;
        self
    }

    /// How many bytes of events may queue up behind the event a subscriber is sending before
    /// it is disconnected (default 1 MiB). The event being sent does not count, so one large
    /// event never disconnects anyone; its size is bounded by
    /// [`max_event_bytes`](Self::max_event_bytes).
    pub fn max_lag_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_lag_bytes = bytes;
        self
    }

    /// Largest encoded event accepted (default 1 MiB, [`DEFAULT_MAX_EVENT_BYTES`]). A publish
    /// over it is refused: it is logged and counted in
    /// [`Stats::oversized`](crate::Stats::oversized), takes no id and reaches nobody, so every
    /// subscriber goes on receiving the events after it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let manager = sse_runtime::Manager::builder().max_event_bytes(64).build().unwrap();
    /// let mut sub = manager.subscribe("t").unwrap();
    /// manager.publish("t", &"x".repeat(100));
    /// manager.publish("t", &"small");
    /// assert!(sub.recv().await.unwrap().ends_with(b"data: \"small\"\n\n"));
    /// assert_eq!(manager.stats().oversized, 1);
    /// # }
    /// ```
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_event_bytes = bytes;
        self
    }

    /// Checks the settings and builds the manager.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first setting that is out of range.
    pub fn build(self) -> Result<Manager, ConfigError> {
        let heartbeat = self.heartbeat.unwrap_or(DEFAULT_HEARTBEAT);
        if heartbeat < Duration::from_millis(1) {
            return Err(ConfigError::new(format!(
                "heartbeat must be at least 1ms, got {heartbeat:?}"
            )));
        }
        let retry = self.retry.unwrap_or(DEFAULT_RETRY);
        if retry < Duration::from_millis(1) {
            return Err(ConfigError::new(format!(
                "retry must be at least 1ms, got {retry:?}"
            )));
        }
        if self.limits.max_lag_events == 0 || self.limits.max_lag_bytes == 0 {
            return Err(ConfigError::new(
                "max_lag and max_lag_bytes must be at least 1: a subscriber must be allowed one \
                 undelivered event"
                    .to_owned(),
            ));
        }
        if self.limits.max_event_bytes == 0 {
            return Err(ConfigError::new(
                "max_event_bytes must be at least 1".to_owned(),
            ));
        }
        Ok(Manager::from_config(Config {
            heartbeat,
            retry,
            write_batch: self.write_batch,
            limits: self.limits,
            token: self.token.unwrap_or_default(),
        }))
    }
}

/// A [`ManagerBuilder`] setting that is out of range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    fn new(message: String) -> Self {
        Self { message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid SSE manager configuration: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}
