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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::{RwLock, RwLockWriteGuard};
use slab::Slab;

use crate::config::Limits;
use crate::event_id::EventId;
use crate::log::Chunk;

mod history;
mod replica;

pub(crate) use history::{History, Recorded, Start};
pub use history::{Joined, ResetReason};
use replica::Replica;
#[cfg(feature = "redis")]
pub(crate) use replica::{Applied, Snapshot};

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
    /// Set when its producer finished and asked for its streams to end
    /// ([`finish`](Topic::finish)): a subscriber that has read everything ends instead of
    /// waiting; a newcomer still gets what it starts on (the final value). Cleared by a restart.
    finished: bool,
    /// What a broker-backed topic keeps to follow its broker (in-process, it is synced from the
    /// start and holds nothing).
    replica: Replica,
}

/// The cursor of a subscriber whose start is not resolved yet: above every sequence, so it
/// reads nothing and never counts as lagging.
const PENDING: u64 = u64::MAX;

/// What the broadcaster keeps of one subscriber. Its cursor is an atomic only so the owning
/// connection can advance it under the topic's *read* lock; every access happens under the
/// topic lock, which orders them, so `Relaxed` suffices.
pub(crate) struct Subscriber {
    waker: AtomicWaker,
    /// Sequence number of the next event this subscriber will send.
    cursor: AtomicU64,
    /// A `reset` to send before what the cursor points at: the broker lost the topic's history
    /// under the open stream, and its numbering starts again (see `replica`). Set under the
    /// write lock, taken by the owning connection under the read lock.
    reset: AtomicBool,
}

/// A subscriber's place in a topic, as registered.
pub(crate) struct Membership {
    /// Its key among the topic's subscribers.
    pub(crate) key: usize,
    pub(crate) subscriber: Arc<Subscriber>,
    /// `None` while the topic waits for its broker snapshot.
    pub(crate) joined: Option<Joined>,
    /// Lag is not held against the subscriber while its cursor is below this: a resumed
    /// subscriber's backlog (the topic's head when it joined). 0 for the others.
    pub(crate) exempt_until: u64,
    /// The topic needs a snapshot from its broker to place this subscriber.
    pub(crate) fetch: bool,
}

