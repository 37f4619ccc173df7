//! What the runtime records through the [`metrics`](https://docs.rs/metrics) facade, with the
//! cargo feature `metrics`. The library never installs a recorder: the application picks one
//! (`metrics-exporter-prometheus`, for example); without one, recording costs next to nothing,
//! and without the feature it compiles to nothing.
//!
//! Labels stay bounded: the route template (`route`, axum's `MatchedPath`, `"other"` for a
//! stream not opened by a routed handler) and a reason from a fixed list. Never the topic.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `sse_streams` | gauge | `route` | open SSE streams |
//! | `sse_topics` | gauge | | topics with a live broadcaster |
//! | `sse_pollers` | gauge | | pollers running |
//! | `sse_retained_bytes` | gauge | | bytes of the histories kept after their last subscriber left, as of when each was kept |
//! | `sse_events_published_total` | counter | | events appended to a topic |
//! | `sse_events_delivered_total` | counter | `route` | events handed to a connection |
//! | `sse_bytes_delivered_total` | counter | `route` | bytes handed to a connection (heartbeats, hints, resets included) |
//! | `sse_refusals_total` | counter | `reason` | requests refused: `streams`, `per_client`, `per_topic`, `topics`, `pollers`, `pollers_per_client`, `guard` |
//! | `sse_disconnects_total` | counter | `route`, `reason` | streams ended: `client_gone`, `lagged`, `write_deadline`, `shutdown`, `expired` (a guard's), `closed` |
//! | `sse_resumes_total` | counter | `route`, `outcome`, `reason` | reconnects with a `Last-Event-ID`: `replayed`, or `reset` with the reset's reason (`history-exceeded`, ...) |
//! | `sse_poll_errors_total` | counter | | polls that failed or panicked |
//! | `sse_poll_duration_seconds` | histogram | | how long each poll took |
//! | `sse_publish_to_write_seconds` | histogram | `route` | from the publish of the oldest event in a write to that write |
//!
//! ```
//! // What a scrape shows, with any recorder installed (metrics-exporter-prometheus here):
//! // sse_streams{route="/sse/alarms"} 3
//! // sse_disconnects_total{route="/sse/alarms",reason="lagged"} 1
//! assert_eq!(sse_runtime::telemetry::STREAMS, "sse_streams");
//! ```

/// Gauge: open SSE streams, by `route`.
pub const STREAMS: &str = "sse_streams";
/// Gauge: topics with a live broadcaster.
pub const TOPICS: &str = "sse_topics";
/// Gauge: pollers running.
pub const POLLERS: &str = "sse_pollers";
/// Gauge: bytes of retained histories, as of when each was retained.
pub const RETAINED_BYTES: &str = "sse_retained_bytes";
/// Counter: events published.
pub const PUBLISHED: &str = "sse_events_published_total";
/// Counter: events handed to connections, by `route`.
pub const DELIVERED: &str = "sse_events_delivered_total";
/// Counter: bytes handed to connections, by `route`.
pub const DELIVERED_BYTES: &str = "sse_bytes_delivered_total";
/// Counter: refused requests, by `reason`.
pub const REFUSALS: &str = "sse_refusals_total";
/// Counter: ended streams, by `route` and `reason`.
pub const DISCONNECTS: &str = "sse_disconnects_total";
/// Counter: resumes, by `route`, `outcome` and `reason`.
pub const RESUMES: &str = "sse_resumes_total";
/// Counter: failed polls.
pub const POLL_ERRORS: &str = "sse_poll_errors_total";
/// Histogram: poll durations, in seconds.
pub const POLL_DURATION: &str = "sse_poll_duration_seconds";
/// Histogram: publish-to-write latency, in seconds, by `route`.
pub const PUBLISH_TO_WRITE: &str = "sse_publish_to_write_seconds";

/// Why a stream ended, as the `reason` label of [`DISCONNECTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disconnect {
    ClientGone,
    Lagged,
    WriteDeadline,
    ShutDown,
    Expired,
    Closed,
    Finished,
}

impl Disconnect {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ClientGone => "client_gone",
            Self::Lagged => "lagged",
            Self::WriteDeadline => "write_deadline",
            Self::ShutDown => "shutdown",
            Self::Expired => "expired",
            Self::Closed => "closed",
            Self::Finished => "finished",
        }
    }
}

/// When an event was published, for [`PUBLISH_TO_WRITE`]; nothing without the feature.
#[cfg(feature = "metrics")]
pub(crate) type Stamp = std::time::Instant;
#[cfg(not(feature = "metrics"))]
pub(crate) type Stamp = ();

pub(crate) fn stamp() -> Stamp {
    #[cfg(feature = "metrics")]
    return std::time::Instant::now();
}

/// The earlier of two stamps.
pub(crate) fn earlier(a: &Stamp, b: &Stamp) -> Stamp {
    #[cfg(feature = "metrics")]
    return *a.min(b);
    #[cfg(not(feature = "metrics"))]
    let _ = (a, b);
}

pub(crate) use imp::*;

