//! The public facade: [`Manager`] and its [`ManagerBuilder`].
//!
//! A manager is a handle on the shared registry state (`hub`); everything it does is one call
//! into it, so every clone, every [`Subscription`] and every poller sees the same topics.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::hub::Hub;
use crate::producer;
use crate::publish::{Outcome, PublishError};
use crate::stats::{Stats, TopicStats};
use crate::subscription::{SubscribeError, SubscribeOptions, Subscription};

mod builder;

pub use builder::ManagerBuilder;

/// Owns every topic of a service: subscribers join through it, publishers publish through it.
///
/// Cheap to clone (an `Arc`); all clones are the same manager. Bound to a
/// [`CancellationToken`](crate::CancellationToken): [`shutdown`](Self::shutdown) (or cancelling the parent token given to
/// [`ManagerBuilder::cancellation_token`]) ends every open stream.
///
/// ```
/// use sse_runtime::Manager;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let manager = Manager::new();
/// manager.publish("alarms", &"nobody listens: a no-op");
///
/// let mut sub = manager.subscribe("alarms").unwrap();
/// manager.publish("alarms", &serde_json::json!({"level": 3}));
/// let frame = sub.recv().await.unwrap();
/// assert!(frame.ends_with(b"data: {\"level\":3}\n\n"));
/// # }
/// ```
#[derive(Clone)]
pub struct Manager {
    hub: Arc<Hub>,
}

/// The global manager. Set once: by [`ManagerBuilder::install`], or with the defaults by the
/// first [`Manager::global`]; never replaced, so every route and helper sees the same one.
static GLOBAL: std::sync::OnceLock<Manager> = std::sync::OnceLock::new();

/// Set when [`router_with`](crate::routes::router_with) mounts the macro routes on a manager
/// other than the global one: from then on, a generated `publish_*` helper (which publishes into
/// the global manager) is reported unless the global manager serves the routes too.
static MACRO_ROUTES_ELSEWHERE: AtomicBool = AtomicBool::new(false);

/// Makes `manager` the global one; gives it back if the global manager already exists.
pub(crate) fn install_global(manager: Manager) -> Result<&'static Manager, Manager> {
    GLOBAL.set(manager)?;
    Ok(Manager::global())
}

impl Manager {
    /// A manager with the default settings: 30 s heartbeat, default history and lag limits.
    pub fn new() -> Self {
        Self::builder().build().expect("defaults are valid")
    }