pub(crate) enum Read {
    /// One or more whole frames, in order.
    Frames(Chunk),
    /// Everything was read, and the producer finished: the subscriber ends.
    Finished,
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
                finished: false,
                replica: Replica::synced(),
            }),
        }
    }

    /// Moves the history out of a closed topic, for retention, with how long to keep it.
    /// `None` when there is nothing worth keeping (history disabled, or no retention).
    ///
    /// A topic that has sent nothing is kept too: every stream is told its position when it
    /// opens (`<epoch>-0` before the first event), so a client cut before the first event
    /// holds an id of it, and what is published while it is away must wait for it.
    pub(crate) fn take_history(&self) -> Option<(History, std::time::Duration)> {
        let mut state = self.state.write();
        debug_assert!(state.closed);
        let history = &state.history;
        let limits = history.limits;
        if limits.history_events == 0 || limits.retention.is_zero() {
            return None;
        }
        let empty = History::new(history.epoch, history.change_detection, limits);
        Some((
            std::mem::replace(&mut state.history, empty),
            limits.retention,
        ))
    }

    /// Whether the topic detects changes, and the limits it records by.
    pub(crate) fn settings(&self) -> (bool, Limits) {
        let state = self.state.read();
        (state.history.change_detection, state.history.limits)
    }

    /// Events and bytes currently in the log.
    pub(crate) fn log_size(&self) -> (usize, usize) {
        let state = self.state.read();
        (state.history.log.len(), state.history.log.bytes())
    }

    /// Registers a subscriber. Callers hold the registry lock, so the topic cannot be removed
    /// between its lookup and this call (it may be closed by a concurrent shutdown; the new
    /// subscriber then ends at once).
    ///
    /// Until a broker-backed topic has synced, the subscriber is pending: `joined` is `None`
    /// and [`resolve`](Self::resolve) places it later. So is one that resumes a broker-backed
    /// topic from another epoch than the topic's (see `Replica::backed`); then `fetch` says
    /// the topic needs a snapshot.
    pub(crate) fn subscribe(&self, start: Start) -> Membership {
        let mut state = self.state.write();
        let elsewhere = state.replica.backed
            && matches!(start, Start::After(id) if id.epoch() != state.history.epoch);
        let (cursor, joined, exempt_until) = if state.replica.synced && !elsewhere {
            let (cursor, joined, exempt) = state.history.start(start);
            (cursor, Some(joined), exempt)
        } else {
            (PENDING, None, 0)
        };
        let subscriber = Arc::new(Subscriber {
            waker: AtomicWaker::new(),
            cursor: AtomicU64::new(cursor),
            reset: AtomicBool::new(false),
        });
        let key = state.subscribers.insert(subscriber.clone());
        let mut fetch = false;
        if joined.is_none() {
            state.replica.pending.push((key, start));
            // Before the first snapshot, that one is on its way.
            fetch = state.replica.synced && state.request() == replica::Applied::Fetch;
        }
        Membership {
            key,
            subscriber,
            joined,
            exempt_until,
            fetch,
        }
    }

    /// Removes a subscriber; the last one out closes the topic, unless `linger` (its poller
    /// lingers: the topic stays open with no subscriber, see [`close_if_idle`]). Returns
    /// whether it was the last.
    ///
    /// [`close_if_idle`]: Self::close_if_idle
    pub(crate) fn unsubscribe(&self, key: usize, linger: bool) -> bool {
        let mut state = self.state.write();
        state.subscribers.try_remove(key);
        state.replica.forget(key);
        let emptied = state.subscribers.is_empty();
        if emptied && !linger {
            state.closed = true;
        }
        emptied
    }

    /// Closes a lingering topic if it still has no subscriber; whether it is closed now.
    pub(crate) fn close_if_idle(&self) -> bool {
        let mut state = self.state.write();
        if state.subscribers.is_empty() {
            state.closed = true;
        }
        state.closed
    }

    /// Records one event and wakes every subscriber.
    pub(crate) fn publish(&self, event: Option<&str>, data: Bytes) -> Published {
        let mut state = self.state.write();
        if state.closed {
            return Published::Closed(data);
        }
        let recorded = state.history.record(event, data);
        if let Recorded::Appended(_) = recorded {
            RwLockWriteGuard::downgrade(state).wake_all();
        }
        Published::Recorded(recorded)
    }

    /// Copies out what `subscriber` has not sent yet (appended to `append_to`, if given; see
    /// [`Log::chunk`]). Lag is not held against it while its cursor is below `exempt_until` (a
    /// resumed subscriber's backlog).
    pub(crate) fn read(
        &self,
        subscriber: &Subscriber,
        exempt_until: u64,
        waker: &std::task::Waker,
        append_to: Option<&mut Vec<u8>>,
    ) -> Read {
        let state = self.state.read();
        if state.closed {
            return Read::Closed;
        }
        let cursor = subscriber.cursor.load(Ordering::Relaxed);
        let history = &state.history;
        if subscriber.reset.swap(false, Ordering::Relaxed) {
            // The stream goes on in the broker's new numbering, from its cursor: its client is
            // told first, with the id to resume from, instead of being ended (and coming
            // back, with every other client of the topic, at once).
            let continue_from = EventId::new(history.epoch, cursor);
            let frame = crate::frame::reset(ResetReason::HistoryLost.as_str(), continue_from);
            let bytes = match append_to {
                Some(buf) => {
                    buf.extend_from_slice(&frame);
                    Bytes::new()
                }
                None => frame,
            };
            return Read::Frames(Chunk {
                bytes,
                events: 0,
                oldest: crate::telemetry::stamp(),
            });
        }
        let Some(backlog) = history.log.behind(cursor) else {
            return Read::Lagged;
        };
        if backlog.events == 0 && state.finished {
            return Read::Finished;
        }
        if backlog.events == 0 {
            // Registered only now, and under the lock: a publish appends under the write lock
            // and wakes after it, so it sees this waker. A subscriber that reads frames leaves
            // no waker behind: a publish while it writes them does not wake it again (its
            // next read takes that event in the same poll; a wake would requeue it for a poll
            // that finds nothing).
            subscriber.waker.register(waker);
            return Read::Empty;
        }
        let limits = &history.limits;
        if cursor >= exempt_until
            && (backlog.events > limits.max_lag_events as u64
                || backlog.bytes_behind > limits.max_lag_bytes as u64)
        {
            return Read::Lagged;
        }
        let (chunk, next) = history.log.chunk(cursor, append_to);
        subscriber.cursor.store(next, Ordering::Relaxed);
        Read::Frames(chunk)
    }

    /// Whether `subscriber` has frames to read; registers its waker.
    pub(crate) fn has_pending(&self, subscriber: &Subscriber, waker: &std::task::Waker) -> bool {
        subscriber.waker.register(waker);
        let state = self.state.read();
        subscriber.cursor.load(Ordering::Relaxed) < state.history.log.next_seq()
    }

    /// Ends every subscriber once it has read everything recorded so far (its producer is
    /// done), and wakes them; whether it was not finished already.
    pub(crate) fn finish(&self) -> bool {
        let mut state = self.state.write();
        if state.closed || std::mem::replace(&mut state.finished, true) {
            return false;
        }
        state.wake_all();
        true
    }

    /// Undoes [`finish`](Self::finish) (its producer starts again).
    pub(crate) fn unfinish(&self) {
        self.state.write().finished = false;
    }

    /// Closes the topic for good (manager shutdown) and wakes every subscriber so it ends.
    pub(crate) fn close(&self) {
        let mut state = self.state.write();
        state.closed = true;
        state.wake_all();
    }

    pub(crate) fn subscriber_count(&self) -> usize {
        self.state.read().subscribers.len()
    }

    /// The id of the event just before `subscriber`'s next one: where a client that has read
    /// everything handed out so far would resume (`<epoch>-0` before the topic's first event).
    /// `None` before the subscriber is placed, or once it fell out of the log.
    pub(crate) fn position(&self, subscriber: &Subscriber) -> Option<EventId> {
        let state = self.state.read();
        let cursor = subscriber.cursor.load(Ordering::Relaxed);
        (cursor != PENDING && cursor > 0).then(|| EventId::new(state.history.epoch, cursor - 1))
    }

    /// Id of the newest event, if any was sent.
    pub(crate) fn last_id(&self) -> Option<EventId> {
        self.state.read().history.last_id()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.read().closed
    }
}

impl State {
    fn wake_all(&self) {
        for (_, subscriber) in &self.subscribers {
            subscriber.waker.wake();
        }
    }
}
