//! [`ManagerBuilder`]: the settings of a [`Manager`], checked once when it is built.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backplane::Backplane;
use crate::client_addr::{Cidr, TrustedProxies};
use crate::config::{Caps, Config, ConfigError, DEFAULT_POLLER_LINGER, Limits, StreamSettings};
use crate::hub::Hub;
use crate::manager::Manager;
use crate::refusal::{RefusalAnswer, Refusals};

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
#[derive(Debug)]
#[must_use = "call .build() to get a Manager"]
pub struct ManagerBuilder {
    stream: StreamSettings,
    limits: Limits,
    caps: Caps,
    linger: Duration,
    token: Option<CancellationToken>,
    backplane: Option<Backplane>,
    trusted_proxies: TrustedProxies,
    refusals: Refusals,
}

impl Default for ManagerBuilder {
    fn default() -> Self {
        Self {
            stream: StreamSettings::default(),
            limits: Limits::default(),
            caps: Caps::default(),
            linger: DEFAULT_POLLER_LINGER,
            token: None,
            backplane: None,
            trusted_proxies: TrustedProxies::default(),
            refusals: Refusals::default(),
        }
    }
}

impl ManagerBuilder {
    /// Interval of the `:\n\n` heartbeat on idle streams, default 30 s. It is also the write
    /// deadline that [`WriteDeadline`](crate::WriteDeadline) is meant to be given. Must be at
    /// least one millisecond.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.stream.heartbeat = interval;
        self
    }

    /// Over how long the clients of this manager's streams come back after a
    /// [`shutdown`](crate::Manager::shutdown) (default 10 s): each stream's last frame is a
    /// `retry:` of the [`retry`](Self::retry) hint plus a random part of `window`, so a restart
    /// (or a rolling deploy behind a proxy) does not bring every browser back in the same
    /// instant. Zero: the `retry` hint alone.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let manager = sse_runtime::Manager::builder()
    ///     .shutdown_spread(Duration::from_secs(30))   // 10 000 browsers: ~330 a second
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn shutdown_spread(mut self, window: Duration) -> Self {
        self.stream.shutdown_spread = window;
        self
    }

    /// The `retry:` hint sent when a stream opens (default 2 s): how long a browser waits before
    /// reconnecting. Each stream adds a random jitter of up to half of it, so the clients of a
    /// restarting server do not all come back in the same instant. Must be at least 1 ms.
    pub fn retry(mut self, retry: Duration) -> Self {
        self.stream.retry = retry;
        self
    }

    /// Write batching (default off): a stream that wrote less than `window` ago holds new events
    /// until `window` has passed, then writes them in one go. Trades at most `window` of extra
    /// latency, under load only, for far fewer write system calls when events come faster than
    /// a subscriber's writes (the per-event write is what a fan-out server spends most of its
    /// CPU on). A few milliseconds is typical.
    pub fn write_batch(mut self, window: Duration) -> Self {
        self.stream.write_batch = window;
        self
    }

    /// Binds the manager to a parent cancellation token: cancelling it shuts the manager down,
    /// like [`Manager::shutdown`].
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

    /// Upper bound on the bytes of encoded events each topic keeps for history (default 4 MiB):
    /// a resume replays at most this much (or the newest event alone), else it gets a `reset`.
    pub fn history_bytes(mut self, bytes: usize) -> Self {
        self.limits.history_bytes = bytes;
        self
    }

    /// How long a topic's history is kept after its last subscriber has left (default 30 s), so
    /// a client that reconnects (a page reload) still resumes. The broadcaster itself (and its
    /// poller) goes at once; a new first subscriber within the retention time brings the history
    /// back, ids continuing where they were. `Duration::ZERO` drops history with the topic.
    /// Expired histories are dropped by a timer (at most a second late), whether or not anyone
    /// subscribes again.
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

    /// Largest encoded event accepted (default 1 MiB, [`DEFAULT_MAX_EVENT_BYTES`](crate::config::DEFAULT_MAX_EVENT_BYTES)). A publish
    /// over it is refused: it is logged and counted in
    /// [`Stats::oversized`](crate::stats::Stats::oversized), takes no id and reaches nobody, so every
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

    /// How long a poller keeps running after its topic's last subscriber left (default 1 s,
    /// [`DEFAULT_POLLER_LINGER`]). A subscriber that comes within it joins the running poller,
    /// so clients that connect and close in a loop cost at most one poller start per topic per
    /// linger, and polls at the poller's own rate. The topic stays live meanwhile (it counts
    /// towards [`max_topics`](Self::max_topics) and its poller towards
    /// [`max_pollers`](Self::max_pollers)). `Duration::ZERO` stops pollers at once.
    pub fn poller_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Most streams (subscriptions) open at once (default 10 000,
    /// [`DEFAULT_MAX_STREAMS`](crate::config::DEFAULT_MAX_STREAMS)). Over it, a request gets
    /// `503 Service Unavailable` with `Retry-After`. Size it from memory (what an idle stream
    /// costs under [`serve`](crate::serve()) or hyper is measured in the repository's
    /// `BENCHMARKS.md`, scenario S4; add what the events in flight take) and from the process's
    /// file-descriptor limit.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use sse_runtime::subscription::SubscribeError;
    ///
    /// let manager = sse_runtime::Manager::builder().max_streams(1).build().unwrap();
    /// let first = manager.subscribe("a").unwrap();
    /// assert_eq!(manager.subscribe("b").unwrap_err(), SubscribeError::TooManyStreams);
    /// drop(first);
    /// assert!(manager.subscribe("b").is_ok());
    /// # }
    /// ```
    pub fn max_streams(mut self, streams: usize) -> Self {
        self.caps.streams = streams;
        self
    }

    /// Most streams open at once from one client address (default 1 000). Over it, that client
    /// gets `429 Too Many Requests` with `Retry-After`. The address is the client's
    /// [`ClientAddr`](crate::ClientAddr): the peer address that [`serve`](crate::serve())
    /// gives every request as `ConnectInfo<SocketAddr>` (under `axum::serve`, use
    /// `into_make_service_with_connect_info::<SocketAddr>()`), or, when the peer is one of the
    /// [`trusted_proxies`](Self::trusted_proxies), the client it forwarded. Behind a reverse
    /// proxy that is not trusted, every client has the proxy's address.
    pub fn max_streams_per_client(mut self, streams: usize) -> Self {
        self.caps.streams_per_client = streams;
        self
    }

    /// How the stream routes answer a subscription refused over a cap or by a manager shutting
    /// down: by default a `200` event stream with a `refused` event and a `retry:`, which a
    /// browser's `EventSource` comes back from by itself; [`RefusalAnswer::Status`] for plain
    /// `503`/`429` with `Retry-After`, for clients that read statuses. See [`RefusalAnswer`] for
    /// why, and what keeps its status regardless.
    ///
    /// ```
    /// use sse_runtime::subscription::RefusalAnswer;
    ///
    /// let api = sse_runtime::Manager::builder()
    ///     .refusal_answer(RefusalAnswer::Status)
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn refusal_answer(mut self, answer: RefusalAnswer) -> Self {
        self.refusals.answer = answer;
        self
    }

    /// How long a refused client is asked to wait before it comes back (default 5 s): the
    /// `Retry-After` header (in whole seconds, at least 1), and with
    /// [`RefusalAnswer::EventStream`] the `retry:` hint, plus up to half of it as jitter.
    pub fn refusal_retry(mut self, delay: Duration) -> Self {
        self.refusals.retry_after = delay;
        self
    }

    /// The reverse proxies whose forwarding headers (`Forwarded`, else `X-Forwarded-For`) say
    /// who the client is (default: none). A request whose peer is in one of `ranges` is
    /// counted by the rightmost forwarded address that is not itself in one; any other request
    /// by its peer, whatever it sends. This address is what the per-client cap counts, what
    /// guards get as [`ClientAddr`](crate::ClientAddr) and what the stream's `tracing` span
    /// shows (see the [`client_addr`](crate::client_addr) module).
    ///
    /// Behind nginx or Caddy on the same host, trust `127.0.0.1/32` and `::1/128` (nginx
    /// needs `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`; Caddy sets it
    /// by itself). Behind a cloud load balancer, trust the ranges its health checks and
    /// traffic come from (its documentation lists them; a VPC's private range is typical).
    /// Trust only what clients cannot reach past: a trusted range that any client can connect
    /// from lets it choose the address it is counted by.
    ///
    /// ```
    /// use sse_runtime::client_addr::Cidr;
    ///
    /// let manager = sse_runtime::Manager::builder()
    ///     .trusted_proxies(["127.0.0.1/32", "::1/128"].map(|r| r.parse::<Cidr>().unwrap()))
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn trusted_proxies(mut self, ranges: impl IntoIterator<Item = Cidr>) -> Self {
        self.trusted_proxies = TrustedProxies::new(ranges);
        self
    }

    /// Most subscribers of one topic (default: as many as [`max_streams`](Self::max_streams)
    /// allows). Over it: `503` with `Retry-After`.
    pub fn max_subscribers_per_topic(mut self, subscribers: usize) -> Self {
        self.caps.subscribers_per_topic = subscribers;
        self
    }

    /// Most live topics (default 10 000). A subscription that would create one more gets `503`
    /// with `Retry-After`; subscribers of existing topics are still served. Each live topic
    /// keeps up to [`history`](Self::history) events for resume, so this times
    /// [`history_bytes`](Self::history_bytes) bounds the memory that topics can hold.
    pub fn max_topics(mut self, topics: usize) -> Self {
        self.caps.topics = topics;
        self
    }

    /// Most pollers running at once (default 1 000), lingering ones included. A subscription
    /// that would start one more gets `503` with `Retry-After`. With pollers of interval `i`,
    /// this bounds the polls a second at `max_pollers / i`.
    pub fn max_pollers(mut self, pollers: usize) -> Self {
        self.caps.pollers = pollers;
        self
    }

    /// Most running pollers that one client started (default 100), lingering ones included: a
    /// subscription of that client that would start one more gets `429` with `Retry-After`
    /// (joining a running poller is always allowed). A poller queries the application's
    /// backend on every interval for as long as anyone is subscribed, so one client must not
    /// be able to take the whole of [`max_pollers`](Self::max_pollers). The client is its
    /// [`ClientAddr`](crate::ClientAddr): behind a proxy, set
    /// [`trusted_proxies`](Self::trusted_proxies), or every client counts as the proxy.
    pub fn max_pollers_per_client(mut self, pollers: usize) -> Self {
        self.caps.pollers_per_client = pollers;
        self
    }

    /// Most histories kept for resume after their topic emptied (default 10 000), and most
    /// bytes of events in them (default 64 MiB). Over either, the histories that would expire
    /// first are dropped early: a client resuming from one gets a `reset` event, never a
    /// silent gap. `0` keeps none.
    pub fn max_retained(mut self, histories: usize, bytes: usize) -> Self {
        self.caps.retained = histories;
        self.caps.retained_bytes = bytes;
        self
    }

    /// Runs the manager as one hub with every other instance on the same broker: ids, history
    /// and fan-out go through the broker, polled topics are polled by one instance at a time.
    /// See [`backplane`](crate::backplane). The manager must then be built inside a tokio
    /// runtime.
    ///
    /// ```no_run
    /// # #[cfg(feature = "redis")]
    /// # #[tokio::main] async fn main() {
    /// use sse_runtime::{Manager, backplane::Backplane};
    ///
    /// let manager = Manager::builder()
    ///     .backplane(Backplane::redis("redis://127.0.0.1:6379").unwrap())
    ///     .build()
    ///     .unwrap();
    /// # }
    /// # #[cfg(not(feature = "redis"))] fn main() {}
    /// ```
    pub fn backplane(mut self, backplane: Backplane) -> Self {
        self.backplane = Some(backplane);
        self
    }

    /// Checks the settings and builds the manager.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first setting that is out of range, with its value.
    pub fn build(self) -> Result<Manager, ConfigError> {
        let config = Config {
            stream: self.stream,
            limits: self.limits,
            caps: self.caps,
            linger: self.linger,
            token: self.token.unwrap_or_default(),
            trusted_proxies: self.trusted_proxies,
            refusals: self.refusals,
        };
        config.validate()?;
        if self.backplane.is_some() && tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::NoRuntime);
        }
        Ok(Manager::from_hub(Hub::new(config, self.backplane.as_ref())))
    }

    /// Builds the manager and makes it the global one, which [`router`](crate::router), the
    /// generated `publish_*` helpers and [`Manager::global`] use: the way to configure the
    /// macro routes (a heartbeat, a history, a [backplane](Self::backplane)). Call it once at
    /// start-up, before any of those; the global manager is never replaced.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sse_runtime::{Manager, config::ConfigError};
    ///
    /// let manager = Manager::builder().heartbeat(Duration::from_secs(5)).install()?;
    /// assert_eq!(manager.heartbeat(), Duration::from_secs(5));
    /// assert_eq!(Manager::global().heartbeat(), Duration::from_secs(5));
    ///
    /// // Once in place, it stays.
    /// let again = Manager::builder().install();
    /// assert_eq!(again.err(), Some(ConfigError::GlobalInUse));
    /// # Ok::<(), ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// What [`build`](Self::build) refuses, and [`ConfigError::GlobalInUse`] if the global
    /// manager already exists (installed before, or created with the defaults by an earlier
    /// use).
    pub fn install(self) -> Result<&'static Manager, ConfigError> {
        let manager = self.build()?;
        // A refused manager never served anything; dropping it cancels its own token.
        super::install_global(manager).map_err(|_refused| ConfigError::GlobalInUse)
    }
}