/// Counts in a gauge while it lives: `amount` added when made, taken back when dropped, so
/// every way out of a map (removal, eviction, expiry, shutdown) is counted alike.
pub(crate) struct GaugeShare {
    #[cfg(feature = "metrics")]
    gauge: &'static str,
    #[cfg(feature = "metrics")]
    amount: f64,
}

impl GaugeShare {
    pub(crate) fn new(gauge: &'static str, amount: f64) -> Self {
        #[cfg(feature = "metrics")]
        {
            metrics::gauge!(gauge).increment(amount);
            Self { gauge, amount }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (gauge, amount);
            Self {}
        }
    }
}

#[cfg(feature = "metrics")]
impl Drop for GaugeShare {
    fn drop(&mut self) {
        metrics::gauge!(self.gauge).decrement(self.amount);
    }
}

#[cfg(feature = "metrics")]
mod imp {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

    use super::*;

    /// The handles of one route, made once per route and shared by its streams, so recording
    /// never builds labels.
    pub(crate) struct Route {
        name: Arc<str>,
        streams: Gauge,
        delivered: Counter,
        bytes: Counter,
        latency: Histogram,
    }

    /// What a stream holds to record for its route.
    pub(crate) type Handle = Arc<Route>;

    /// The handles of `route`; one lookup per stream opened.
    pub(crate) fn route(route: Option<&str>) -> Handle {
        static ROUTES: Mutex<Option<HashMap<Arc<str>, Arc<Route>>>> = Mutex::new(None);
        let name = route.unwrap_or("other");
        let mut routes = ROUTES.lock().unwrap_or_else(PoisonError::into_inner);
        let routes = routes.get_or_insert_with(HashMap::new);
        if let Some(found) = routes.get(name) {
            return found.clone();
        }
        let name: Arc<str> = Arc::from(name);
        let label = name.to_string();
        let made = Arc::new(Route {
            streams: gauge!(STREAMS, "route" => label.clone()),
            delivered: counter!(DELIVERED, "route" => label.clone()),
            bytes: counter!(DELIVERED_BYTES, "route" => label.clone()),
            latency: histogram!(PUBLISH_TO_WRITE, "route" => label),
            name: name.clone(),
        });
        routes.insert(name, made.clone());
        made
    }

    impl Route {
        pub(crate) fn opened(&self) {
            self.streams.increment(1.0);
        }

        pub(crate) fn closed(&self, reason: Disconnect) {
            self.streams.decrement(1.0);
            counter!(DISCONNECTS, "route" => self.name.to_string(), "reason" => reason.as_str())
                .increment(1);
        }

        /// One write: `events` events (and `bytes` bytes in all), the oldest published at
        /// `oldest`.
        pub(crate) fn wrote(&self, events: u64, bytes: usize, oldest: &Stamp) {
            self.delivered.increment(events);
            self.bytes.increment(bytes as u64);
            // A chunk of no event (a `reset` in the stream) has no publish to measure from.
            if events > 0 {
                self.latency.record(oldest.elapsed().as_secs_f64());
            }
        }

        pub(crate) fn resumed(&self, reset: Option<&'static str>) {
            let (outcome, reason) = match reset {
                None => ("replayed", "none"),
                Some(reason) => ("reset", reason),
            };
            counter!(RESUMES, "route" => self.name.to_string(), "outcome" => outcome, "reason" => reason)
                .increment(1);
        }
    }

    pub(crate) fn pollers(delta: f64) {
        gauge!(POLLERS).increment(delta);
    }

    pub(crate) fn published() {
        counter!(PUBLISHED).increment(1);
    }

    pub(crate) fn refused(reason: &'static str) {
        counter!(REFUSALS, "reason" => reason).increment(1);
    }

    pub(crate) fn polled(took: Duration, failed: bool) {
        histogram!(POLL_DURATION).record(took.as_secs_f64());
        if failed {
            counter!(POLL_ERRORS).increment(1);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use std::time::Duration;

    use super::*;

    /// Nothing to record without the feature: a stream holds a zero-sized handle.
    pub(crate) struct Route;

    pub(crate) type Handle = Route;

    pub(crate) fn route(_route: Option<&str>) -> Handle {
        Route
    }

    impl Route {
        pub(crate) fn opened(&self) {}
        pub(crate) fn closed(&self, _reason: Disconnect) {}
        pub(crate) fn wrote(&self, _events: u64, _bytes: usize, _oldest: &Stamp) {}
        pub(crate) fn resumed(&self, _reset: Option<&'static str>) {}
    }

    pub(crate) fn pollers(_delta: f64) {}
    pub(crate) fn published() {}
    pub(crate) fn refused(_reason: &'static str) {}
    pub(crate) fn polled(_took: Duration, _failed: bool) {}
}

/// A topic for logs and spans: a URL-derived topic's query may carry what identifies someone,
/// so it is left out.
pub(crate) fn redacted(topic: &str) -> std::borrow::Cow<'_, str> {
    match topic.split_once('?') {
        Some((path, _query)) => format!("{path}?[redacted]").into(),
        None => topic.into(),
    }
}
