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
use parking_lot::{RwLock, RwLockWriteGuard};
use slab::Slab;

use crate::config::Limits;
use crate::event_id::{EventId, IdBuf};
use crate::frame;
use crate::polling::PollingService;

/// Most bytes handed to the connection in one chunk when a subscriber is behind.
const MAX_CHUNK: usize = 256 * 1024;

pub(crate) struct Topic {
    pub(crate) name: Arc<str>,
    /// Lock order: the manager's registry lock, then this one. Publishing takes only this one.
    state: RwLock<State>,
}

struct State {
    history: History,
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
pub(crate) enum Recorded {
    Appended,
    /// Same payload as the previous event (change detection): not recorded.
    Duplicate,
    /// Its encoded frame is over the size limit: not recorded. Carries the frame's size.
    TooLarge(usize),
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
    Recorded(Recorded),
    /// The topic was closed; the payload is handed back so the caller can record it wherever
    /// the topic's history is now.
    Closed(Bytes),
}

/// Result of removing a subscriber.
pub(crate) struct Removed {
    /// The topic has no subscribers left and is now closed.
    pub(crate) emptied: bool,
    /// The topic's poller, to stop; only when `emptied`.
    pub(crate) poller: Option<Arc<dyn PollingService>>,
}

impl Topic {
    /// A new broadcaster; with `history`, it continues that history (same epoch, ids going on)
    /// under the new broadcaster's settings.
    pub(crate) fn new(
        name: Arc<str>,
        epoch: u64,
        change_detection: bool,
        limits: Limits,
        poller: Option<Arc<dyn PollingService>>,
        history: Option<History>,
    ) -> Self {
        let history = match history {
            Some(mut history) => {
                history.limits = limits;
                history.change_detection = change_detection;
                if !change_detection {
                    history.last_payload = None;
                }
                history
            }
            None => History::new(epoch, change_detection, limits),
        };
        Self {
            name,
            state: RwLock::new(State {
                history,
                subscribers: Slab::new(),
                closed: false,
                poller,
            }),
        }
    }

    /// How long this topic's history outlives its last subscriber.
    pub(crate) fn retention(&self) -> std::time::Duration {
        self.state.read().history.limits.retention
    }

    /// Moves the history out of a closed topic, for retention. `None` when there is nothing
    /// worth keeping (no event sent, so no client holds an id of it; or history disabled).
    pub(crate) fn take_history(&self) -> Option<History> {
        let mut state = self.state.write();
        debug_assert!(state.closed);
        let history = &state.history;
        if history.last_id().is_none() || history.limits.history_events == 0 {
            return None;
        }
        let empty = History::new(history.epoch, history.change_detection, history.limits);
        Some(std::mem::replace(&mut state.history, empty))
    }

    /// Events and bytes currently in the log.
    pub(crate) fn log_size(&self) -> (usize, usize) {
        let state = self.state.read();
        (state.history.log.entries.len(), state.history.log.bytes)
    }

