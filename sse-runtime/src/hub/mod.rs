//! The state every handle of one manager shares: live topics with their pollers, the retained
//! histories of recently emptied ones, the counters and the shutdown token.
//!
//! Everything that must happen atomically with respect to the topic map happens here, under
//! one lock: a topic is created with its first subscriber and removed with its last, and a
//! publish that races the removal is recorded wherever the history went.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use tokio::sync::Notify;

use crate::backplane::{Backplane, Broker};
use crate::config::Config;
use crate::producer::{PollingService, TopicPublisher};
use crate::stats::{Counters, Stats, TopicStats};
use crate::telemetry;

mod membership;
mod publish;
mod registry;
mod timers;

pub(crate) use membership::Join;
use registry::Registry;

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

    /// [`Manager::restart_poller`](crate::Manager::restart_poller).
    pub(crate) async fn restart_poller(self: &Arc<Self>, name: &str) -> bool {
        let found = self.registry.read().live.get(name).and_then(|live| {
            let poller = live.poller.clone()?;
            Some((live.topic.clone(), poller))
        });
        let Some((topic, poller)) = found else {
            return false;
        };
        poller.stop().await;
        if topic.is_closed() {
            return false;
        }
        topic.unfinish();
        poller.start(TopicPublisher::new(&topic, &self.counters));
        // Removed meanwhile: its removal closed it before stopping its poller, so either that
        // stop came after this start, or this check sees it closed and stops the run itself.
        if topic.is_closed() {
            poller.stop().await;
            return false;
        }
        self.counters
            .pollers_started
            .fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
        tracing::debug!(topic = %topic.name, "poller restarted");
        true
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
