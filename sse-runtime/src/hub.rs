//! The state every handle of one manager shares: live topics with their pollers, the retained
//! histories of recently emptied ones, the counters and the shutdown token.
//!
//! Everything that must happen atomically with respect to the topic map happens here, under
//! one lock: a topic is created with its first subscriber and removed with its last, and a
//! publish that races the removal is recorded wherever the history went.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backplane::{Backplane, Broker, Leased};
use crate::config::{Caps, Config, HistoryOverrides};
use crate::producer::{self, PollingService, TopicPublisher};
use crate::publish::{Outcome, PublishError};
use crate::refusal::SubscribeError;
use crate::remote::Outgoing;
use crate::stats::{Counters, Stats, TopicStats};
use crate::telemetry::{self, GaugeShare};
use crate::topic::{History, Joined, Membership, Published, Recorded, ResetReason, Start, Topic};

type Map<V> = HashMap<Arc<str>, V, foldhash::fast::RandomState>;

pub(crate) struct Hub {
    pub(crate) config: Config,
    /// Lookup-or-create plus registration, and unregistration plus removal, each happen under
    /// the write lock, so a topic is never removed while it has a subscriber and never exists
    /// twice. Publishing takes the read lock only for the lookup. Lock order: this lock, then a
    /// topic's, then a retained history's.
    registry: RwLock<Registry>,
    /// The epoch of this hub's first broadcaster: ids from `first_epoch..next_epoch` were
    /// numbered here.
    first_epoch: u64,
    next_epoch: AtomicU64,
    pub(crate) counters: Arc<Counters>,
    /// Signalled on every lifecycle change (topic, subscriber or poller count).
    changed: Arc<Notify>,
    /// Whether the task relaying the parent token's cancellation has been spawned.
    watching: AtomicBool,
    /// Set by [`close_all`](Self::close_all) before it closes any topic, so that a stream
    /// whose topic closed can tell a shutdown from a closed topic. Streams check it on every
    /// poll: the token's own check locks a mutex that every stream would share.
    closing: AtomicBool,
    /// Whether [`router_with`](crate::routes::router_with) mounted the macro routes on this
    /// manager; read by the generated `publish_*` helpers to report a publish no route serves.
    pub(crate) serves_macro_routes: AtomicBool,
    /// With a backplane: the broker that numbers, records and fans out every event. Topics
    /// are then caches of the broker's, listened to while they have local subscribers.
    broker: Option<Arc<dyn Broker>>,
}

/// Live topics, and the histories of recently emptied ones.
#[derive(Default)]
struct Registry {
    live: Map<Live>,
    /// Live topics with a poller: what [`Caps::pollers`] caps.
    polled: usize,
    /// Open subscriptions per client address: what [`Caps::streams_per_client`] caps. An
    /// address leaves the map with its last subscription.
    clients: PerClient,
    /// Live polled topics per client address that created them: what
    /// [`Caps::pollers_per_client`] caps. Changed with `polled`, under this lock.
    starters: PerClient,
    retained: Map<Retained>,
    /// When expired histories are next swept out on activity.
    next_sweep: Option<Instant>,
    /// Whether the sweeper task runs. It runs while histories are retained and sets this back
    /// under this lock when it finds none, so a history retained meanwhile (under the same
    /// lock) always sees either a running sweeper or `false` and starts one.
    sweeper: bool,
}

/// A count per client address; an address leaves the map when its count is back to zero.
#[derive(Default)]
struct PerClient(HashMap<IpAddr, usize, foldhash::fast::RandomState>);

impl PerClient {
    fn add(&mut self, client: Option<IpAddr>) {
        if let Some(client) = client {
            *self.0.entry(client).or_default() += 1;
        }
    }

    fn remove(&mut self, client: Option<IpAddr>) {
        if let Some(client) = client
            && let Some(count) = self.0.get_mut(&client)
        {
            *count -= 1;
            if *count == 0 {
                self.0.remove(&client);
            }
        }
    }

