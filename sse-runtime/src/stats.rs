//! Introspection: counts for `/stats`-style endpoints, dashboards and tests.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

use crate::event_id::EventId;
use crate::refusal::SubscribeError;

/// A snapshot of a [`Manager`](crate::Manager)'s state and counters.
///
/// Gauges (`topics`, `subscribers`, `pollers`) are current values; the rest count since the
/// manager was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Topics with a live broadcaster.
    pub topics: usize,
    /// Open subscriptions (streams), over all topics.
    pub subscribers: usize,
    /// Pollers started and not yet stopped.
    pub pollers: usize,
    /// Pollers started since the manager was created.
    pub pollers_started: u64,
    /// Pollers stopped since the manager was created.
    pub pollers_stopped: u64,
    /// Histories kept for resume after their topic's last subscriber left.
    pub retained: usize,
    /// Bytes of encoded events in those histories.
    pub retained_bytes: usize,
    /// Events appended to a topic and offered to its subscribers.
    pub published: u64,
    /// Publishes skipped by change detection (payload identical to the previous one).
    pub duplicates: u64,
    /// Payloads that failed to serialize and were skipped.
    pub serialize_errors: u64,
    /// Events refused for being over
    /// [`max_event_bytes`](crate::manager::ManagerBuilder::max_event_bytes).
    pub oversized: u64,
    /// Subscribers disconnected for falling too far behind.
    pub lagged: u64,
    /// Subscriptions refused by a cap, by cap.
    pub refused: Refusals,
    /// Retained histories dropped before their time to stay within
    /// [`max_retained`](crate::manager::ManagerBuilder::max_retained).
    pub retained_evicted: u64,
    /// Publishes by a generated `publish_*` helper into the global manager while the macro
    /// routes were mounted on another manager (by [`router_with`](crate::routes::router_with)),
    /// so no route of the global manager could deliver them. The first is logged as an error.
    pub unrouted: u64,
    /// The broker connection's state, with a [`Backplane`](crate::backplane::Backplane).
    pub backplane: Option<BackplaneStats>,
}

/// Subscriptions refused since the manager was created, by the cap that refused them (see
/// [`SubscribeError`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Refusals {
    /// Over [`max_streams`](crate::manager::ManagerBuilder::max_streams).
    pub streams: u64,
    /// Over [`max_streams_per_client`](crate::manager::ManagerBuilder::max_streams_per_client).
    pub per_client: u64,
    /// Over [`max_subscribers_per_topic`](crate::manager::ManagerBuilder::max_subscribers_per_topic).
    pub per_topic: u64,
    /// Over [`max_topics`](crate::manager::ManagerBuilder::max_topics).
    pub topics: u64,
    /// Over [`max_pollers`](crate::manager::ManagerBuilder::max_pollers).
    pub pollers: u64,
    /// Over [`max_pollers_per_client`](crate::manager::ManagerBuilder::max_pollers_per_client).
    pub pollers_per_client: u64,
    /// By a route's [guard](crate::guard), expired credentials included.
    pub guard: u64,
}

impl Refusals {
    /// All refusals together.
    pub fn total(&self) -> u64 {
        self.streams
            + self.per_client
            + self.per_topic
            + self.topics
            + self.pollers
            + self.pollers_per_client
            + self.guard
    }
}

/// The state of a manager's backplane, as seen by this instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BackplaneStats {
    /// Whether the pub/sub connection is up (it reconnects by itself).
    pub connected: bool,
    /// Topics this instance listens to (those with local subscribers).
    pub watched: usize,
    /// Live topics whose broker view (epoch, sequence, history) is in; subscribers of the
    /// others wait for it.
    pub synced: usize,
    /// Poll leases this instance holds: the polled topics polled here.
    pub leases: usize,
    /// Publishes waiting for the broker.
    pub queued: usize,
    /// Broker calls that failed (publishes included).
    pub failures: u64,
    /// Publishes dropped because the queue was full.
    pub overflows: u64,
    /// Poller publishes refused because their lease had passed to another instance.
    pub fenced: u64,
    /// Times the pub/sub connection was re-established.
    pub reconnects: u64,
    /// Gap repairs and resyncs from the broker's history.
    pub resyncs: u64,
}

/// One live topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TopicStats {
    /// The topic string.
    pub name: String,
    /// Its subscribers right now.
    pub subscribers: usize,
    /// Whether a poller is bound to it.
    pub polled: bool,
    /// Id of its newest event.
    #[serde(serialize_with = "display_opt")]
    pub last_event_id: Option<EventId>,
    /// Events in its log (history and the window of lagging subscribers).
    pub history_events: usize,
    /// Bytes of encoded events in its log.
    pub history_bytes: usize,
}

fn display_opt<S: serde::Serializer>(id: &Option<EventId>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) subscribers: AtomicUsize,
    pub(crate) pollers: AtomicUsize,
    pub(crate) pollers_started: AtomicU64,
    pub(crate) pollers_stopped: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) serialize_errors: AtomicU64,
    pub(crate) oversized: AtomicU64,
    pub(crate) lagged: AtomicU64,
    pub(crate) refused: [AtomicU64; 6],
    pub(crate) denied: AtomicU64,
    pub(crate) retained_evicted: AtomicU64,
    pub(crate) unrouted: AtomicU64,
}

impl Counters {
    /// Counts a refusal by its cap (a shutdown is not counted).
    pub(crate) fn refused(&self, error: SubscribeError) {
        let (slot, reason) = match error {
            SubscribeError::ShutDown => return,
            SubscribeError::TooManyStreams => (0, "streams"),
            SubscribeError::TooManyFromClient => (1, "per_client"),
            SubscribeError::TooManySubscribers => (2, "per_topic"),
            SubscribeError::TooManyTopics => (3, "topics"),
            SubscribeError::TooManyPollers => (4, "pollers"),
            SubscribeError::TooManyPollersFromClient => (5, "pollers_per_client"),
        };
        self.refused[slot].fetch_add(1, Ordering::Relaxed);
        crate::telemetry::refused(reason);
    }

    /// Counts a request refused by a route's guard.
    pub(crate) fn refused_by_guard(&self) {
        self.denied.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::refused("guard");
    }

    /// Counts an event appended to a topic (in-process, or numbered by the broker).
    pub(crate) fn published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::published();
    }

    pub(crate) fn snapshot(&self, topics: usize, retained: usize, retained_bytes: usize) -> Stats {
        Stats {
            topics,
            retained,
            retained_bytes,
            subscribers: self.subscribers.load(Ordering::Relaxed),
            pollers: self.pollers.load(Ordering::Relaxed),
            pollers_started: self.pollers_started.load(Ordering::Relaxed),
            pollers_stopped: self.pollers_stopped.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            serialize_errors: self.serialize_errors.load(Ordering::Relaxed),
            oversized: self.oversized.load(Ordering::Relaxed),
            lagged: self.lagged.load(Ordering::Relaxed),
            refused: {
                let [
                    streams,
                    per_client,
                    per_topic,
                    topics,
                    pollers,
                    pollers_per_client,
                ] = self.refused.each_ref().map(|n| n.load(Ordering::Relaxed));
                Refusals {
                    streams,
                    per_client,
                    per_topic,
                    topics,
                    pollers,
                    pollers_per_client,
                    guard: self.denied.load(Ordering::Relaxed),
                }
            },
            retained_evicted: self.retained_evicted.load(Ordering::Relaxed),
            unrouted: self.unrouted.load(Ordering::Relaxed),
            backplane: None,
        }
    }
}
