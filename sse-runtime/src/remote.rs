//! What crosses between an instance and a broker: an event on its way out ([`Outgoing`]), the
//! seam a producer publishes through ([`Publish`]), and a poller's hold on its topic's
//! [`Lease`].
//!
//! A broker numbers events itself: an outgoing event is its frame without the `id:` line (the
//! "tail"), and what comes back is the whole frame, `id: <epoch>-<seq>\n` first, encoded once
//! for every instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::config::Limits;
use crate::event_id::EventId;
use crate::frame;
use crate::publish::PublishError;

/// The longest `id:` line a broker puts in front of a tail: `id: `, 16 hex digits, `-`,
/// 20 digits, `\n`. The size limit is checked before the id is known, against this.
pub(crate) const MAX_ID_LINE: usize = 4 + 16 + 1 + 20 + 1;

/// One event on its way to the broker.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Outgoing {
    pub(crate) topic: Arc<str>,
    /// The encoded frame without its `id:` line.
    pub(crate) tail: Bytes,
    /// Change detection: the broker drops it if equal to the topic's previous event.
    pub(crate) dedup: bool,
    /// The topic's history and retention, which the broker keeps.
    pub(crate) limits: Limits,
    /// A poller's lease: the broker refuses the event unless this lease is still current.
    pub(crate) fence: Option<Arc<Lease>>,
    /// The topic is live here (it has local subscribers): the broker records the event even
    /// when no instance's subscription is registered with it, as after a broker restart until
    /// the instances have subscribed again (it would otherwise take the event for one nobody
    /// listens to, and drop it).
    pub(crate) listened: bool,
}

impl Outgoing {
    /// Encodes `data` as a tail and checks it against the size limit.
    pub(crate) fn new(
        topic: Arc<str>,
        event: Option<&str>,
        data: &[u8],
        limits: Limits,
    ) -> Result<Self, PublishError> {
        let tail = frame::event(None, event, data);
        let size = tail.len() + MAX_ID_LINE;
        if size > limits.max_event_bytes {
            return Err(PublishError::TooLarge {
                size,
                limit: limits.max_event_bytes,
            });
        }
        Ok(Self {
            topic,
            tail,
            dedup: false,
            limits,
            fence: None,
            listened: false,
        })
    }
}

/// Where a producer's events go when its manager has a broker.
pub(crate) trait Publish: Send + Sync + 'static {
    /// Fire-and-forget: queues the event, never blocks; a full queue or a broker error is
    /// counted and logged.
    fn publish(&self, message: Outgoing);
}

/// A poller's hold on its topic's lease: the token the broker knows it by, and until when the
/// holder may act on it by its own clock (renewals push it on; a pause past it, or a fenced
/// publish, ends it).
pub(crate) struct Lease {
    pub(crate) token: String,
    origin: Instant,
    /// Nanoseconds after `origin` until which the lease is held; 0 once lost.
    valid_until: AtomicU64,
}

impl Lease {
    pub(crate) fn new(token: String) -> Self {
        Self {
            token,
            origin: Instant::now(),
            valid_until: AtomicU64::new(0),
        }
    }

    /// Whether the holder may still poll and publish.
    pub(crate) fn is_held(&self) -> bool {
        let now = self.origin.elapsed().as_nanos() as u64;
        now < self.valid_until.load(Ordering::Acquire)
    }

    /// The broker granted or renewed the lease by a request sent at `sent`, for `ttl`: it is
    /// held until `sent + ttl` by our clock (never later than the broker's expiry).
    pub(crate) fn held_from(&self, sent: Instant, ttl: Duration) {
        let until = (sent + ttl)
            .saturating_duration_since(self.origin)
            .as_nanos() as u64;
        self.valid_until.store(until, Ordering::Release);
    }

    /// The lease is gone (expired, fenced, released).
    pub(crate) fn lose(&self) {
        self.valid_until.store(0, Ordering::Release);
    }
}

/// The id at the front of a frame the broker numbered (`id: <epoch>-<seq>\n...`).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn frame_id(frame: &[u8]) -> Option<EventId> {
    let rest = frame.strip_prefix(b"id: ")?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_id_reads_the_id_line_only() {
        let id = frame_id(b"id: 1f-42\nevent: x\ndata: 1\n\n").unwrap();
        assert_eq!((id.epoch(), id.sequence()), (0x1f, 42));
        assert_eq!(frame_id(b"data: 1\n\n"), None);
        assert_eq!(frame_id(b"id: 1f-42"), None);
    }

    #[test]
    fn a_lease_is_held_only_until_its_deadline() {
        let lease = Lease::new("t".into());
        assert!(!lease.is_held());
        lease.held_from(Instant::now(), Duration::from_secs(60));
        assert!(lease.is_held());
        lease.held_from(
            Instant::now() - Duration::from_secs(2),
            Duration::from_secs(1),
        );
        assert!(!lease.is_held());
    }
}
