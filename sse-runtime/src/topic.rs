//! The per-topic broadcaster: a [`Log`] of encoded events shared by every subscriber.
//!
//! Each published event is encoded once into a [`Bytes`] frame and appended to the topic's log.
//! Subscribers do not get a copy each: a subscriber is a cursor (the sequence number of the next
//! event it will send) plus a waker. Publishing appends once and wakes every subscriber; each
//! connection then copies out, in one chunk, everything between its cursor and the head. So
//!
//! - publishing never blocks on a subscriber and costs the same whatever the subscribers do;
//! - memory is bounded by the log's limits, not by the number or speed of subscribers;
//! - the log doubles as the resume history: a reconnecting client's `Last-Event-ID` is a cursor.
//!
//! A subscriber that falls further behind than the lag limit (or out of the log) is ended; its
//! client reconnects and resumes from the log. A topic knows nothing of who produces its events
//! (the registry keeps a topic's poller next to it) nor of how its events reach the wire.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::{RwLock, RwLockWriteGuard};
use slab::Slab;

use crate::config::Limits;
use crate::event_id::{EventId, IdBuf};
use crate::frame;
use crate::log::{Gap, Log};

pub(crate) struct Topic {
    pub(crate) name: Arc<str>,
    /// Lock order: the registry's lock, then this one. Publishing takes only this one.
    ///
    /// Invariants kept under it: a subscriber's cursor is never above `history.log.next_seq()`;
    /// once `closed` is set it is never cleared, and nothing is recorded after it.
    state: RwLock<State>,
}

struct State {
    history: History,
    subscribers: Slab<Arc<Subscriber>>,
    /// Set, under the registry lock, when the last subscriber leaves (or at shutdown): a stale
    /// handle (a poller still stopping, a publish that raced the unsubscribe) finds the topic
    /// closed and does nothing, and can never revive it.
    closed: bool,
}

/// What a topic records: its epoch, its log, and the rules it records by. It lives in the
/// topic while the topic has subscribers, and in the registry for the retention time after the
/// last one left, where publishes go on being recorded so a returning client misses nothing.
pub(crate) struct History {
    epoch: u64,
    log: Log,
    /// Payload of the newest event, kept only when change detection is on.
    last_payload: Option<Bytes>,
    change_detection: bool,
    limits: Limits,
}

/// What became of a published event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recorded {
    Appended,
    /// Same payload as the previous event (change detection): not recorded.
    Duplicate,
    /// Its encoded frame is over the size limit: not recorded. Carries the frame's size.
    TooLarge(usize),
}

/// What the broadcaster keeps of one subscriber. Its fields are atomics only so the owning
/// connection can advance them under the topic's *read* lock; every access happens under the
/// topic lock, which orders them, so `Relaxed` suffices.
pub(crate) struct Subscriber {
    waker: AtomicWaker,
    /// Sequence number of the next event this subscriber will send.
    cursor: AtomicU64,
    /// Nothing sent yet: change detection still owes it the next event, duplicate or not.
    fresh: AtomicBool,
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
/// assert_eq!(sub.joined(), Joined::Live);
/// let stale = sse_runtime::subscription::SubscribeOptions::new().last_event_id("nonsense");
/// let reset = manager.subscribe_with("t", stale).unwrap();
/// assert!(matches!(reset.joined(), Joined::Reset { reason: ResetReason::Malformed, .. }));
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
    /// The id belongs to another broadcaster (an earlier incarnation, another server).
    UnknownEpoch,
    /// The events after the id are no longer retained.
    HistoryExceeded,
    /// The id is ahead of anything this topic has sent.
    FromTheFuture,
}

impl ResetReason {
    /// The reason as the `reset` event names it: `malformed-last-event-id`, `unknown-epoch`,
    /// `history-exceeded` or `unknown-sequence`.
    ///
    /// ```
    /// use sse_runtime::subscription::ResetReason;
    /// assert_eq!(ResetReason::HistoryExceeded.as_str(), "history-exceeded");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed-last-event-id",
            Self::UnknownEpoch => "unknown-epoch",
            Self::HistoryExceeded => "history-exceeded",
            Self::FromTheFuture => "unknown-sequence",
        }
    }
}

