//! Settings: the defaults, the values a [`Manager`](crate::Manager) runs with, and the error
//! for a value out of range.
//!
//! Everything here is plain data; [`ManagerBuilder`](crate::manager::ManagerBuilder) fills it
//! in and checks it once, when the manager is built.
//!
//! ```
//! use sse_runtime::config::{ConfigError, DEFAULT_HEARTBEAT};
//!
//! assert_eq!(sse_runtime::Manager::new().heartbeat(), DEFAULT_HEARTBEAT);
//! let error = sse_runtime::Manager::builder().max_lag(0).build().unwrap_err();
//! assert_eq!(error, ConfigError::MaxLag(0));
//! ```

use std::fmt;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::client_addr::TrustedProxies;
use crate::refusal::Refusals;

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
/// A publish over it is refused: logged, counted in
/// [`Stats::oversized`](crate::stats::Stats::oversized), and never seen by any subscriber.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// How long a poller outlives its topic's last subscriber, by default. A client that reconnects
/// within it (a page reload, a connect/close loop) finds the poller running instead of
/// starting a new one: at most one start per topic per linger, however fast clients churn.
pub const DEFAULT_POLLER_LINGER: Duration = Duration::from_secs(1);

/// Most open streams (subscriptions) a manager serves at once, by default. What an idle stream
/// costs is measured in the repository's `BENCHMARKS.md` (scenario S4: a few KiB under
/// [`serve`](crate::serve()), an order of magnitude more under hyper), so the default stays in
/// the tens of MiB when full; a process also needs a file descriptor per stream (see
/// `ulimit -n`).
pub const DEFAULT_MAX_STREAMS: usize = 10_000;

/// Most open streams from one client address, by default. A browser opens at most six
/// connections per host over HTTP/1.1; the rest of the headroom is for users behind one NAT.
pub const DEFAULT_MAX_STREAMS_PER_CLIENT: usize = 1_000;

/// Most subscribers of one topic, by default: no cap beyond [`DEFAULT_MAX_STREAMS`].
pub const DEFAULT_MAX_SUBSCRIBERS_PER_TOPIC: usize = DEFAULT_MAX_STREAMS;

/// Most live topics (with subscribers, or a lingering poller), by default.
pub const DEFAULT_MAX_TOPICS: usize = 10_000;

/// Most pollers running at once, by default: with 1 s intervals, a thousand polls a second.
pub const DEFAULT_MAX_POLLERS: usize = 1_000;

/// Default cap on the running pollers that one client address started.
pub const DEFAULT_MAX_POLLERS_PER_CLIENT: usize = 100;

/// Most histories retained for resume after their topic emptied, by default.
pub const DEFAULT_MAX_RETAINED: usize = 10_000;

/// Most bytes of encoded events in retained histories, by default.
pub const DEFAULT_MAX_RETAINED_BYTES: usize = 64 << 20;

/// Shortest heartbeat and `retry:` hint accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Settings shared by every topic of a manager.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) stream: StreamSettings,
    pub(crate) limits: Limits,
    pub(crate) caps: Caps,
    /// How long a polled topic stays open after its last subscriber left.
    pub(crate) linger: Duration,
    pub(crate) token: CancellationToken,
    /// Whose forwarding headers say who the client is.
    pub(crate) trusted_proxies: TrustedProxies,
    /// How the stream routes answer a refused subscription.
    pub(crate) refusals: Refusals,
}

/// Caps on what clients can make a manager create; over one, a subscription is refused and
/// nothing is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caps {
    pub(crate) streams: usize,
    pub(crate) streams_per_client: usize,
    pub(crate) subscribers_per_topic: usize,
    pub(crate) topics: usize,
    pub(crate) pollers: usize,
    pub(crate) pollers_per_client: usize,
    pub(crate) retained: usize,
    pub(crate) retained_bytes: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            streams: DEFAULT_MAX_STREAMS,
            streams_per_client: DEFAULT_MAX_STREAMS_PER_CLIENT,
            subscribers_per_topic: DEFAULT_MAX_SUBSCRIBERS_PER_TOPIC,
            topics: DEFAULT_MAX_TOPICS,
            pollers: DEFAULT_MAX_POLLERS,
            pollers_per_client: DEFAULT_MAX_POLLERS_PER_CLIENT,
            retained: DEFAULT_MAX_RETAINED,
            retained_bytes: DEFAULT_MAX_RETAINED_BYTES,
        }
    }
}

/// What a stream needs to know to write a subscription: one value, copied out of the manager's
/// settings by whoever opens the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamSettings {
    /// Silence after which a heartbeat is written.
    pub(crate) heartbeat: Duration,
    /// The `retry:` hint before jitter.
    pub(crate) retry: Duration,
    /// Write-batching window; zero writes every wake-up at once.
    pub(crate) write_batch: Duration,
    /// Over how long the clients of a stream ended by a shutdown are spread when they come back.
    pub(crate) shutdown_spread: Duration,
}