    /// Whether `client` has `cap` or more.
    fn reached(&self, client: Option<IpAddr>, cap: usize) -> bool {
        client.is_some_and(|client| self.0.get(&client).is_some_and(|count| *count >= cap))
    }
}

struct Live {
    topic: Arc<Topic>,
    /// The producer started with the topic, stopped when it is removed (or at shutdown).
    poller: Option<Arc<dyn PollingService>>,
    /// Since when a polled topic has had no subscriber: it lingers, open with its poller
    /// running, until `idle_since + linger`. Cleared by every join.
    idle_since: Option<Instant>,
    /// Whether a linger task watches this topic; at most one does, whatever the churn.
    lingering: bool,
    /// The client whose subscription created this polled topic, counted in `starters`.
    started_by: Option<IpAddr>,
    /// Its share of the `sse_topics` gauge.
    _gauge: GaugeShare,
}

impl Live {
    fn new(
        topic: Arc<Topic>,
        poller: Option<Arc<dyn PollingService>>,
        started_by: Option<IpAddr>,
    ) -> Self {
        Self {
            topic,
            started_by: started_by.filter(|_| poller.is_some()),
            poller,
            idle_since: None,
            lingering: false,
            _gauge: GaugeShare::new(telemetry::TOPICS, 1.0),
        }
    }
}

struct Retained {
    /// Publishes to the emptied topic keep being recorded here (under the registry's read lock
    /// plus this one), so a client that comes back within the retention time gets them.
    history: Mutex<History>,
    until: Instant,
    /// Its bytes when retained, as its share of the `sse_retained_bytes` gauge.
    _gauge: GaugeShare,
}

/// Where a publish by topic name goes.
enum Found {
    Live(Arc<Topic>),
    Retained,
    Nowhere,
}

/// What a subscriber asks for when it joins a topic; the broadcaster settings count only when
/// it creates the broadcaster.
pub(crate) struct Join {
    pub(crate) start: Start,
    pub(crate) change_detection: bool,
    pub(crate) history: HistoryOverrides,
    pub(crate) poller: Option<Arc<dyn PollingService>>,
    /// The client's address, counted against [`Caps::streams_per_client`].
    pub(crate) client: Option<IpAddr>,
}

impl Registry {
    /// Keeps an emptied topic's history until its retention time has passed, within the caps
    /// on retained histories: over them, those that expire first go first. Returns how many
    /// were dropped early.
    fn retain(&mut self, topic: &Topic, now: Instant, caps: &Caps) -> u64 {
        if let Some((history, retention)) = topic.take_history() {
            let bytes = history.bytes() as f64;
            self.retained.insert(
                topic.name.clone(),
                Retained {
                    history: Mutex::new(history),
                    until: now + retention,
                    _gauge: GaugeShare::new(telemetry::RETAINED_BYTES, bytes),
                },
            );
        }
        self.sweep(now);
        self.evict(caps)
    }

    /// Drops the soonest-expiring retained histories until both caps hold.
    fn evict(&mut self, caps: &Caps) -> u64 {
        let bytes = |retained: &Map<Retained>| -> usize {
            retained.values().map(|r| r.history.lock().bytes()).sum()
        };
        let mut total = bytes(&self.retained);
        if self.retained.len() <= caps.retained && total <= caps.retained_bytes {
            return 0;
        }
        let mut by_expiry: Vec<(Instant, Arc<str>)> = self
            .retained
            .iter()
            .map(|(name, r)| (r.until, name.clone()))
            .collect();
        by_expiry.sort_unstable();
        let mut evicted = 0;
        for (_, name) in by_expiry {
            if self.retained.len() <= caps.retained && total <= caps.retained_bytes {
                break;
            }
            if let Some(gone) = self.retained.remove(&name) {
                total -= gone.history.into_inner().bytes();
                evicted += 1;
            }
        }
        evicted
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
        self.drop_expired(now);
        self.next_sweep = Some(now + Duration::from_secs(1));
    }

