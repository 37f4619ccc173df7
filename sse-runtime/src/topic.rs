//! The per-topic broadcaster: a bounded log of encoded events shared by every subscriber.
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
//! client reconnects and resumes from the log.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use parking_lot::{RwLock, RwLockUpgradableReadGuard, RwLockWriteGuard};
use slab::Slab;

use crate::config::Limits;
use crate::event_id::{EventId, IdBuf};
use crate::frame;
use crate::polling::PollingService;

/// Most bytes handed to the connection in one chunk when a subscriber is behind.
const MAX_CHUNK: usize = 256 * 1024;

pub(crate) struct Topic {
    pub(crate) name: Arc<str>,
    pub(crate) epoch: u64,
    change_detection: bool,
    limits: Limits,
    /// Lock order: the manager's registry lock, then this one. Publishing takes only this one.
    state: RwLock<State>,
}

struct State {
    log: Log,
    /// Payload of the newest event, kept only when change detection is on.
    last_payload: Option<Bytes>,
    subscribers: Slab<Arc<Subscriber>>,
    /// Set, under the registry lock, when the last subscriber leaves (or at shutdown): a stale
    /// handle (a poller still stopping, a publish that raced the unsubscribe) finds the topic
    /// closed and does nothing, and can never revive it.
    closed: bool,
    poller: Option<Arc<dyn PollingService>>,
}

