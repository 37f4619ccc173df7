//! The registry's map: live topics with their pollers and per-client counts, and the
//! retained histories of recently emptied topics, with the caps and expiry they are kept by.
//! Everything here runs under the hub's registry lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::Caps;
use crate::producer::PollingService;
use crate::telemetry::{self, GaugeShare};
use crate::topic::{History, Topic};

type Map<V> = HashMap<Arc<str>, V, foldhash::fast::RandomState>;

/// Live topics, and the histories of recently emptied ones.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) live: Map<Live>,
    /// Live topics with a poller: what [`Caps::pollers`] caps.
    pub(super) polled: usize,
    /// Open subscriptions per client address: what [`Caps::streams_per_client`] caps. An
    /// address leaves the map with its last subscription.
    pub(super) clients: PerClient,
    /// Live polled topics per client address that created them: what
    /// [`Caps::pollers_per_client`] caps. Changed with `polled`, under this lock.
    pub(super) starters: PerClient,
    pub(super) retained: Map<Retained>,
    /// When expired histories are next swept out on activity.
    next_sweep: Option<Instant>,
    /// Whether the sweeper task runs. It runs while histories are retained and sets this back
    /// under this lock when it finds none, so a history retained meanwhile (under the same
    /// lock) always sees either a running sweeper or `false` and starts one.
    pub(super) sweeper: bool,
}

/// A count per client address; an address leaves the map when its count is back to zero.
#[derive(Default)]
pub(super) struct PerClient(HashMap<IpAddr, usize, foldhash::fast::RandomState>);

impl PerClient {
    pub(super) fn add(&mut self, client: Option<IpAddr>) {
        if let Some(client) = client {
            *self.0.entry(client).or_default() += 1;
        }
    }

    pub(super) fn remove(&mut self, client: Option<IpAddr>) {
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
    pub(super) fn reached(&self, client: Option<IpAddr>, cap: usize) -> bool {
        client.is_some_and(|client| self.0.get(&client).is_some_and(|count| *count >= cap))
    }
}

pub(super) struct Live {
    pub(super) topic: Arc<Topic>,
    /// The producer started with the topic, stopped when it is removed (or at shutdown).
    pub(super) poller: Option<Arc<dyn PollingService>>,
    /// Since when a polled topic has had no subscriber: it lingers, open with its poller
    /// running, until `idle_since + linger`. Cleared by every join.
    pub(super) idle_since: Option<Instant>,
    /// Whether a linger task watches this topic; at most one does, whatever the churn.
    pub(super) lingering: bool,
    /// The client whose subscription created this polled topic, counted in `starters`.
    pub(super) started_by: Option<IpAddr>,
    /// Its share of the `sse_topics` gauge.
    _gauge: GaugeShare,
}

impl Live {
    pub(super) fn new(
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

pub(super) struct Retained {
    /// Publishes to the emptied topic keep being recorded here (under the registry's read lock
    /// plus this one), so a client that comes back within the retention time gets them.
    pub(super) history: Mutex<History>,
    pub(super) until: Instant,
    /// Its bytes when retained, as its share of the `sse_retained_bytes` gauge.
    _gauge: GaugeShare,
}

/// Where a publish by topic name goes.
pub(super) enum Found {
    Live(Arc<Topic>),
    Retained,
    Nowhere,
}

impl Registry {
    /// Keeps an emptied topic's history until its retention time has passed, within the caps
    /// on retained histories: over them, those that expire first go first. Returns how many
    /// were dropped early.
    pub(super) fn retain(&mut self, topic: &Topic, now: Instant, caps: &Caps) -> u64 {
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
    pub(super) fn revive(&mut self, name: &str, now: Instant) -> Option<History> {
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
    pub(super) fn drop_expired(&mut self, now: Instant) -> bool {
        let before = self.retained.len();
        self.retained.retain(|_, retained| retained.until > now);
        self.retained.len() < before
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::config::Limits;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    /// A closed topic called `name` holding `events` events of 100 bytes each.
    fn emptied(name: &str, events: usize) -> Topic {
        let topic = Topic::new(Arc::from(name), History::new(1, false, Limits::default()));
        for _ in 0..events {
            topic.publish(None, Bytes::from(vec![b'x'; 100]));
        }
        let membership = topic.subscribe(crate::topic::Start::Live);
        topic.unsubscribe(membership.key, false);
        topic
    }

    fn names(registry: &Registry) -> Vec<&str> {
        let mut names: Vec<&str> = registry.retained.keys().map(|n| &**n).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn a_client_address_leaves_the_count_with_its_last_subscription() {
        let mut clients = PerClient::default();
        clients.add(ip(1));
        clients.add(ip(1));
        clients.add(ip(2));
        clients.add(None);
        assert!(clients.reached(ip(1), 2) && !clients.reached(ip(1), 3));
        assert!(
            !clients.reached(None, 0),
            "an unknown address is never capped"
        );
        clients.remove(ip(1));
        clients.remove(ip(1));
        clients.remove(ip(1)); // one too many: no underflow
        clients.remove(ip(3)); // never added
        assert_eq!(clients.0.len(), 1, "only 10.0.0.2 is left");
        assert!(clients.reached(ip(2), 1));
    }

    #[test]
    fn over_the_caps_the_histories_that_expire_first_go_first() {
        let mut registry = Registry::default();
        let now = Instant::now();
        let caps = Caps {
            retained: 2,
            ..Caps::default()
        };
        let mut evicted = 0;
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            // Each retained a second after the previous: "a" expires first.
            let at = now + Duration::from_secs(i as u64);
            evicted += registry.retain(&emptied(name, 1), at, &caps);
        }
        assert_eq!(evicted, 1);
        assert_eq!(names(&registry), ["b", "c"]);

        let bytes = registry.retained["b"].history.lock().bytes();
        let tight = Caps {
            retained_bytes: bytes,
            ..Caps::default()
        };
        assert_eq!(
            registry.evict(&tight),
            1,
            "two histories do not fit the bytes of one"
        );
        assert_eq!(names(&registry), ["c"]);
    }

    #[test]
    fn a_history_is_revived_until_it_expires_and_then_swept_out() {
        let mut registry = Registry::default();
        let now = Instant::now();
        let retention = crate::config::DEFAULT_RETENTION;
        registry.retain(&emptied("kept", 3), now, &Caps::default());
        registry.retain(&emptied("expired", 3), now, &Caps::default());
        let revived = registry.revive("kept", now + retention - Duration::from_millis(1));
        assert_eq!(
            revived.map(|h| h.bytes() > 0),
            Some(true),
            "its events come back with it"
        );
        assert!(registry.revive("expired", now + retention).is_none());
        assert!(
            registry.retained.is_empty(),
            "a revived or expired history leaves the map"
        );
        assert!(
            !registry.drop_expired(now + retention * 2),
            "nothing left to sweep"
        );
    }

    #[test]
    fn expired_histories_are_swept_at_most_once_a_second_on_activity() {
        let mut registry = Registry::default();
        let now = Instant::now();
        let retention = crate::config::DEFAULT_RETENTION;
        registry.retain(&emptied("a", 1), now, &Caps::default());
        let before = now + retention - Duration::from_millis(1);
        registry.sweep(before);
        assert_eq!(names(&registry), ["a"], "not expired yet");
        // Expired now, but the last sweep was under a second ago: a sweep walks every history.
        registry.sweep(now + retention + Duration::from_millis(500));
        assert_eq!(names(&registry), ["a"]);
        registry.sweep(before + Duration::from_secs(1));
        assert!(names(&registry).is_empty());
    }
}