    /// Drops the histories expired at `now`; whether there were any.
    fn drop_expired(&mut self, now: Instant) -> bool {
        let before = self.retained.len();
        self.retained.retain(|_, retained| retained.until > now);
        self.retained.len() < before
    }
}

impl Hub {
    /// A hub over `backplane`, if given (whose engine starts here: inside a tokio runtime).
    pub(crate) fn new(mut config: Config, backplane: Option<&Backplane>) -> Self {
        // A child token: our own shutdown and our drop must not cancel the caller's token.
        config.token = config.token.child_token();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let counters = Arc::<Counters>::default();
        let changed = Arc::new(Notify::new());
        Self {
            config,
            registry: RwLock::new(Registry::default()),
            // Microseconds since 1970: later processes start above every epoch handed out by
            // earlier ones, unless one created a topic more often than once a microsecond.
            first_epoch: now.as_micros() as u64,
            next_epoch: AtomicU64::new(now.as_micros() as u64),
            broker: backplane.map(|backplane| backplane.connect(counters.clone(), changed.clone())),
            counters,
            changed,
            watching: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            serves_macro_routes: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.config.token.is_cancelled()
    }

    /// Whether the hub is shut down and closing (or has closed) its topics: what a stream
    /// checks on every poll, without a lock.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Registers a subscriber of `name`, creating its broadcaster (and starting its poller)
    /// if it is the first.
    pub(crate) fn join(
        self: &Arc<Self>,
        name: &str,
        join: Join,
    ) -> Result<(Arc<Topic>, Membership), SubscribeError> {
        self.watch_parent_token();
        let (topic, membership, poller) = {
            let mut registry = self.registry.write();
            if self.is_shut_down() {
                return Err(SubscribeError::ShutDown);
            }
            if let Err(refused) = self.admit(&registry, name, &join) {
                self.counters.refused(refused);
                drop(registry);
                tracing::debug!(topic = name, %refused, "subscription refused");
                return Err(refused);
            }
            registry.clients.add(join.client);
            if join.poller.is_some() && !registry.live.contains_key(name) {
                registry.polled += 1;
                registry.starters.add(join.client);
            }
            let (topic, poller) = match registry.live.get_mut(name) {
                Some(live) => {
                    // A lingering topic is live again, its poller still running.
                    live.idle_since = None;
                    (live.topic.clone(), None)
                }
                None if self.broker.is_some() => {
                    let broker = self.broker.as_ref().expect("checked");
                    let name: Arc<str> = Arc::from(name);
                    let limits = join.history.apply(self.config.limits);
                    let topic =
                        Arc::new(Topic::unsynced(name.clone(), join.change_detection, limits));
                    // Ordered with the unwatch of a previous incarnation by the registry lock.
                    broker.watch(&topic);
                    let poller = join.poller.map(|poller| {
                        Arc::new(Leased::new(poller, broker.clone())) as Arc<dyn PollingService>
                    });
                    registry
                        .live
                        .insert(name, Live::new(topic.clone(), poller.clone(), join.client));
                    (topic, poller)
                }
                None => {
                    let name: Arc<str> = Arc::from(name);
                    let limits = join.history.apply(self.config.limits);
                    let history = match registry.revive(&name, Instant::now()) {
                        Some(history) => history.continued(join.change_detection, limits),
                        None => History::new(
                            self.next_epoch.fetch_add(1, Ordering::Relaxed),
                            join.change_detection,
                            limits,
                        ),
                    };
                    let topic = Arc::new(Topic::new(name.clone(), history));
                    registry.live.insert(
                        name,
                        Live::new(topic.clone(), join.poller.clone(), join.client),
                    );
                    (topic, join.poller)
                }
            };
            let mut membership = topic.subscribe(join.start);
            if self.broker.is_none() {
                membership.joined = membership
                    .joined
                    .map(|joined| self.explain(join.start, joined));
            }
            self.counters.subscribers.fetch_add(1, Ordering::Relaxed);
            (topic, membership, poller)
        };
        // Started after the registry lock is released (start may spawn, log, allocate). The
        // broadcaster cannot be removed before: this subscriber is one of its subscribers and
        // is not handed out yet.
        if let Some(poller) = poller {
            self.counters.pollers.fetch_add(1, Ordering::Relaxed);
            telemetry::pollers(1.0);
            self.counters
                .pollers_started
                .fetch_add(1, Ordering::Relaxed);
            poller.start(TopicPublisher::new(&topic, &self.counters));
        }
        self.changed.notify_waiters();
        tracing::debug!(topic = %topic.name, joined = ?membership.joined, "subscribed");
        Ok((topic, membership))
    }

    /// A reset for an epoch the topic does not have, told apart: one this hub numbered is a
    /// history that expired here, any other is from another process or server.
    fn explain(&self, start: Start, joined: Joined) -> Joined {
        match (start, joined) {
            (
                Start::After(id),
                Joined::Reset {
                    reason: ResetReason::UnknownEpoch,
                    continue_from,
                },
            ) if (self.first_epoch..self.next_epoch.load(Ordering::Relaxed))
                .contains(&id.epoch()) =>
            {
                Joined::Reset {
                    reason: ResetReason::HistoryExpired,
                    continue_from,
                }
            }
            _ => joined,
        }
    }

    /// Whether a cap refuses `join` to `name`. Under the registry's write lock, where every
    /// count it reads is changed, so a cap is never overshot by a race.
    fn admit(&self, registry: &Registry, name: &str, join: &Join) -> Result<(), SubscribeError> {
        let caps = &self.config.caps;
        if self.counters.subscribers.load(Ordering::Relaxed) >= caps.streams {
            return Err(SubscribeError::TooManyStreams);
        }
        if registry
            .clients
            .reached(join.client, caps.streams_per_client)
        {
            return Err(SubscribeError::TooManyFromClient);
        }
        match registry.live.get(name) {
            Some(live) if live.topic.subscriber_count() >= caps.subscribers_per_topic => {
                Err(SubscribeError::TooManySubscribers)
            }
            Some(_) => Ok(()),
            None if registry.live.len() >= caps.topics => Err(SubscribeError::TooManyTopics),
            None if join.poller.is_some() && registry.polled >= caps.pollers => {
                Err(SubscribeError::TooManyPollers)
            }
            None if join.poller.is_some()
                && registry
                    .starters
                    .reached(join.client, caps.pollers_per_client) =>
            {
                Err(SubscribeError::TooManyPollersFromClient)
            }
            None => Ok(()),
        }
    }

    /// Unregisters a subscriber. The last one of an unpolled topic removes the broadcaster at
    /// once (so a concurrent publish or subscribe sees the fresh state), keeping its history
    /// for the retention time; the last one of a polled topic leaves it lingering with its
    /// poller for the manager's linger time, then the same happens unless someone joined.
    pub(crate) fn leave(self: &Arc<Self>, topic: &Arc<Topic>, key: usize, client: Option<IpAddr>) {
        let (emptied, poller) = {
            let mut registry = self.registry.write();
            // `Some(polled)` while `topic` is the current broadcaster of its name.
            let polled = registry
                .live
                .get(&topic.name)
                .filter(|live| Arc::ptr_eq(&live.topic, topic))
                .map(|live| live.poller.is_some());
            let current = polled.is_some();
            let linger =
                polled == Some(true) && !self.config.linger.is_zero() && !self.is_shut_down();
            let emptied = topic.unsubscribe(key, linger);
            self.counters.subscribers.fetch_sub(1, Ordering::Relaxed);
            registry.clients.remove(client);
            let mut poller = None;
            if emptied && linger {
                let now = Instant::now();
                let live = registry
                    .live
                    .get_mut(&topic.name)
                    .expect("checked: current");
                live.idle_since = Some(now);
                if !live.lingering {
                    live.lingering = self.start_linger(topic.clone(), now + self.config.linger);
                    if !live.lingering {
                        // No runtime to time the linger: the topic goes at once.
                        topic.close_if_idle();
                        poller = self.remove(&mut registry, topic);
                    }
                }
            } else if emptied && current {
                poller = self.remove(&mut registry, topic);
            }
            (emptied, poller)
        };
        if let Some(poller) = poller {
            self.stop_poller(poller);
        }
        self.changed.notify_waiters();
        tracing::debug!(topic = %topic.name, emptied, "unsubscribed");
    }

    /// Removes the closed, current broadcaster of `topic` from the registry: the broker stops
    /// listening, or its history is retained. Returns its poller, to be stopped.
    fn remove(
        self: &Arc<Self>,
        registry: &mut Registry,
        topic: &Arc<Topic>,
    ) -> Option<Arc<dyn PollingService>> {
        let live = registry.live.remove(&topic.name)?;
        if live.poller.is_some() {
            registry.polled -= 1;
        }
        registry.starters.remove(live.started_by);
        if let Some(broker) = &self.broker {
            // The broker keeps the history; this instance stops listening.
            broker.unwatch(topic);
        } else if !self.is_shut_down() {
            let evicted = registry.retain(topic, Instant::now(), &self.config.caps);
            if evicted > 0 {
                self.counters
                    .retained_evicted
                    .fetch_add(evicted, Ordering::Relaxed);
                tracing::debug!(evicted, "retained histories dropped early, over the cap");
            }
            if !registry.sweeper && !registry.retained.is_empty() {
                registry.sweeper = self.start_sweeper();
            }
        }
        live.poller
    }

    /// Starts the task that ends the linger of a polled topic: at `at`, or later if it was
    /// emptied again meanwhile, it removes the topic and stops its poller, unless a subscriber
    /// joined. Called under the registry's write lock; false outside a tokio runtime.
    fn start_linger(self: &Arc<Self>, topic: Arc<Topic>, at: Instant) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let hub = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut at = at;
            let poller = loop {
                tokio::time::sleep_until(at).await;
                let Some(hub) = hub.upgrade() else { return };
                let mut registry = hub.registry.write();
                let Some(live) = registry
                    .live
                    .get_mut(&topic.name)
                    .filter(|live| Arc::ptr_eq(&live.topic, &topic))
                else {
                    return;
                };
                match live.idle_since {
                    Some(since) if since + hub.config.linger > Instant::now() => {
                        at = since + hub.config.linger;
                    }
                    Some(_) if topic.close_if_idle() => {
                        let poller = hub.remove(&mut registry, &topic);
                        drop(registry);
                        break (hub, poller);
                    }
                    _ => {
                        live.lingering = false;
                        return;
                    }
                }
            };
            let (hub, poller) = poller;
            if let Some(poller) = poller {
                hub.stop_poller(poller);
            }
            hub.changed.notify_waiters();
            tracing::debug!(topic = %topic.name, "lingering poller stopped");
        });
        true
    }

    /// Starts the task that drops expired histories on a timer (at most once a second), so they
    /// go even if nobody subscribes again; it ends when none is left, or with the hub. Called
    /// under the registry's write lock; false outside a tokio runtime (the histories are then
    /// swept on activity only).
    fn start_sweeper(self: &Arc<Self>) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let hub = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let Some(hub) = hub.upgrade() else { return };
                let now = Instant::now();
                let (next, swept) = {
                    let mut registry = hub.registry.write();
                    let swept = registry.drop_expired(now);
                    let next = registry.retained.values().map(|r| r.until).min();
                    registry.sweeper = next.is_some();
                    (next, swept)
                };
                if swept {
                    hub.changed.notify_waiters();
                }
                let Some(next) = next else { return };
                drop(hub);
                let at = next.max(now + Duration::from_secs(1));
                tokio::time::sleep_until(at).await;
            }
        });
        true
    }

    /// Publishes to the topic called `name`, wherever its history is (with a backplane: through
    /// the broker, fire-and-forget); `encode` runs only when the event will be recorded.
    pub(crate) fn publish(
        &self,
        name: &str,
        event: Option<&str>,
        encode: impl FnOnce() -> Result<Bytes, PublishError>,
    ) {
        match &self.broker {
            Some(broker) => {
                if let Ok(message) = self.outgoing(name, event, encode) {
                    broker.publish(message);
                }
            }
            None => {
                let _ = self.publish_here(name, event, encode);
            }
        }
    }

    /// Publishes and reports what became of the event.
    pub(crate) async fn publish_confirmed(
        &self,
        name: &str,
        event: Option<&str>,
        encode: impl FnOnce() -> Result<Bytes, PublishError>,
    ) -> Result<Outcome, PublishError> {
        match &self.broker {
            Some(broker) => {
                let message = self.outgoing(name, event, encode)?;
                broker.publish_confirmed(message).await
            }
            None => self.publish_here(name, event, encode),
        }
    }

    /// An event for the broker, under the settings of the local topic if there is one (else
    /// the manager's). An event over the size limit is counted and refused here.
    fn outgoing(
        &self,
        name: &str,
        event: Option<&str>,
        encode: impl FnOnce() -> Result<Bytes, PublishError>,
    ) -> Result<Outgoing, PublishError> {
        let live = self.registry.read().live.get(name).map(|l| l.topic.clone());
        let settings = match &live {
            Some(topic) => topic.settings(),
            None => (false, self.config.limits),
        };
        let data = encode()?;
        let topic = live.map_or_else(|| Arc::from(name), |topic| topic.name.clone());
        producer::outgoing(&self.counters, topic, event, &data, settings)
    }

    /// Publishes in this process: to the live topic, or its retained history, or nowhere.
    fn publish_here(
        &self,
        name: &str,
        event: Option<&str>,
        encode: impl FnOnce() -> Result<Bytes, PublishError>,
    ) -> Result<Outcome, PublishError> {
        let now = Instant::now();
        let live = match self.find(name, now) {
            Found::Live(topic) => Some(topic),
            Found::Retained => None,
            Found::Nowhere => return Ok(Outcome::Unwatched),
        };
        let mut data = encode()?;
        if let Some(topic) = live {
            match topic.publish(event, data) {
                Published::Recorded(recorded) => return self.recorded(name, recorded),
                Published::Closed(returned) => data = returned,
            }
        }
        // The topic emptied (or came back) since the lookup. Under the registry's read lock its
        // history cannot move again: record the event wherever it is now.
        let registry = self.registry.read();
        if let Some(live) = registry.live.get(name) {
            if let Published::Recorded(recorded) = live.topic.publish(event, data) {
                return self.recorded(name, recorded);
            }
        } else if let Some(retained) = registry.retained.get(name).filter(|r| r.until > now) {
            let recorded = retained.history.lock().record(event, data);
            return self.recorded(name, recorded);
        }
        Ok(Outcome::Unwatched)
    }

    /// Counts what became of a recorded event, as an outcome.
    fn recorded(&self, name: &str, recorded: Recorded) -> Result<Outcome, PublishError> {
        producer::tally(&self.counters, name, recorded);
        match recorded {
            Recorded::Appended(id) => Ok(Outcome::Sent(id)),
            Recorded::Duplicate => Ok(Outcome::Duplicate),
            Recorded::TooLarge(size) => Err(PublishError::TooLarge {
                size,
                limit: self.config.limits.max_event_bytes,
            }),
        }
    }

    /// Where a publish to `name` goes: its live broadcaster, its retained history, or nowhere.
    fn find(&self, name: &str, now: Instant) -> Found {
        let registry = self.registry.read();
        if let Some(live) = registry.live.get(name) {
            return Found::Live(live.topic.clone());
        }
        match registry.retained.get(name) {
            Some(retained) if retained.until > now => Found::Retained,
            _ => Found::Nowhere,
        }
    }

    /// [`Manager::shutdown`](crate::Manager::shutdown): no new subscription, every topic closed.
    pub(crate) fn shut_down(self: &Arc<Self>) {
        self.config.token.cancel();
        self.close_all();
    }

    /// Closes every topic (shutdown): their subscribers end, their pollers stop.
    pub(crate) fn close_all(self: &Arc<Self>) {
        self.closing.store(true, Ordering::Release);
        let pollers: Vec<Arc<dyn PollingService>> = {
            let mut registry = self.registry.write();
            let pollers: Vec<_> = registry
                .live
                .values_mut()
                .filter_map(|live| {
                    live.topic.close();
                    if let Some(broker) = &self.broker {
                        broker.unwatch(&live.topic);
                    }
                    live.poller.take()
                })
                .collect();
            registry.polled -= pollers.len();
            pollers
        };
        for poller in pollers {
            self.stop_poller(poller);
        }
        self.changed.notify_waiters();
    }

    fn stop_poller(self: &Arc<Self>, poller: Arc<dyn PollingService>) {
        let hub = self.clone();
        let stop = async move {
            poller.stop().await;
            hub.counters.pollers.fetch_sub(1, Ordering::Relaxed);
            telemetry::pollers(-1.0);
            hub.counters.pollers_stopped.fetch_add(1, Ordering::Relaxed);
            hub.changed.notify_waiters();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(stop);
            }
            Err(_) => tracing::warn!("no tokio runtime: a poller could not be stopped"),
        }
    }

    /// Relays a cancellation of the parent token to the open streams. Spawned lazily (the
    /// manager may be created outside a runtime, e.g. in a static) and ends with the hub.
    /// Outside a runtime nothing is spawned; the next join inside one tries again.
    fn watch_parent_token(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let token = self.config.token.clone();
        let hub = Arc::downgrade(self);
        runtime.spawn(async move {
            token.cancelled().await;
            if let Some(hub) = hub.upgrade() {
                hub.close_all();
            }
        });
    }

    /// A future that completes at the next lifecycle change; enable it before checking.
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    pub(crate) fn stats(&self) -> Stats {
        let registry = self.registry.read();
        let retained_bytes = registry
            .retained
            .values()
            .map(|r| r.history.lock().bytes())
            .sum();
        let mut stats =
            self.counters
                .snapshot(registry.live.len(), registry.retained.len(), retained_bytes);
        stats.backplane = self.broker.as_ref().map(|broker| {
            let mut backplane = broker.stats();
            backplane.synced = registry
                .live
                .values()
                .filter(|l| l.topic.is_synced())
                .count();
            backplane
        });
        stats
    }

    /// One entry per live topic, sorted by name.
    pub(crate) fn topics(&self) -> Vec<TopicStats> {
        let registry = self.registry.read();
        let mut list: Vec<TopicStats> = registry
            .live
            .values()
            .map(|live| {
                let topic = &live.topic;
                let (history_events, history_bytes) = topic.log_size();
                TopicStats {
                    name: topic.name.to_string(),
                    subscribers: topic.subscriber_count(),
                    polled: live.poller.is_some(),
                    last_event_id: topic.last_id(),
                    history_events,
                    history_bytes,
                }
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Subscribers of `name` right now (0 when it has no broadcaster).
    pub(crate) fn subscriber_count(&self, name: &str) -> usize {
        let topic = self.registry.read().live.get(name).map(|l| l.topic.clone());
        topic.map_or(0, |topic| topic.subscriber_count())
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Ends the parent-token watcher; the child token is ours alone.
        self.config.token.cancel();
    }
}