    /// The process-wide manager that [`router`](crate::router) and the generated
    /// `publish_*` helpers use: the one [`ManagerBuilder::install`] put in place, or else one
    /// with the defaults, created on first use.
    pub fn global() -> &'static Manager {
        GLOBAL.get_or_init(Manager::new)
    }

    /// A builder for non-default settings.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    pub(crate) fn from_hub(hub: Hub) -> Self {
        Self { hub: Arc::new(hub) }
    }

    pub(crate) fn counters(&self) -> &crate::stats::Counters {
        &self.hub.counters
    }

    /// Records that the macro routes are mounted on this manager.
    pub(crate) fn mark_serving_macro_routes(&self) {
        self.hub.serves_macro_routes.store(true, Ordering::Relaxed);
        if !GLOBAL
            .get()
            .is_some_and(|global| Arc::ptr_eq(&global.hub, &self.hub))
        {
            MACRO_ROUTES_ELSEWHERE.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a generated `publish_*` helper publishing into this manager (the global one)
    /// reaches no route: the macro routes were mounted on another manager and never on this
    /// one.
    pub(crate) fn misses_macro_routes(&self) -> bool {
        MACRO_ROUTES_ELSEWHERE.load(Ordering::Relaxed)
            && !self.hub.serves_macro_routes.load(Ordering::Relaxed)
    }

    /// How the stream routes answer a refused subscription.
    pub(crate) fn refusals(&self) -> crate::refusal::Refusals {
        self.hub.config.refusals
    }

    /// Interval of heartbeats on idle streams.
    pub fn heartbeat(&self) -> Duration {
        self.hub.config.stream.heartbeat
    }

    /// The client of a request from `peer` with `headers`: `peer`, or, when it is one of the
    /// [`trusted_proxies`](crate::manager::ManagerBuilder::trusted_proxies), the client it
    /// forwarded. What the SSE routes count and give guards as
    /// [`ClientAddr`](crate::ClientAddr); for handlers of your own (see the
    /// [`client_addr`](crate::client_addr) module for an example).
    pub fn client_addr(
        &self,
        peer: std::net::IpAddr,
        headers: &http::HeaderMap,
    ) -> std::net::IpAddr {
        self.hub.config.trusted_proxies.client(peer, headers)
    }

    /// Publishes `value` to every current subscriber of `topic`.
    ///
    /// Fire-and-forget: returns nothing and never waits for a subscriber. `value` is
    /// serialized once, however many subscribers there are; if it cannot be serialized, or its
    /// frame is over [`max_event_bytes`](ManagerBuilder::max_event_bytes), the error is logged
    /// and counted and the event skipped.
    ///
    /// While the topic has no subscriber but still has a retained history (its last subscriber
    /// left less than the [retention](ManagerBuilder::retention) time ago), the event is
    /// recorded there, so a client that reconnects with its `Last-Event-ID` gets it. With
    /// neither, publishing does nothing at all (two map lookups under a read lock; `value` is
    /// not even serialized).
    ///
    /// With a [backplane](crate::backplane), the event waits in a bounded queue (see
    /// [`Backplane::queue`](crate::backplane::Backplane::queue)) for the broker, which
    /// decides its id. A publisher that outruns the broker long enough to fill that queue
    /// loses the events beyond it (logged, and counted in `Stats::backplane.overflows`); one
    /// that must not outrun it awaits [`publish_confirmed`](Self::publish_confirmed) instead,
    /// which gives back-pressure.
    pub fn publish<T: Serialize + ?Sized>(&self, topic: &str, value: &T) {
        self.publish_event(topic, None, value);
    }

    /// Like [`publish`](Self::publish), with an SSE event name (the `event:` field, which the
    /// browser dispatches to `addEventListener(name, ...)` instead of `onmessage`).
    pub fn publish_event<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: Option<&str>,
        value: &T,
    ) {
        let counters = &self.hub.counters;
        self.hub
            .publish(topic, event, || producer::encode(counters, topic, value));
    }

    /// Publishes data that is already encoded (for example JSON received from elsewhere). Lines
    /// of `data` become `data:` lines of the event.
    pub fn publish_raw(&self, topic: &str, event: Option<&str>, data: impl Into<Bytes>) {
        self.hub.publish(topic, event, || Ok(data.into()));
    }

    /// Publishes `value` to `topic` and waits for what became of it: the id it was sent
    /// under, or why not. In-process this answers at once; with a
    /// [`backplane`](crate::backplane) it takes one broker round trip, and never longer than
    /// the broker's response timeout.
    ///
    /// ```
    /// use sse_runtime::{Manager, publish::Outcome};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let manager = Manager::new();
    /// let _sub = manager.subscribe("t").unwrap();
    /// let Ok(Outcome::Sent(id)) = manager.publish_confirmed("t", &"hello").await else {
    ///     panic!("a subscribed topic records the event");
    /// };
    /// assert_eq!(manager.topics()[0].last_event_id, Some(id));
    /// # }
    /// ```
    pub async fn publish_confirmed<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<Outcome, PublishError> {
        self.publish_event_confirmed(topic, None, value).await
    }

    /// [`publish_confirmed`](Self::publish_confirmed) with an event name.
    pub async fn publish_event_confirmed<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: Option<&str>,
        value: &T,
    ) -> Result<Outcome, PublishError> {
        let counters = &self.hub.counters;
        self.hub
            .publish_confirmed(topic, event, || producer::encode(counters, topic, value))
            .await
    }

    /// Subscribes to `topic`, creating its broadcaster if this is the first subscriber.
    ///
    /// # Errors
    /// [`SubscribeError::ShutDown`] after [`shutdown`](Self::shutdown); the others when a cap
    /// set on the [builder](ManagerBuilder) is reached (nothing is created then).
    pub fn subscribe(&self, topic: &str) -> Result<Subscription, SubscribeError> {
        self.subscribe_with(topic, SubscribeOptions::new())
    }

    /// Subscribes with options: a poller to start if this subscriber creates the broadcaster,
    /// change detection for a new broadcaster, and where to resume.
    ///
    /// The poller is only used when this call creates the broadcaster; otherwise the topic
    /// already has one (or deliberately none) and the given one is dropped unstarted.
    ///
    /// # Errors
    /// [`SubscribeError::ShutDown`] after [`shutdown`](Self::shutdown); the others when a cap
    /// set on the [builder](ManagerBuilder) is reached (nothing is created then, and the
    /// refusal is counted in [`Stats::refused`]).
    pub fn subscribe_with(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, SubscribeError> {
        Subscription::join(&self.hub, topic, options)
    }

    /// Ends every open stream and refuses new subscribers. Pollers are stopped as their topics
    /// close. Idempotent.
    pub fn shutdown(&self) {
        self.hub.shut_down();
    }

    /// Whether [`shutdown`](Self::shutdown) was called (or the parent token cancelled).
    pub fn is_shut_down(&self) -> bool {
        self.hub.is_shut_down()
    }

    /// Counts of topics, subscribers and pollers, and event counters. Cheap: a read lock for
    /// the topic count and atomic loads.
    pub fn stats(&self) -> Stats {
        self.hub.stats()
    }

    /// One entry per live topic, sorted by name.
    pub fn topics(&self) -> Vec<TopicStats> {
        self.hub.topics()
    }

    /// Restarts the poller of `topic` while the topic is open (it has subscribers, or lingers):
    /// one that stopped (its stop condition held: a build that finished, then was re-run) polls
    /// again, at once and then on its interval, and its topic's streams, if
    /// [`end_on_stop`](crate::polling::Polling::end_on_stop) ended them, no longer end. One
    /// still running is stopped and started again. Whether the topic has a poller to restart;
    /// `false` for a topic that is not open (its next subscriber starts a poller anyway) or is
    /// not polled.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use sse_runtime::{Manager, PollError, polling::Polling, subscription::SubscribeOptions};
    ///
    /// static RUNS: AtomicU32 = AtomicU32::new(0);
    /// let manager = Manager::new();
    /// // Each run yields a new value: a polled topic skips a value identical to the last.
    /// let polling = Polling::new(|_| async { Ok::<_, PollError>(RUNS.fetch_add(1, Ordering::Relaxed)) })
    ///     .stop_when(|_: &u32| true);
    /// let mut sub = manager
    ///     .subscribe_with("build", SubscribeOptions::new().polling(polling))
    ///     .unwrap();
    /// sub.recv().await.unwrap(); // polled once, then stopped
    /// assert!(manager.restart_poller("build").await);
    /// sub.recv().await.unwrap(); // polled again
    /// assert_eq!(manager.stats().pollers_started, 2);
    /// assert!(!manager.restart_poller("nobody-listens").await);
    /// # }
    /// ```
    pub async fn restart_poller(&self, topic: &str) -> bool {
        self.hub.restart_poller(topic).await
    }

    /// Subscribers of `topic` right now (0 when it has no broadcaster).
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.hub.subscriber_count(topic)
    }

    /// Waits until `condition` holds for the current [`Stats`], re-checking on every lifecycle
    /// change (a topic, subscriber or poller coming or going), and returns those stats. For
    /// tests and readiness probes: no polling loop, no sleeps.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let manager = sse_runtime::Manager::new();
    /// let sub = manager.subscribe("t").unwrap();
    /// let waiting = manager.clone();
    /// let gone = tokio::spawn(async move { waiting.wait_until(|s| s.topics == 0).await });
    /// drop(sub);
    /// assert_eq!(gone.await.unwrap().subscribers, 0);
    /// # }
    /// ```
    pub async fn wait_until(&self, mut condition: impl FnMut(&Stats) -> bool) -> Stats {
        loop {
            let notified = self.hub.changed();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let stats = self.stats();
            if condition(&stats) {
                return stats;
            }
            notified.await;
        }
    }
}

impl Default for Manager {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("heartbeat", &self.hub.config.stream.heartbeat)
            .field("stats", &self.stats())
            .finish()
    }
}