/// The encoded events a topic keeps, oldest first, with their sequence numbers.
struct Log {
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`; equals `next_seq` when the log is empty.
    first_seq: u64,
    next_seq: u64,
    /// Bytes of all frames currently in `entries`.
    bytes: usize,
    /// Bytes of all frames ever appended: the stream offset just past the newest frame.
    end_offset: u64,
}

/// A topic's log without the topic: what outlives the last subscriber during the retention time.
pub(crate) struct History {
    epoch: u64,
    log: Log,
    last_payload: Option<Bytes>,
}

struct Entry {
    frame: Bytes,
    /// Stream offset just past this frame.
    end: u64,
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

/// Where a new subscriber starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// With the next event published.
    Live,
    /// After the event with this id.
    After(EventId),
    /// The client sent a last event id that is not one of ours.
    Malformed,
}

/// Where a new subscriber actually started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Joined {
    Live,
    /// Resuming: the retained events after the client's last id come first. Until the
    /// subscriber has sent everything up to `head` (the topic's head when it joined), that
    /// backlog does not count as lag.
    Resumed {
        head: u64,
    },
    /// The client's last id cannot be resumed from; it continues live from `next`.
    Reset {
        reason: ResetReason,
        next: EventId,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResetReason {
    /// The client's last event id does not parse.
    Malformed,
    /// The id belongs to another broadcaster (an earlier incarnation, another server).
    UnknownEpoch,
    /// The events after the id are no longer retained.
    HistoryExceeded,
    /// The id is ahead of anything this topic has sent.
    FromTheFuture,
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
    Sent,
    /// Same payload as the previous event: only subscribers that had nothing yet got it.
    Duplicate,
    Closed,
}

/// Result of removing a subscriber.
pub(crate) struct Removed {
    /// The topic has no subscribers left and is now closed.
    pub(crate) emptied: bool,
    /// The topic's poller, to stop; only when `emptied`.
    pub(crate) poller: Option<Arc<dyn PollingService>>,
}

impl Topic {
    /// A new broadcaster; with `history`, it continues that history (same epoch, ids going on).
    pub(crate) fn new(
        name: Arc<str>,
        epoch: u64,
        change_detection: bool,
        limits: Limits,
        poller: Option<Arc<dyn PollingService>>,
        history: Option<History>,
    ) -> Self {
        let history = history.unwrap_or(History {
            epoch,
            log: Log::new(),
            last_payload: None,
        });
        Self {
            name,
            epoch: history.epoch,
            change_detection,
            limits,
            state: RwLock::new(State {
                log: history.log,
                last_payload: history.last_payload.filter(|_| change_detection),
                subscribers: Slab::new(),
                closed: false,
                poller,
            }),
        }
    }

    /// How long this topic's history outlives its last subscriber.
    pub(crate) fn retention(&self) -> std::time::Duration {
        self.limits.retention
    }

    /// Moves the log out of a closed topic, for retention. `None` when there is nothing worth
    /// keeping (no event sent, or history disabled).
    pub(crate) fn take_history(&self) -> Option<History> {
        let mut state = self.state.write();
        debug_assert!(state.closed);
        if state.log.next_seq == 1 || self.limits.history_events == 0 {
            return None;
        }
        Some(History {
            epoch: self.epoch,
            log: std::mem::replace(&mut state.log, Log::new()),
            last_payload: state.last_payload.take(),
        })
    }

    /// Events and bytes currently in the log.
    pub(crate) fn log_size(&self) -> (usize, usize) {
        let state = self.state.read();
        (state.log.entries.len(), state.log.bytes)
    }

    /// Registers a subscriber. Callers hold the registry lock, so the topic cannot be removed
    /// between its lookup and this call (it may be closed by a concurrent shutdown; the new
    /// subscriber then ends at once).
    pub(crate) fn subscribe(&self, start: Start) -> (usize, Arc<Subscriber>, Joined) {
        let mut state = self.state.write();
        let (cursor, joined) = match start {
            Start::Live => (state.log.next_seq, Joined::Live),
            Start::After(id) => state.resume_point(self.epoch, id, &self.limits),
            Start::Malformed => state.reset(self.epoch, ResetReason::Malformed),
        };
        let subscriber = Arc::new(Subscriber {
            waker: AtomicWaker::new(),
            cursor: AtomicU64::new(cursor),
            fresh: AtomicBool::new(!matches!(joined, Joined::Resumed { .. })),
        });
        let key = state.subscribers.insert(subscriber.clone());
        (key, subscriber, joined)
    }

    /// Removes a subscriber; the last one out closes the topic and hands back its poller.
    pub(crate) fn unsubscribe(&self, key: usize) -> Removed {
        let mut state = self.state.write();
        state.subscribers.try_remove(key);
        let emptied = state.subscribers.is_empty();
        if emptied {
            state.closed = true;
        }
        Removed {
            emptied,
            poller: if emptied { state.poller.take() } else { None },
        }
    }

    /// Appends one event and wakes every subscriber.
    pub(crate) fn publish(&self, event: Option<&str>, data: Bytes) -> Published {
        let state = self.state.upgradable_read();
        if state.closed {
            return Published::Closed;
        }
        if self.change_detection && state.last_payload.as_deref() == Some(&data[..]) {
            let mut state = RwLockUpgradableReadGuard::upgrade(state);
            state.redeliver_newest_to_fresh();
            return Published::Duplicate;
        }
        let mut state = RwLockUpgradableReadGuard::upgrade(state);
        let id = EventId::new(self.epoch, state.log.next_seq);
        let frame = frame::event(Some(id.encode(&mut IdBuf::new())), event, &data);
        state.log.append(frame, &self.limits);
        if self.change_detection {
            state.last_payload = Some(data);
        }
        let state = RwLockWriteGuard::downgrade(state);
        for (_, subscriber) in &state.subscribers {
            subscriber.waker.wake();
        }
        Published::Sent
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
        if cursor >= state.log.next_seq {
            return Read::Empty;
        }
        if cursor < state.log.first_seq {
            return Read::Lagged;
        }
        let start = (cursor - state.log.first_seq) as usize;
        let behind_events = state.log.next_seq - cursor;
        let first = &state.log.entries[start];
        let behind_bytes = state.log.end_offset - (first.end - first.frame.len() as u64);
        if cursor >= exempt_until
            && (behind_events > self.limits.max_lag_events as u64
                || behind_bytes > self.limits.max_lag_bytes as u64)
        {
            return Read::Lagged;
        }
        let mut end = start + 1;
        let mut len = first.frame.len();
        while end < state.log.entries.len() && len + state.log.entries[end].frame.len() <= MAX_CHUNK
        {
            len += state.log.entries[end].frame.len();
            end += 1;
        }
        let chunk = if end == start + 1 {
            first.frame.clone()
        } else {
            let mut buf = BytesMut::with_capacity(len);
            for entry in state.log.entries.range(start..end) {
                buf.extend_from_slice(&entry.frame);
            }
            buf.freeze()
        };
        let next = cursor + (end - start) as u64;
        subscriber.cursor.store(next, Ordering::Relaxed);
        subscriber.fresh.store(false, Ordering::Relaxed);
        Read::Frames(chunk)
    }

    /// Whether `subscriber` has frames to read; registers its waker.
    pub(crate) fn has_pending(&self, subscriber: &Subscriber, waker: &std::task::Waker) -> bool {
        subscriber.waker.register(waker);
        let state = self.state.read();
        subscriber.cursor.load(Ordering::Relaxed) < state.log.next_seq
    }

    /// Closes the topic for good (manager shutdown) and wakes every subscriber so it ends.
    pub(crate) fn close(&self) -> Option<Arc<dyn PollingService>> {
        let mut state = self.state.write();
        state.closed = true;
        for (_, subscriber) in &state.subscribers {
            subscriber.waker.wake();
        }
        state.poller.take()
    }

    pub(crate) fn subscriber_count(&self) -> usize {
        self.state.read().subscribers.len()
    }

    pub(crate) fn has_poller(&self) -> bool {
        self.state.read().poller.is_some()
    }

    /// Id of the newest event, if any was sent.
    pub(crate) fn last_id(&self) -> Option<EventId> {
        let state = self.state.read();
        (state.log.next_seq > 1).then(|| EventId::new(self.epoch, state.log.next_seq - 1))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.read().closed
    }
}

impl History {
    pub(crate) fn bytes(&self) -> usize {
        self.log.bytes
    }
}

impl Log {
    const fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            first_seq: 1,
            next_seq: 1,
            bytes: 0,
            end_offset: 0,
        }
    }

    /// Appends a frame, then drops the oldest while over either bound (keeping the newest).
    fn append(&mut self, frame: Bytes, limits: &Limits) {
        self.end_offset += frame.len() as u64;
        self.bytes += frame.len();
        self.entries.push_back(Entry {
            frame,
            end: self.end_offset,
        });
        self.next_seq += 1;
        while self.entries.len() > 1
            && (self.entries.len() > limits.retained_events()
                || self.bytes > limits.retained_bytes())
        {
            let evicted = self.entries.pop_front().expect("non-empty");
            self.bytes -= evicted.frame.len();
            self.first_seq += 1;
        }
    }
}

impl State {
    /// Change detection skipped a duplicate; subscribers that have sent nothing yet are owed
    /// it, and the newest logged event has exactly that payload, so they rewind onto it.
    fn redeliver_newest_to_fresh(&mut self) {
        let newest = self.log.next_seq - 1;
        debug_assert!(
            newest >= self.log.first_seq,
            "a payload was recorded, so one is logged"
        );
        for (_, subscriber) in &self.subscribers {
            if subscriber.fresh.load(Ordering::Relaxed)
                && subscriber.cursor.load(Ordering::Relaxed) == self.log.next_seq
            {
                subscriber.cursor.store(newest, Ordering::Relaxed);
                subscriber.waker.wake();
            }
        }
    }

    fn reset(&self, epoch: u64, reason: ResetReason) -> (u64, Joined) {
        let next = EventId::new(epoch, self.log.next_seq);
        (self.log.next_seq, Joined::Reset { reason, next })
    }

    fn resume_point(&self, epoch: u64, last: EventId, limits: &Limits) -> (u64, Joined) {
        let reset = |reason| self.reset(epoch, reason);
        if last.epoch() != epoch {
            return reset(ResetReason::UnknownEpoch);
        }
        let cursor = last.sequence().saturating_add(1);
        if cursor > self.log.next_seq {
            return reset(ResetReason::FromTheFuture);
        }
        let history_start = self
            .log
            .next_seq
            .saturating_sub(limits.history_events as u64)
            .max(self.log.first_seq);
        if cursor < history_start {
            return reset(ResetReason::HistoryExceeded);
        }
        (
            cursor,
            Joined::Resumed {
                head: self.log.next_seq,
            },
        )
    }
}