/// Default window over which the clients of a shut-down manager come back.
pub const DEFAULT_SHUTDOWN_SPREAD: Duration = Duration::from_secs(10);

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            heartbeat: DEFAULT_HEARTBEAT,
            retry: DEFAULT_RETRY,
            write_batch: Duration::ZERO,
            shutdown_spread: DEFAULT_SHUTDOWN_SPREAD,
        }
    }
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

/// History settings one subscription asks for when it creates a topic's broadcaster, in place
/// of the manager's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HistoryOverrides {
    pub(crate) events: Option<usize>,
    pub(crate) bytes: Option<usize>,
    pub(crate) retention: Option<Duration>,
}

impl HistoryOverrides {
    pub(crate) fn apply(&self, mut limits: Limits) -> Limits {
        limits.history_events = self.events.unwrap_or(limits.history_events);
        limits.history_bytes = self.bytes.unwrap_or(limits.history_bytes);
        limits.retention = self.retention.unwrap_or(limits.retention);
        limits
    }
}

impl Config {
    /// Checks every setting; the first one out of range is the error.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let Self {
            stream,
            limits,
            caps,
            ..
        } = self;
        if stream.heartbeat < MIN_INTERVAL {
            return Err(ConfigError::Heartbeat(stream.heartbeat));
        }
        if stream.retry < MIN_INTERVAL {
            return Err(ConfigError::Retry(stream.retry));
        }
        if limits.max_lag_events == 0 {
            return Err(ConfigError::MaxLag(limits.max_lag_events));
        }
        if limits.max_lag_bytes == 0 {
            return Err(ConfigError::MaxLagBytes(limits.max_lag_bytes));
        }
        if limits.max_event_bytes == 0 {
            return Err(ConfigError::MaxEventBytes(limits.max_event_bytes));
        }
        for (name, value) in [
            ("max_streams", caps.streams),
            ("max_streams_per_client", caps.streams_per_client),
            ("max_subscribers_per_topic", caps.subscribers_per_topic),
            ("max_topics", caps.topics),
            ("max_pollers", caps.pollers),
            ("max_pollers_per_client", caps.pollers_per_client),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroCap(name));
            }
        }
        Ok(())
    }
}

/// A [`ManagerBuilder`](crate::manager::ManagerBuilder) setting that is out of range, with the
/// value it was given.
///
/// ```
/// use std::time::Duration;
/// use sse_runtime::config::ConfigError;
///
/// let error = sse_runtime::Manager::builder().heartbeat(Duration::ZERO).build().unwrap_err();
/// assert_eq!(error, ConfigError::Heartbeat(Duration::ZERO));
/// assert_eq!(
///     error.to_string(),
///     "invalid SSE manager configuration: heartbeat must be at least 1ms, got 0ns"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// [`heartbeat`](crate::manager::ManagerBuilder::heartbeat) below [`MIN_INTERVAL`].
    Heartbeat(Duration),
    /// [`retry`](crate::manager::ManagerBuilder::retry) below [`MIN_INTERVAL`].
    Retry(Duration),
    /// [`max_lag`](crate::manager::ManagerBuilder::max_lag) of 0: a subscriber must be allowed
    /// one undelivered event.
    MaxLag(usize),
    /// [`max_lag_bytes`](crate::manager::ManagerBuilder::max_lag_bytes) of 0.
    MaxLagBytes(usize),
    /// [`max_event_bytes`](crate::manager::ManagerBuilder::max_event_bytes) of 0.
    MaxEventBytes(usize),
    /// A cap on streams, topics or pollers (named) of 0: nothing could ever be served.
    ZeroCap(&'static str),
    /// A [`backplane`](crate::manager::ManagerBuilder::backplane) was given outside a tokio
    /// runtime: its connections need one.
    NoRuntime,
    /// [`install`](crate::manager::ManagerBuilder::install) after the global manager was
    /// already created (by an earlier `install`, [`Manager::global`](crate::Manager::global),
    /// [`router`](crate::router) or a `publish_*` helper).
    GlobalInUse,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid SSE manager configuration: ")?;
        match self {
            Self::Heartbeat(value) => {
                write!(
                    f,
                    "heartbeat must be at least {MIN_INTERVAL:?}, got {value:?}"
                )
            }
            Self::Retry(value) => {
                write!(f, "retry must be at least {MIN_INTERVAL:?}, got {value:?}")
            }
            Self::MaxLag(value) => write!(
                f,
                "max_lag must be at least 1 (a subscriber must be allowed one undelivered event), got {value}"
            ),
            Self::MaxLagBytes(value) => write!(
                f,
                "max_lag_bytes must be at least 1 (a subscriber must be allowed one undelivered event), got {value}"
            ),
            Self::MaxEventBytes(value) => {
                write!(f, "max_event_bytes must be at least 1, got {value}")
            }
            Self::ZeroCap(name) => write!(
                f,
                "{name} must be at least 1 (a cap of 0 would refuse every client), got 0"
            ),
            Self::NoRuntime => {
                f.write_str("a backplane needs a tokio runtime: build the manager inside one")
            }
            Self::GlobalInUse => f.write_str(
                "the global manager is already in use: install it once, before the first \
                 router(), publish_* or Manager::global()",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
