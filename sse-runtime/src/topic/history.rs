//! What a topic records and resumes from: its epoch and log, the rules it records by, and
//! where a new subscriber starts (live, resumed after its last id, or reset, and why).

use std::fmt;

use bytes::Bytes;

use crate::config::Limits;
use crate::event_id::{EventId, IdBuf};
use crate::frame;
use crate::log::{Gap, Log};

/// What a topic records: its epoch, its log, and the rules it records by. It lives in the
/// topic while the topic has subscribers, and in the registry for the retention time after the
/// last one left, where publishes go on being recorded so a returning client misses nothing.
pub(crate) struct History {
    pub(super) epoch: u64,
    pub(super) log: Log,
    /// Payload of the newest event, kept only when change detection is on.
    last_payload: Option<Bytes>,
    pub(super) change_detection: bool,
    pub(super) limits: Limits,
    /// How far past its newest event a client's last id may be and still resume: 0 in-process;
    /// with a broker, the log is one instance's cache and may trail the instance the client came
    /// from, so such a client waits for the events after its id instead of being reset.
    pub(super) ahead: u64,
}

/// What became of a published event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recorded {
    Appended(EventId),
    /// Same payload as the previous event (change detection): not recorded.
    Duplicate,
    /// Its encoded frame is over the size limit: not recorded. Carries the frame's size.
    TooLarge(usize),
}

/// Where a new subscriber asks to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// With the next event published.
    Live,
    /// After the event with this id.
    After(EventId),
    /// The client sent a last event id that is not one of ours.
    Malformed,
}

/// How a subscription joined its topic.
///
/// ```
/// use sse_runtime::subscription::{Joined, ResetReason};
/// use sse_runtime::Manager;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let manager = Manager::new();
/// let sub = manager.subscribe("t").unwrap();
/// assert_eq!(sub.joined(), Some(Joined::Live));
/// let stale = sse_runtime::subscription::SubscribeOptions::new().last_event_id("nonsense");
/// let reset = manager.subscribe_with("t", stale).unwrap();
/// assert!(matches!(reset.joined(), Some(Joined::Reset { reason: ResetReason::Malformed, .. })));
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Joined {
    /// With the next event published.
    Live,
    /// Right after the client's last event id: the retained events since come first.
    Resumed,
    /// The client's last event id cannot be resumed from; the subscription goes on live from
    /// `continue_from`, the id of the next event.
    Reset {
        /// Why the id could not be resumed from.
        reason: ResetReason,
        /// The id the next event will carry.
        continue_from: EventId,
    },
}

/// Why a client's last event id could not be resumed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResetReason {
    /// The client's last event id does not parse.
    Malformed,
    /// The id belongs to a broadcaster this server does not know: one of an earlier process
    /// (a restart without a broker), or of another server.
    UnknownEpoch,
    /// The id belongs to an earlier broadcaster of this server whose history is gone: its
    /// retention time passed (or the caps on retained histories dropped it) after its last
    /// subscriber left.
    HistoryExpired,
    /// The events after the id are no longer retained.
    HistoryExceeded,
    /// The id is ahead of anything this topic has sent.
    FromTheFuture,
    /// The broker lost the topic's history while the stream was open (a restart without
    /// persistence): sent in the stream, which goes on in the broker's new numbering.
    HistoryLost,
}

impl ResetReason {
    /// The reason as the `reset` event names it:
    ///
    /// | reason | what happened |
    /// |---|---|
    /// | `malformed-last-event-id` | the client's id is not one of ours |
    /// | `unknown-epoch` | the id is from another process (the server restarted, without a broker) or another server |
    /// | `history-expired` | the id is from this server, but the topic's history went after its last subscriber left (retention) |
    /// | `history-exceeded` | more was published since the id than the history holds |
    /// | `unknown-sequence` | the id is ahead of anything the topic has sent |
    /// | `history-lost` | sent in an open stream: the broker lost the topic's history (a restart without persistence); the stream goes on |
    ///
    /// ```
    /// use sse_runtime::subscription::ResetReason;
    /// assert_eq!(ResetReason::HistoryExceeded.as_str(), "history-exceeded");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed-last-event-id",
            Self::UnknownEpoch => "unknown-epoch",
            Self::HistoryExpired => "history-expired",
            Self::HistoryExceeded => "history-exceeded",
            Self::FromTheFuture => "unknown-sequence",
            Self::HistoryLost => "history-lost",
        }
    }
}

