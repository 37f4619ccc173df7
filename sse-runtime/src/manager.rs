//! The topic registry: one broadcaster per topic, created by the first subscriber and removed
//! with the last.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{Config, ManagerBuilder};
use crate::polling::{PollingService, TopicPublisher};
use crate::stats::{Counters, Stats, TopicStats};
use crate::subscription::{SubscribeError, SubscribeOptions, Subscription};
use crate::topic::{History, Published, Recorded, Topic};

type Map<V> = HashMap<Arc<str>, V, foldhash::fast::RandomState>;

/// Live topics, and the histories of recently emptied ones.
#[derive(Default)]
struct Registry {
    live: Map<Arc<Topic>>,
    retained: Map<Retained>,
    /// When expired histories are next swept out.
    next_sweep: Option<Instant>,
}

struct Retained {
    /// Publishes to the emptied topic keep being recorded here (under the registry's read lock
    /// plus this one), so a client that comes back within the retention time gets them.
    history: Mutex<History>,
    until: Instant,
}

/// Where a publish by topic name goes.
enum Found {
    Live(Arc<Topic>),
    Retained,
    Nowhere,
}

impl Registry {
    /// Keeps an emptied topic's history until its retention time has passed.
    fn retain(&mut self, topic: &Topic, now: Instant) {
        let retention = topic.retention();
        if retention.is_zero() {
            return;
        }
        if let Some(history) = topic.take_history() {
            self.retained.insert(
                topic.name.clone(),
                Retained {
                    history: Mutex::new(history),
                    until: now + retention,
                },
            );
        }
        self.sweep(now);
    }

    /// The retained history of `name`, if it has not expired.
    fn revive(&mut self, name: &str, now: Instant) -> Option<History> {
        self.sweep(now);
        let retained = self.retained.remove(name)?;
        (retained.until > now).then(|| retained.history.into_inner())
    }

    /// Drops expired histories, at most once a second (a sweep walks them all).
    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|at| at > now) {
            return;
        }
        self.retained.retain(|_, retained| retained.until > now);
        self.next_sweep = Some(now + Duration::from_secs(1));
    }
}

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
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    /// Lookup-or-create plus registration, and unregistration plus removal, each happen under
    /// the write lock, so a topic is never removed while it has a subscriber and never exists
    /// twice. Publishing takes the read lock only for the lookup.
    topics: RwLock<Registry>,
    next_epoch: AtomicU64,
    pub(crate) counters: Counters,
    /// Signalled on every lifecycle change (topic, subscriber or poller count).
    changed: Notify,
    /// Whether the task relaying the parent token's cancellation has been spawned.
    watching: AtomicBool,
}

impl Manager {
    /// A manager with the default settings: 30 s heartbeat, default history and lag limits.
    pub fn new() -> Self {
        Self::builder().build().expect("defaults are valid")
    }

