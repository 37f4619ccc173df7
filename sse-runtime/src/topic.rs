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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::{RwLock, RwLockWriteGuard};
use slab::Slab;

use crate::config::Limits;
use crate::event_id::{EventId, IdBuf};
use crate::frame;
use crate::log::{Chunk, Gap, Log};

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
    /// False while a broker-backed topic waits for its first snapshot. Subscribers that join
    /// meanwhile are pending (cursor [`PENDING`]) and resolve where they start once it is in;
    /// nothing is ever numbered or sent before, so no id can be wrong. Always true in-process.
    synced: bool,
    /// Broker frames that cannot be appended yet (before the first snapshot, or beyond a gap),
    /// by sequence. Bounded by the log's event limit: what does not fit is fetched again.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    early: BTreeMap<u64, (u64, Bytes)>,
    /// Subscribers that joined before the first snapshot, by key, with where they asked to
    /// start: placed by that snapshot, all at once, so none misses what follows it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pending: Vec<(usize, Start)>,
    /// How those subscribers joined, until each one's connection collects it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    placed: Vec<(usize, Joined, u64)>,
    /// A gap repair (or resync) is on its way: one fetch per topic, not one per frame or client.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    repairing: bool,
}

/// The cursor of a subscriber whose start is not resolved yet: above every sequence, so it
/// reads nothing and never counts as lagging.
const PENDING: u64 = u64::MAX;

/// What a broker-backed topic was told by a snapshot: its epoch, the newest sequence the broker
/// has numbered, and the frames it still holds from the requested point on, oldest first.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Snapshot {
    pub(crate) epoch: u64,
    pub(crate) last_seq: u64,
    pub(crate) frames: Vec<(u64, Bytes)>,
}

/// What a broker-backed topic needs after a frame or snapshot was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Applied {
    Done,
    /// A gap, or a new epoch (the broker lost the topic): fetch a snapshot. Where it starts
    /// follows from [`Topic::sync_point`]: after the newest event held, or the whole tail when
    /// the epoch differs.
    Fetch,
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
    /// How far past its newest event a client's last id may be and still resume: 0 in-process;
    /// with a broker, the log is one instance's cache and may trail the instance the client came
    /// from, so such a client waits for the events after its id instead of being reset.
    ahead: u64,
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

/// What the broadcaster keeps of one subscriber. Its cursor is an atomic only so the owning
/// connection can advance it under the topic's *read* lock; every access happens under the
/// topic lock, which orders them, so `Relaxed` suffices.
pub(crate) struct Subscriber {
    waker: AtomicWaker,
    /// Sequence number of the next event this subscriber will send.
    cursor: AtomicU64,
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
    /// `None` while the topic waits for its broker snapshot.
    pub(crate) joined: Option<Joined>,
    /// Lag is not held against the subscriber while its cursor is below this: a resumed
    /// subscriber's backlog (the topic's head when it joined). 0 for the others.
    pub(crate) exempt_until: u64,
}