    /// Registers a subscriber. Callers hold the registry lock, so the topic cannot be removed
    /// between its lookup and this call (it may be closed by a concurrent shutdown; the new
    /// subscriber then ends at once).
    pub(crate) fn subscribe(&self, start: Start) -> (usize, Arc<Subscriber>, Joined) {
        let mut state = self.state.write();
        let history = &state.history;
        let (cursor, joined) = match start {
            Start::Live => (history.log.next_seq, Joined::Live),
            Start::After(id) => history.resume_point(id),
            Start::Malformed => history.reset(ResetReason::Malformed),
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
        if cursor >= exempt_until && history.limits.is_lagging(backlog) {
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
        subscriber.cursor.load(Ordering::Relaxed) < state.history.log.next_seq
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
        self.state.read().history.last_id()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.read().closed
    }
}

impl History {
    fn new(epoch: u64, change_detection: bool, limits: Limits) -> Self {
        Self {
            epoch,
            log: Log::new(),
            last_payload: None,
            change_detection,
            limits,
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.log.bytes
    }

    /// Id of the newest event, if any was recorded.
    fn last_id(&self) -> Option<EventId> {
        (self.log.next_seq > 1).then(|| EventId::new(self.epoch, self.log.next_seq - 1))
    }

    /// Encodes `data` under the next id and appends it, unless change detection finds it equal
    /// to the previous payload or its frame is over the size limit. Either refusal spends no
    /// id, so ids stay consecutive over exactly the events a subscriber can receive.
    pub(crate) fn record(&mut self, event: Option<&str>, data: Bytes) -> Recorded {
        if self.change_detection && self.last_payload.as_deref() == Some(&data[..]) {
            return Recorded::Duplicate;
        }
        let id = EventId::new(self.epoch, self.log.next_seq);
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

    fn reset(&self, reason: ResetReason) -> (u64, Joined) {
        let next = EventId::new(self.epoch, self.log.next_seq);
        (self.log.next_seq, Joined::Reset { reason, next })
    }

    /// Where a client that last received `last` continues: right after it when everything
    /// since is still here, else a reset saying why not.
    fn resume_point(&self, last: EventId) -> (u64, Joined) {
        if last.epoch() != self.epoch {
            return self.reset(ResetReason::UnknownEpoch);
        }
        let cursor = last.sequence().saturating_add(1);
        if cursor > self.log.next_seq {
            return self.reset(ResetReason::FromTheFuture);
        }
        let history_start = self
            .log
            .next_seq
            .saturating_sub(self.limits.history_events as u64)
            .max(self.log.first_seq);
        if cursor < history_start {
            return self.reset(ResetReason::HistoryExceeded);
        }
        (
            cursor,
            Joined::Resumed {
                head: self.log.next_seq,
            },
        )
    }
}

/// How far a subscriber is behind the head of its topic.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backlog {
    /// Events not sent yet, the one being sent next included.
    pub(crate) events: u64,
    /// Bytes of the events queued *behind* the one being sent next: a single large event is
    /// never lag by itself, only what piles up after it.
    pub(crate) bytes_behind: u64,
}

impl Limits {
    fn is_lagging(&self, backlog: Backlog) -> bool {
        backlog.events > self.max_lag_events as u64
            || backlog.bytes_behind > self.max_lag_bytes as u64
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

    /// The backlog of a subscriber whose next event is `cursor`; `None` when that event has
    /// already been evicted.
    fn behind(&self, cursor: u64) -> Option<Backlog> {
        if cursor >= self.next_seq {
            return Some(Backlog {
                events: 0,
                bytes_behind: 0,
            });
        }
        if cursor < self.first_seq {
            return None;
        }
        let next = &self.entries[(cursor - self.first_seq) as usize];
        Some(Backlog {
            events: self.next_seq - cursor,
            bytes_behind: self.end_offset - next.end,
        })
    }

    /// The frames from `cursor` on, up to [`MAX_CHUNK`] bytes (at least one frame), as one
    /// chunk, and the cursor after them. `cursor` must be in the log.
    fn chunk(&self, cursor: u64) -> (Bytes, u64) {
        let start = (cursor - self.first_seq) as usize;
        let first = &self.entries[start].frame;
        let mut end = start + 1;
        let mut len = first.len();
        while end < self.entries.len() && len + self.entries[end].frame.len() <= MAX_CHUNK {
            len += self.entries[end].frame.len();
            end += 1;
        }
        let chunk = if end == start + 1 {
            first.clone()
        } else {
            let mut buf = BytesMut::with_capacity(len);
            for entry in self.entries.range(start..end) {
                buf.extend_from_slice(&entry.frame);
            }
            buf.freeze()
        };
        (chunk, cursor + (end - start) as u64)
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
        let log = &self.history.log;
        let newest = log.next_seq - 1;
        debug_assert!(
            newest >= log.first_seq,
            "a payload was recorded, so one is logged"
        );
        for (_, subscriber) in &self.subscribers {
            if subscriber.fresh.load(Ordering::Relaxed)
                && subscriber.cursor.load(Ordering::Relaxed) == log.next_seq
            {
                subscriber.cursor.store(newest, Ordering::Relaxed);
                subscriber.waker.wake();
            }
        }
    }
}
