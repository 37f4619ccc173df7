//! Joining and leaving a topic: the caps checked under the registry lock, the broadcaster
//! created with its first subscriber (and its poller started), removed with its last (its
//! history retained, or the broker told), or left lingering with its poller.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::Hub;
use super::registry::{Live, Registry};
use crate::backplane::Leased;
use crate::config::HistoryOverrides;
use crate::producer::{PollingService, TopicPublisher};
use crate::refusal::SubscribeError;
use crate::telemetry;
use crate::topic::{History, Joined, Membership, ResetReason, Start, Topic};

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

impl Hub {
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
            if membership.fetch
                && let Some(broker) = &self.broker
            {
                broker.refresh(&topic);
            }
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
    pub(super) fn remove(
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
}