pub(crate) enum Read {
    /// One or more whole frames, in order.
    Frames(Chunk),
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
                synced: true,
                early: BTreeMap::new(),
                pending: Vec::new(),
                placed: Vec::new(),
                repairing: false,
            }),
        }
    }

    /// A broadcaster fed by a broker: it numbers nothing itself, and its subscribers wait for
    /// the first [`merge`](Self::merge).
    pub(crate) fn unsynced(name: Arc<str>, change_detection: bool, limits: Limits) -> Self {
        let mut history = History::new(0, change_detection, limits);
        // Another instance may have sent a client events this one has not applied yet: up to a
        // history's worth (an instance further behind than that is resynced anyway).
        history.ahead = limits.history_events.max(limits.max_lag_events) as u64;
        let topic = Self::new(name, history);
        topic.state.write().synced = false;
        topic
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
    /// and [`resolve`](Self::resolve) places it later.
    pub(crate) fn subscribe(&self, start: Start) -> Membership {
        let mut state = self.state.write();
        let (cursor, joined, exempt_until) = if state.synced {
            let (cursor, joined, exempt) = state.history.start(start);
            (cursor, Some(joined), exempt)
        } else {
            (PENDING, None, 0)
        };
        let subscriber = Arc::new(Subscriber {
            waker: AtomicWaker::new(),
            cursor: AtomicU64::new(cursor),
        });
        let key = state.subscribers.insert(subscriber.clone());
        if joined.is_none() {
            state.pending.push((key, start));
        }
        Membership {
            key,
            subscriber,
            joined,
            exempt_until,
        }
    }

    /// How a pending subscriber joined and its lag exemption, once the first snapshot has
    /// placed it; `None` (waker registered) until then.
    pub(crate) fn resolve(
        &self,
        subscriber: &Subscriber,
        key: usize,
        waker: &std::task::Waker,
    ) -> Option<(Joined, u64)> {
        subscriber.waker.register(waker);
        let mut state = self.state.write();
        let index = state.placed.iter().position(|(k, ..)| *k == key)?;
        let (_, joined, exempt) = state.placed.swap_remove(index);
        Some((joined, exempt))
    }

    /// Appends one frame the broker numbered `id` (published anywhere in the cluster), in
    /// sequence order, and wakes every subscriber. A frame beyond a gap waits for the repair.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn apply(&self, id: EventId, frame: Bytes) -> Applied {
        let mut guard = self.state.write();
        let state = &mut *guard;
        if state.closed {
            return Applied::Done;
        }
        if !state.synced {
            state.hold(id, frame);
            return Applied::Done;
        }
        if id.epoch() != state.history.epoch {
            return state.request();
        }
        let next = state.history.log.next_seq();
        if id.sequence() < next {
            return Applied::Done;
        }
        if id.sequence() > next {
            state.hold(id, frame);
            return state.request();
        }
        state.history.log.append(frame, &state.history.limits);
        state.drain_early();
        let state = RwLockWriteGuard::downgrade(guard);
        state.wake_all();
        Applied::Done
    }

    /// Brings the topic in line with the broker: the first snapshot numbers it, a later one
    /// fills a gap or catches up after an outage. A new epoch (the broker lost the topic)
    /// starts a new log and ends every placed subscriber, so its client reconnects and gets one
    /// `reset`; events the broker no longer holds end the subscribers that needed them.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn merge(&self, snapshot: Snapshot) -> Applied {
        let mut guard = self.state.write();
        let state = &mut *guard;
        if state.closed {
            return Applied::Done;
        }
        if !state.synced || snapshot.epoch != state.history.epoch {
            if state.synced {
                state.evict_placed();
            }
            let start = snapshot
                .frames
                .first()
                .map_or(snapshot.last_seq + 1, |(seq, _)| *seq);
            state.history.epoch = snapshot.epoch;
            state.history.log = Log::starting_at(start);
            state.synced = true;
        }
        for (seq, frame) in snapshot.frames {
            state.append_numbered(seq, frame);
        }
        let next = state.history.log.next_seq();
        if snapshot.last_seq >= next {
            // Numbered but no longer held (trimmed while we were away).
            state.history.log.restart_at(snapshot.last_seq + 1);
        }
        state.place_pending();
        state.drain_early();
        state.repairing = false;
        let applied = if state.early.is_empty() {
            Applied::Done
        } else {
            state.request()
        };
        state.wake_all();
        applied
    }

    /// Whether the topic has its numbering (always, in-process).
    pub(crate) fn is_synced(&self) -> bool {
        self.state.read().synced
    }

    /// Where a resync continues from: the newest id held, `None` before the first snapshot.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn sync_point(&self) -> Option<EventId> {
        let state = self.state.read();
        let history = &state.history;
        state
            .synced
            .then(|| EventId::new(history.epoch, history.log.next_seq() - 1))
    }

    /// Removes a subscriber; the last one out closes the topic, unless `linger` (its poller
    /// lingers: the topic stays open with no subscriber, see [`close_if_idle`]). Returns
    /// whether it was the last.
    ///
    /// [`close_if_idle`]: Self::close_if_idle
    pub(crate) fn unsubscribe(&self, key: usize, linger: bool) -> bool {
        let mut state = self.state.write();
        state.subscribers.try_remove(key);
        // Keys are reused: a placement must not outlive its subscriber.
        state.pending.retain(|(k, _)| *k != key);
        state.placed.retain(|(k, ..)| *k != key);
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
        let Some(backlog) = history.log.behind(cursor) else {
            return Read::Lagged;
        };
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
        Recorded::Appended(id)
    }

    /// Where a subscriber asking for `start` begins: its cursor, how it joined, and below which
    /// cursor lag is not held against it (a resumed subscriber's backlog; 0 for the others).
    fn start(&self, start: Start) -> (u64, Joined, u64) {
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

impl State {
    fn wake_all(&self) {
        for (_, subscriber) in &self.subscribers {
            subscriber.waker.wake();
        }
    }

    /// Places every subscriber that joined before the snapshot, where it asked to start, before
    /// any later frame is appended: a live one gets everything after the snapshot.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn place_pending(&mut self) {
        for (key, start) in std::mem::take(&mut self.pending) {
            let Some(subscriber) = self.subscribers.get(key) else {
                continue;
            };
            let (cursor, joined, exempt) = self.history.start(start);
            subscriber.cursor.store(cursor, Ordering::Relaxed);
            self.placed.push((key, joined, exempt));
        }
    }

    /// Keeps a broker frame that cannot be appended yet, while there is room.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn hold(&mut self, id: EventId, frame: Bytes) {
        if self.early.len() < self.history.limits.retained_events() {
            self.early.insert(id.sequence(), (id.epoch(), frame));
        }
    }

    /// Asks the broker for a snapshot unless one is already on its way.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn request(&mut self) -> Applied {
        if std::mem::replace(&mut self.repairing, true) {
            Applied::Done
        } else {
            Applied::Fetch
        }
    }

    /// Appends a frame the broker numbered `seq`: an old one is skipped, one beyond the head
    /// means the events between are gone for good.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn append_numbered(&mut self, seq: u64, frame: Bytes) {
        let log = &mut self.history.log;
        if seq < log.next_seq() {
            return;
        }
        if seq > log.next_seq() {
            log.restart_at(seq);
        }
        log.append(frame, &self.history.limits);
    }

    /// Appends the held frames that now continue the log; drops stale ones.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn drain_early(&mut self) {
        while let Some(entry) = self.early.first_entry() {
            let seq = *entry.key();
            let next = self.history.log.next_seq();
            if entry.get().0 != self.history.epoch || seq < next {
                entry.remove();
            } else if seq == next {
                let (_, frame) = entry.remove();
                self.history.log.append(frame, &self.history.limits);
            } else {
                break;
            }
        }
    }

    /// Ends every placed subscriber (its cursor falls out of any log): used when the epoch
    /// changes under them, so each reconnects and is told with one `reset`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn evict_placed(&mut self) {
        for (_, subscriber) in &self.subscribers {
            if subscriber.cursor.load(Ordering::Relaxed) != PENDING {
                subscriber.cursor.store(0, Ordering::Relaxed);
            }
        }
    }
}