impl fmt::Display for ResetReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl History {
    /// An empty history numbering its events in `epoch`.
    pub(crate) fn new(epoch: u64, change_detection: bool, limits: Limits) -> Self {
        Self {
            epoch,
            log: Log::new(),
            last_payload: None,
            ahead: 0,
            change_detection,
            limits,
        }
    }

    /// The same history (epoch, events, ids going on) under a new broadcaster's settings.
    pub(crate) fn continued(mut self, change_detection: bool, limits: Limits) -> Self {
        self.limits = limits;
        self.change_detection = change_detection;
        if !change_detection {
            self.last_payload = None;
        }
        self
    }

    pub(crate) fn bytes(&self) -> usize {
        self.log.bytes()
    }

    /// Id of the newest event, if any was recorded.
    pub(super) fn last_id(&self) -> Option<EventId> {
        Some(EventId::new(self.epoch, self.log.last_seq()?))
    }

    /// Encodes `data` under the next id and appends it, unless change detection finds it equal
    /// to the previous payload or its frame is over the size limit. Either refusal spends no
    /// id, so ids stay consecutive over exactly the events a subscriber can receive.
    pub(crate) fn record(&mut self, event: Option<&str>, data: Bytes) -> Recorded {
        if self.change_detection && self.last_payload.as_deref() == Some(&data[..]) {
            return Recorded::Duplicate;
        }
        let id = EventId::new(self.epoch, self.log.next_seq());
        let frame = frame::event(Some(id.encode(&mut IdBuf::new())), event, &data);
        if frame.len() > self.limits.max_event_bytes {
            return Recorded::TooLarge(frame.len());
        }
        self.log.append(frame, &self.limits);
        if self.change_detection {
            self.last_payload = Some(data);
        }
        Recorded::Appended(id)
    }

    /// Where a subscriber asking for `start` begins: its cursor, how it joined, and below which
    /// cursor lag is not held against it (a resumed subscriber's backlog; 0 for the others).
    pub(super) fn start(&self, start: Start) -> (u64, Joined, u64) {
        let live = self.live_start();
        match start {
            Start::Live => (live, Joined::Live, 0),
            Start::After(id) => match self.resume_point(id) {
                Ok(cursor) => (cursor, Joined::Resumed, self.log.next_seq()),
                Err(reason) => (live, self.reset(reason), 0),
            },
            Start::Malformed => (live, self.reset(ResetReason::Malformed), 0),
        }
    }

    /// Where a subscriber that does not resume starts: with the next event, or, when the topic
    /// detects changes (its events are states, like a poller's), on the newest one, so that a
    /// newcomer gets the current state at once, with its original id, instead of after the
    /// next change (which may never come: a poller that stopped). The log holds the newest
    /// event whenever it has numbered one, unless a broker's snapshot brought none.
    fn live_start(&self) -> u64 {
        match self.log.last_seq() {
            Some(newest) if self.change_detection && self.log.holds_newest() => newest,
            _ => self.log.next_seq(),
        }
    }

    /// How a subscriber that could not resume joined: it goes on from the live start, whose id
    /// its first event carries.
    fn reset(&self, reason: ResetReason) -> Joined {
        Joined::Reset {
            reason,
            continue_from: EventId::new(self.epoch, self.live_start()),
        }
    }

    /// Where a client that last received `last` continues: the cursor right after it when
    /// everything since is still here, else why not.
    fn resume_point(&self, last: EventId) -> Result<u64, ResetReason> {
        if last.epoch() != self.epoch {
            return Err(ResetReason::UnknownEpoch);
        }
        match self.log.resume_point(
            last.sequence(),
            self.limits.history_events,
            self.limits.history_bytes,
        ) {
            Ok(cursor) => Ok(cursor),
            Err(Gap::Evicted) => Err(ResetReason::HistoryExceeded),
            Err(Gap::Ahead) if last.sequence() < self.log.next_seq() + self.ahead => {
                Ok(last.sequence() + 1)
            }
            Err(Gap::Ahead) => Err(ResetReason::FromTheFuture),
        }
    }
}