    /// The process-wide manager that [`router`](crate::router) and the generated
    /// `publish_*` helpers use. Created with the defaults on first use.
    pub fn global() -> &'static Manager {
        static GLOBAL: std::sync::LazyLock<Manager> = std::sync::LazyLock::new(Manager::new);
        &GLOBAL
    }

    /// A builder for non-default settings.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    pub(crate) fn from_config(mut config: Config) -> Self {
        // A child token: our own shutdown and our drop must not cancel the caller's token.
        config.token = config.token.child_token();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                config,
                topics: RwLock::new(Registry::default()),
                // Microseconds since 1970: later processes start above every epoch handed out
                // by earlier ones, unless one created a topic more often than once a microsecond.
                next_epoch: AtomicU64::new(now.as_micros() as u64),
                counters: Counters::default(),
                changed: Notify::new(),
                watching: AtomicBool::new(false),
            }),
        }
    }

    /// Interval of heartbeats on idle streams.
    pub fn heartbeat(&self) -> Duration {
        self.inner.config.heartbeat
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
        self.inner
            .publish_named(topic, event, || self.inner.encode(topic, value));
    }

    /// Publishes data that is already encoded (for example JSON received from elsewhere). Lines
    /// of `data` become `data:` lines of the event.
    pub fn publish_raw(&self, topic: &str, event: Option<&str>, data: impl Into<Bytes>) {
        self.inner.publish_named(topic, event, || Some(data.into()));
    }

    /// Subscribes to `topic`, creating its broadcaster if this is the first subscriber.
    ///
    /// # Errors
    /// [`SubscribeError::ShutDown`] after [`shutdown`](Self::shutdown).
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
    /// [`SubscribeError::ShutDown`] after [`shutdown`](Self::shutdown).
    pub fn subscribe_with(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, SubscribeError> {
        let inner = &self.inner;
        inner.watch_parent_token();
        let start = options.start();
        let (topic, key, subscriber, joined, poller) = {
            let mut topics = inner.topics.write();
            if inner.config.token.is_cancelled() {
                return Err(SubscribeError::ShutDown);
            }
            let (topic, created) = match topics.live.get(topic) {
                Some(existing) => (existing.clone(), false),
                None => {
                    let name: Arc<str> = Arc::from(topic);
                    let history = topics.revive(&name, Instant::now());
                    let created = Arc::new(Topic::new(
                        name.clone(),
                        inner.next_epoch.fetch_add(1, Ordering::Relaxed),
                        options.change_detection_or_default(),
                        options.limits(inner.config.limits),
                        options.polling.clone(),
                        history,
                    ));
                    topics.live.insert(name, created.clone());
                    (created, true)
                }
            };
            let (key, subscriber, joined) = topic.subscribe(start);
            inner.counters.subscribers.fetch_add(1, Ordering::Relaxed);
            let poller = if created { options.polling } else { None };
            (topic, key, subscriber, joined, poller)
        };
        // Started after the registry lock is released (start may spawn, log, allocate). The
        // broadcaster cannot be removed before: this subscription is one of its subscribers and
        // is not handed out yet.
        if let Some(poller) = poller {
            inner.counters.pollers.fetch_add(1, Ordering::Relaxed);
            inner
                .counters
                .pollers_started
                .fetch_add(1, Ordering::Relaxed);
            poller.start(TopicPublisher::new(&topic, inner));
        }
        inner.changed.notify_waiters();
        tracing::debug!(topic = %topic.name, ?joined, "subscribed");
        Ok(Subscription::new(
            inner.clone(),
            topic,
            key,
            subscriber,
            joined,
        ))
    }

    /// Ends every open stream and refuses new subscribers. Pollers are stopped as their topics
    /// close. Idempotent.
    pub fn shutdown(&self) {
        self.inner.config.token.cancel();
        self.inner.close_all();
    }

    /// Whether [`shutdown`](Self::shutdown) was called (or the parent token cancelled).
    pub fn is_shut_down(&self) -> bool {
        self.inner.config.token.is_cancelled()
    }

    /// Counts of topics, subscribers and pollers, and event counters. Cheap: a read lock for
    /// the topic count and atomic loads.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// One entry per live topic, sorted by name.
    pub fn topics(&self) -> Vec<TopicStats> {
        let topics = self.inner.topics.read();
        let mut list: Vec<TopicStats> = topics
            .live
            .values()
            .map(|topic| {
                let (history_events, history_bytes) = topic.log_size();
                TopicStats {
                    name: topic.name.to_string(),
                    subscribers: topic.subscriber_count(),
                    polled: topic.has_poller(),
                    last_event_id: topic.last_id(),
                    history_events,
                    history_bytes,
                }
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Subscribers of `topic` right now (0 when it has no broadcaster).
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.inner
            .lookup(topic)
            .map_or(0, |topic| topic.subscriber_count())
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
            let notified = self.inner.changed.notified();
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
            .field("heartbeat", &self.inner.config.heartbeat)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Inner {
    fn lookup(&self, topic: &str) -> Option<Arc<Topic>> {
        self.topics.read().live.get(topic).cloned()
    }

    /// Where a publish to `name` goes: its live broadcaster, its retained history, or nowhere.
    fn find(&self, name: &str, now: Instant) -> Found {
        let topics = self.topics.read();
        if let Some(topic) = topics.live.get(name) {
            return Found::Live(topic.clone());
        }
        match topics.retained.get(name) {
            Some(retained) if retained.until > now => Found::Retained,
            _ => Found::Nowhere,
        }
    }

    /// Publishes to the topic called `name`, wherever its history is; `encode` runs only when
    /// the event will be recorded.
    fn publish_named(
        &self,
        name: &str,
        event: Option<&str>,
        encode: impl FnOnce() -> Option<Bytes>,
    ) {
        let now = Instant::now();
        let live = match self.find(name, now) {
            Found::Live(topic) => Some(topic),
            Found::Retained => None,
            Found::Nowhere => return,
        };
        let Some(mut data) = encode() else { return };
        if let Some(topic) = live {
            match topic.publish(event, data) {
                Published::Recorded(recorded) => return self.count(&topic.name, recorded),
                Published::Closed(returned) => data = returned,
            }
        }
        // The topic emptied (or came back) since the lookup. Under the registry's read lock its
        // history cannot move again: record the event wherever it is now.
        let topics = self.topics.read();
        if let Some(topic) = topics.live.get(name) {
            if let Published::Recorded(recorded) = topic.publish(event, data) {
                self.count(name, recorded);
            }
        } else if let Some(retained) = topics.retained.get(name).filter(|r| r.until > now) {
            let recorded = retained.history.lock().record(event, data);
            self.count(name, recorded);
        }
    }

    /// Serializes a payload; a failure is logged, counted and skipped.
    pub(crate) fn encode<T: Serialize + ?Sized>(&self, topic: &str, value: &T) -> Option<Bytes> {
        match serde_json::to_vec(value) {
            Ok(data) => Some(Bytes::from(data)),
            Err(error) => {
                self.counters
                    .serialize_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(%topic, %error, "event payload failed to serialize; skipped");
                None
            }
        }
    }

    /// Publishes to a topic's live broadcaster only (a poller's topic: once the topic has
    /// closed, its poller is stopping and what it still produces belongs to nobody).
    pub(crate) fn deliver(&self, topic: &Topic, event: Option<&str>, data: Bytes) {
        if let Published::Recorded(recorded) = topic.publish(event, data) {
            self.count(&topic.name, recorded);
        }
    }

    fn count(&self, topic: &str, recorded: Recorded) {
        match recorded {
            Recorded::Appended => {
                self.counters.published.fetch_add(1, Ordering::Relaxed);
            }
            Recorded::Duplicate => {
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            Recorded::TooLarge(size) => {
                self.counters.oversized.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%topic, size, "event over max_event_bytes; refused");
            }
        }
    }

    /// Unregisters a subscriber; the last one removes the broadcaster at once (so a concurrent
    /// publish or subscribe sees the fresh state) and stops its poller in the background.
    pub(crate) fn unsubscribe(self: &Arc<Self>, topic: &Arc<Topic>, key: usize) {
        let removed = {
            let mut topics = self.topics.write();
            let removed = topic.unsubscribe(key);
            if removed.emptied
                && topics
                    .live
                    .get(&topic.name)
                    .is_some_and(|current| Arc::ptr_eq(current, topic))
            {
                topics.live.remove(&topic.name);
                if !self.config.token.is_cancelled() {
                    topics.retain(topic, Instant::now());
                }
            }
            self.counters.subscribers.fetch_sub(1, Ordering::Relaxed);
            removed
        };
        if let Some(poller) = removed.poller {
            self.stop_poller(poller);
        }
        self.changed.notify_waiters();
        tracing::debug!(topic = %topic.name, emptied = removed.emptied, "unsubscribed");
    }

    fn stop_poller(self: &Arc<Self>, poller: Arc<dyn PollingService>) {
        let inner = self.clone();
        let stop = async move {
            poller.stop().await;
            inner.counters.pollers.fetch_sub(1, Ordering::Relaxed);
            inner
                .counters
                .pollers_stopped
                .fetch_add(1, Ordering::Relaxed);
            inner.changed.notify_waiters();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(stop);
            }
            Err(_) => tracing::warn!("no tokio runtime: a poller could not be stopped"),
        }
    }

    fn close_all(self: &Arc<Self>) {
        let topics: Vec<Arc<Topic>> = self.topics.read().live.values().cloned().collect();
        for topic in topics {
            if let Some(poller) = topic.close() {
                self.stop_poller(poller);
            }
        }
        self.changed.notify_waiters();
    }

    /// Relays a cancellation of the parent token to the open streams. Spawned lazily (the
    /// manager may be created outside a runtime, e.g. in a static) and ends with the manager.
    fn watch_parent_token(self: &Arc<Self>) {
        if self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let token = self.config.token.clone();
        let inner = Arc::downgrade(self);
        tokio::spawn(async move {
            token.cancelled().await;
            if let Some(inner) = inner.upgrade() {
                inner.close_all();
            }
        });
    }

    fn stats(&self) -> Stats {
        let topics = self.topics.read();
        let retained_bytes = topics
            .retained
            .values()
            .map(|r| r.history.lock().bytes())
            .sum();
        self.counters
            .snapshot(topics.live.len(), topics.retained.len(), retained_bytes)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ends the parent-token watcher; the child token is ours alone.
        self.config.token.cancel();
    }
}