impl fmt::Display for ResetReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subscriber's place in a topic, as registered.
pub(crate) struct Membership {
    /// Its key among the topic's subscribers.
    pub(crate) key: usize,
    pub(crate) subscriber: Arc<Subscriber>,
    pub(crate) joined: Joined,
    /// Lag is not held against the subscriber while its cursor is below this: a resumed
    /// subscriber's backlog (the topic's head when it joined). 0 for the others.
    pub(crate) exempt_until: u64,
}

pub(crate) enum Read {
    /// One or more whole frames, in order.
    Frames(Bytes),
    /// Nothing new; the subscriber's waker is registered.
    Empty,
    /// The subscriber fell further behind than allowed (or out of the log).
    Lagged,
    /// The topic was closed.
    Closed,
}

pub(crate) enum Published {
    Recorded(Recorded),
    /// The topic was closed; the payload is handed back so the caller can record it wherever
    /// the topic's history is now.
    Closed(Bytes),
}

impl Topic {
    /// A new broadcaster that records into `history`.
    pub(crate) fn new(name: Arc<str>, history: History) -> Self {
        Self {
            name,
            state: RwLock::new(State {
                history,
                subscribers: Slab::new(),
                closed: false,
            }),
        }
    }

    /// Moves the history out of a closed topic, for retention, with how long to keep it.
    /// `None` when there is nothing worth keeping (no event sent, so no client holds an id of
    /// it; history disabled; or no retention).
    pub(crate) fn take_history(&self) -> Option<(History, std::time::Duration)> {
        let mut state = self.state.write();
        debug_assert!(state.closed);
        let history = &state.history;
        let limits = history.limits;
        if history.log.last_seq().is_none()
            || limits.history_events == 0
            || limits.retention.is_zero()
        {
            return None;
        }
        let empty = History::new(history.epoch, history.change_detection, limits);
        Some((
            std::mem::replace(&mut state.history, empty),
            limits.retention,
        ))
    }

    /// Events and bytes currently in the log.
    pub(crate) fn log_size(&self) -> (usize, usize) {
        let state = self.state.read();
        (state.history.log.len(), state.history.log.bytes())
    }

    /// Registers a subscriber. Callers hold the registry lock, so the topic cannot be removed
    /// between its lookup and this call (it may be closed by a concurrent shutdown; the new
    /// subscriber then ends at once).
    pub(crate) fn subscribe(&self, start: Start) -> Membership {
        let mut state = self.state.write();
        let history = &state.history;
        let live = history.log.next_seq();
        let (cursor, joined) = match start {
            Start::Live => (live, Joined::Live),
            Start::After(id) => match history.resume_point(id) {
                Ok(cursor) => (cursor, Joined::Resumed),
                Err(reason) => (live, history.reset(reason)),
            },
            Start::Malformed => (live, history.reset(ResetReason::Malformed)),
        };
        let resumed = joined == Joined::Resumed;
        let subscriber = Arc::new(Subscriber {
            waker: AtomicWaker::new(),
            cursor: AtomicU64::new(cursor),
            fresh: AtomicBool::new(!resumed),
        });
        let key = state.subscribers.insert(subscriber.clone());
        Membership {
            key,
            subscriber,
            joined,
            exempt_until: if resumed { live } else { 0 },
        }
    }

    /// Removes a subscriber; the last one out closes the topic. Returns whether it did.
    pub(crate) fn unsubscribe(&self, key: usize) -> bool {
        let mut state = self.state.write();
        state.subscribers.try_remove(key);
        let emptied = state.subscribers.is_empty();
        if emptied {
            state.closed = true;
        }
        emptied
    }

    /// Records one event and wakes every subscriber.
    pub(crate) fn publish(&self, event: Option<&str>, data: Bytes) -> Published {
        let mut state = self.state.write();
        if state.closed {
            return Published::Closed(data);
        }
        let recorded = state.history.record(event, data);
        match recorded {
            Recorded::Appended => {
                let state = RwLockWriteGuard::downgrade(state);
                for (_, subscriber) in &state.subscribers {
                    subscriber.waker.wake();
                }
            }
            Recorded::Duplicate => state.redeliver_newest_to_fresh(),
            Recorded::TooLarge(_) => {}
        }
        Published::Recorded(recorded)
    }

    /// Copies out what `subscriber` has not sent yet. Lag is not held against it while its
    /// cursor is below `exempt_until` (a resumed subscriber's backlog).
    pub(crate) fn read(
        &self,
        subscriber: &Subscriber,
        exempt_until: u64,
        waker: &std::task::Waker,
    ) -> Read {
        subscriber.waker.register(waker);
        let state = self.state.read();
        if state.closed {
            return Read::Closed;
        }
        let cursor = subscriber.cursor.load(Ordering::Relaxed);
        let history = &state.history;
        let Some(backlog) = history.log.behind(cursor) else {
            return Read::Lagged;
        };
        if backlog.events == 0 {
            return Read::Empty;
        }
        let limits = &history.limits;
        if cursor >= exempt_until
            && (backlog.events > limits.max_lag_events as u64
                || backlog.bytes_behind > limits.max_lag_bytes as u64)
        {
            return Read::Lagged;
        }
        let (chunk, next) = history.log.chunk(cursor);
        subscriber.cursor.store(next, Ordering::Relaxed);
        subscriber.fresh.store(false, Ordering::Relaxed);
        Read::Frames(chunk)
    }

    /// Whether `subscriber` has frames to read; registers its waker.
    pub(crate) fn has_pending(&self, subscriber: &Subscriber, waker: &std::task::Waker) -> bool {
        subscriber.waker.register(waker);
        let state = self.state.read();
        subscriber.cursor.load(Ordering::Relaxed) < state.history.log.next_seq()
    }

    /// Closes the topic for good (manager shutdown) and wakes every subscriber so it ends.
    pub(crate) fn close(&self) {
        let mut state = self.state.write();
        state.closed = true;
        for (_, subscriber) in &state.subscribers {
            subscriber.waker.wake();
        }
    }

    pub(crate) fn subscriber_count(&self) -> usize {
        self.state.read().subscribers.len()
    }

    /// Id of the newest event, if any was sent.
    pub(crate) fn last_id(&self) -> Option<EventId> {
        self.state.read().history.last_id()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.read().closed
    }
}

impl History {
    /// An empty history numbering its events in `epoch`.
    pub(crate) fn new(epoch: u64, change_detection: bool, limits: Limits) -> Self {
        Self {
            epoch,
            log: Log::new(),
            last_payload: None,
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
    fn last_id(&self) -> Option<EventId> {
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
        Recorded::Appended
    }

    fn reset(&self, reason: ResetReason) -> Joined {
        Joined::Reset {
            reason,
            continue_from: EventId::new(self.epoch, self.log.next_seq()),
        }
    }

    /// Where a client that last received `last` continues: the cursor right after it when
    /// everything since is still here, else why not.
    fn resume_point(&self, last: EventId) -> Result<u64, ResetReason> {
        if last.epoch() != self.epoch {
            return Err(ResetReason::UnknownEpoch);
        }
        self.log
            .resume_point(last.sequence(), self.limits.history_events)
            .map_err(|gap| match gap {
                Gap::Evicted => ResetReason::HistoryExceeded,
                Gap::Ahead => ResetReason::FromTheFuture,
            })
    }
}

impl State {
    /// Change detection skipped a duplicate; subscribers that have sent nothing yet are owed
    /// it, and the newest logged event has exactly that payload, so they rewind onto it.
    fn redeliver_newest_to_fresh(&mut self) {
        let log = &self.history.log;
        debug_assert!(
            log.holds_newest(),
            "a payload was recorded, so one is logged"
        );
        let (Some(newest), next) = (log.last_seq(), log.next_seq()) else {
            return;
        };
        for (_, subscriber) in &self.subscribers {
            if subscriber.fresh.load(Ordering::Relaxed)
                && subscriber.cursor.load(Ordering::Relaxed) == next
            {
                subscriber.cursor.store(newest, Ordering::Relaxed);
                subscriber.waker.wake();
            }
        }
    }
}
