//! A topic as the replica of a broker's: it numbers nothing itself; its frames come numbered
//! from the broker, one by one as published anywhere (`apply`) or as a snapshot (`merge`: the
//! first one, a gap's repair, a resync after an outage). Until its first snapshot its
//! subscribers wait, pending; frames that arrive early or beyond a gap are held until they
//! continue the log; an epoch change (the broker lost the topic) starts a new log under every
//! placed subscriber, which tells its client with one `reset` in the stream and goes on live.
//!
//! Compiled with or without an engine: the hub creates broker-backed topics through the
//! `Broker` seam, which is always there. Only the engine calls `apply`, `merge` and
//! `sync_point`.
#![cfg_attr(
    not(feature = "redis"),
    allow(
        dead_code,
        reason = "called by the broker engines, and none is compiled in"
    )
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use parking_lot::RwLockWriteGuard;

use super::{History, Joined, PENDING, Start, State, Subscriber, Topic};
use crate::config::Limits;
use crate::event_id::EventId;
use crate::log::Log;

/// What a topic keeps to follow its broker, under the topic's lock.
pub(super) struct Replica {
    /// False while a broker-backed topic waits for its first snapshot. Subscribers that join
    /// meanwhile are pending (cursor [`PENDING`]) and resolve where they start once it is in;
    /// nothing is ever numbered or sent before, so no id can be wrong. Always true in-process.
    pub(super) synced: bool,
    /// Fed by a broker (false in-process). Then a subscriber resuming from an epoch the topic
    /// is not in waits, pending, for a fresh snapshot: the broker may have moved to that
    /// epoch (a failover, a restart) before this instance heard of it, and answering
    /// `unknown-epoch` at once would send the client back to the new epoch's start, to get
    /// again what it already had.
    pub(super) backed: bool,
    /// Broker frames that cannot be appended yet (before the first snapshot, or beyond a gap),
    /// by sequence. Bounded by the log's event limit: what does not fit is fetched again.
    early: BTreeMap<u64, (u64, Bytes)>,
    /// Subscribers that joined before the first snapshot (or resumed from another epoch), by
    /// key, with where they asked to start: placed by the next snapshot, all at once, so none
    /// misses what follows it.
    pub(super) pending: Vec<(usize, Start)>,
    /// How those subscribers joined, until each one's connection collects it.
    placed: Vec<(usize, Joined, u64)>,
    /// The newest frame that arrived early but found no room: the snapshot after it must
    /// fetch it again.
    dropped: Option<EventId>,
    /// A gap repair (or resync) is on its way: one fetch per topic, not one per frame or client.
    repairing: bool,
    /// Snapshot reads begun (see [`Topic::snapshot_ticket`]), and the newest one merged: a
    /// snapshot read before the one merged last is older than what the topic holds.
    tickets: u64,
    merged: u64,
}

impl Replica {
    /// In-process: synced from the start.
    pub(super) fn synced() -> Self {
        Self {
            synced: true,
            backed: false,
            early: BTreeMap::new(),
            pending: Vec::new(),
            placed: Vec::new(),
            dropped: None,
            repairing: false,
            tickets: 0,
            merged: 0,
        }
    }

    /// Forgets subscriber `key` (keys are reused: a placement must not outlive its
    /// subscriber).
    pub(super) fn forget(&mut self, key: usize) {
        self.pending.retain(|(k, _)| *k != key);
        self.placed.retain(|(k, ..)| *k != key);
    }
}

/// What a broker-backed topic was told by a snapshot: its epoch, the newest sequence the broker
/// has numbered, and the frames it still holds from the requested point on, oldest first.
pub(crate) struct Snapshot {
    pub(crate) epoch: u64,
    pub(crate) last_seq: u64,
    pub(crate) frames: Vec<(u64, Bytes)>,
}

/// What a broker-backed topic needs after a frame or snapshot was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    Done,
    /// A gap, or a new epoch (the broker lost the topic): fetch a snapshot. Where it starts
    /// follows from [`Topic::sync_point`]: after the newest event held, or the whole tail when
    /// the epoch differs.
    Fetch,
}

impl Topic {
    /// A broadcaster fed by a broker: it numbers nothing itself, and its subscribers wait for
    /// the first [`merge`](Self::merge).
    pub(crate) fn unsynced(name: Arc<str>, change_detection: bool, limits: Limits) -> Self {
        let mut history = History::new(0, change_detection, limits);
        // Another instance may have sent a client events this one has not applied yet: up to a
        // history's worth (an instance further behind than that is resynced anyway).
        history.ahead = limits.history_events.max(limits.max_lag_events) as u64;
        let topic = Self::new(name, history);
        let mut state = topic.state.write();
        state.replica.synced = false;
        state.replica.backed = true;
        drop(state);
        topic
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
        let index = state.replica.placed.iter().position(|(k, ..)| *k == key)?;
        let (_, joined, exempt) = state.replica.placed.swap_remove(index);
        Some((joined, exempt))
    }

    /// Appends one frame the broker numbered `id` (published anywhere in the cluster), in
    /// sequence order, and wakes every subscriber. A frame beyond a gap waits for the repair.
    pub(crate) fn apply(&self, id: EventId, frame: Bytes) -> Applied {
        let mut guard = self.state.write();
        let state = &mut *guard;
        if state.closed {
            return Applied::Done;
        }
        if !state.replica.synced {
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
    /// starts a new log, and every placed subscriber goes on at its start after one `reset`
    /// (`history-lost`) in its stream: its client stays connected, so a broker restart does
    /// not end every stream of every instance at once (and bring every client back at once).
    /// Events the broker no longer holds end the subscribers that needed them.
    ///
    /// `ticket` is the one taken when the snapshot's read began: a snapshot read before the one
    /// merged last is stale and left out. (Reads run side by side: a resync after a
    /// resubscription and a gap's repair, say. Merged the other way round after a failover,
    /// the older one would send every stream back into the epoch just left.)
    pub(crate) fn merge(&self, snapshot: Snapshot, ticket: u64) -> Applied {
        let mut guard = self.state.write();
        let state = &mut *guard;
        if state.closed {
            return Applied::Done;
        }
        if ticket < state.replica.merged {
            return Applied::Done;
        }
        state.replica.merged = ticket;
        if !state.replica.synced || snapshot.epoch != state.history.epoch {
            let lost = state.replica.synced;
            let start = snapshot
                .frames
                .first()
                .map_or(snapshot.last_seq + 1, |(seq, _)| *seq);
            state.history.epoch = snapshot.epoch;
            state.history.log = Log::starting_at(start);
            state.replica.synced = true;
            if lost {
                state.reset_placed(start);
            }
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
        state.replica.repairing = false;
        let applied = if state.replica.early.is_empty() && !state.still_missing() {
            Applied::Done
        } else {
            state.request()
        };
        state.wake_all();
        applied
    }

    /// A ticket for a snapshot read about to begin, for its [`merge`](Self::merge): tickets
    /// rise in the order reads begin, which is the order the broker answers them on one
    /// connection.
    pub(crate) fn snapshot_ticket(&self) -> u64 {
        let mut state = self.state.write();
        state.replica.tickets += 1;
        state.replica.tickets
    }

    /// Whether the topic has its numbering (always, in-process).
    pub(crate) fn is_synced(&self) -> bool {
        self.state.read().replica.synced
    }

    /// Where a resync continues from: the newest id held, `None` before the first snapshot.
    pub(crate) fn sync_point(&self) -> Option<EventId> {
        let state = self.state.read();
        let history = &state.history;
        state
            .replica
            .synced
            .then(|| EventId::new(history.epoch, history.log.next_seq() - 1))
    }
}

impl State {
    /// Places every subscriber that joined before the snapshot, where it asked to start, before
    /// any later frame is appended: a live one gets everything after the snapshot.
    fn place_pending(&mut self) {
        for (key, start) in std::mem::take(&mut self.replica.pending) {
            let Some(subscriber) = self.subscribers.get(key) else {
                continue;
            };
            let (cursor, joined, exempt) = self.history.start(start);
            subscriber.cursor.store(cursor, Ordering::Relaxed);
            self.replica.placed.push((key, joined, exempt));
        }
    }

    /// Keeps a broker frame that cannot be appended yet, while there is room.
    fn hold(&mut self, id: EventId, frame: Bytes) {
        if self.replica.early.len() < self.history.limits.retained_events() {
            self.replica
                .early
                .insert(id.sequence(), (id.epoch(), frame));
        } else if self
            .replica
            .dropped
            .is_none_or(|d| d.sequence() < id.sequence())
        {
            self.replica.dropped = Some(id);
        }
    }

    /// Whether a frame dropped for lack of room is still missing from the log: then it must be
    /// fetched, or it would wait for the next publish to reveal the gap (on a quiet topic,
    /// for ever). Forgets a dropped frame the log now holds, or one of another epoch.
    fn still_missing(&mut self) -> bool {
        let missing = self.replica.dropped.is_some_and(|d| {
            d.epoch() == self.history.epoch && d.sequence() >= self.history.log.next_seq()
        });
        if !missing {
            self.replica.dropped = None;
        }
        missing
    }

    /// Asks the broker for a snapshot unless one is already on its way.
    pub(super) fn request(&mut self) -> Applied {
        if std::mem::replace(&mut self.replica.repairing, true) {
            Applied::Done
        } else {
            Applied::Fetch
        }
    }

    /// Appends a frame the broker numbered `seq`: an old one is skipped, one beyond the head
    /// means the events between are gone for good.
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
    fn drain_early(&mut self) {
        while let Some(entry) = self.replica.early.first_entry() {
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

    /// Moves every placed subscriber to `start` of the new log, with a `reset` to send first:
    /// used when the epoch changes under them.
    fn reset_placed(&mut self, start: u64) {
        for (_, subscriber) in &self.subscribers {
            if subscriber.cursor.load(Ordering::Relaxed) != PENDING {
                subscriber.cursor.store(start, Ordering::Relaxed);
                subscriber.reset.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// The replica driven by plain snapshots and frames, as an engine delivers them, without a
/// broker: the first snapshot, early frames, gaps, epoch changes, trimmed history.
#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::super::{Membership, Read};
    use super::*;
    use crate::topic::ResetReason;

    const EPOCH: u64 = 5;

    fn topic() -> Topic {
        Topic::unsynced(Arc::from("t"), false, Limits::default())
    }

    /// The frame the broker numbered `seq` in `epoch`: its text names it.
    fn frame(epoch: u64, seq: u64) -> Bytes {
        Bytes::from(format!("id: {epoch}-{seq}\ndata: {seq}\n\n"))
    }

    fn snapshot(epoch: u64, last_seq: u64, held: std::ops::RangeInclusive<u64>) -> Snapshot {
        Snapshot {
            epoch,
            last_seq,
            frames: held.map(|seq| (seq, frame(epoch, seq))).collect(),
        }
    }

    /// Merges a snapshot whose read began now.
    fn merge(topic: &Topic, snapshot: Snapshot) -> Applied {
        let ticket = topic.snapshot_ticket();
        topic.merge(snapshot, ticket)
    }

    fn id(epoch: u64, seq: u64) -> EventId {
        EventId::new(epoch, seq)
    }

    /// A subscriber and how it joined, once placed.
    struct Client {
        member: Membership,
        joined: Option<(Joined, u64)>,
    }

    impl Client {
        fn new(topic: &Topic, start: Start) -> Self {
            let member = topic.subscribe(start);
            let joined = member.joined.map(|j| (j, member.exempt_until));
            Self { member, joined }
        }

        fn joined(&mut self, topic: &Topic) -> Option<Joined> {
            if self.joined.is_none() {
                self.joined =
                    topic.resolve(&self.member.subscriber, self.member.key, Waker::noop());
            }
            self.joined.map(|(joined, _)| joined)
        }

        /// Everything it would send now, as text; `Err` names why it would end instead.
        fn read(&self, topic: &Topic) -> Result<String, &'static str> {
            let exempt = self.joined.map_or(0, |(_, exempt)| exempt);
            let mut out = String::new();
            loop {
                match topic.read(&self.member.subscriber, exempt, Waker::noop(), None) {
                    Read::Frames(chunk) => out.push_str(std::str::from_utf8(&chunk.bytes).unwrap()),
                    Read::Empty => return Ok(out),
                    Read::Lagged => return Err("lagged"),
                    Read::Closed => return Err("closed"),
                    Read::Finished => return Err("finished"),
                }
            }
        }
    }

    fn texts(epoch: u64, seqs: std::ops::RangeInclusive<u64>) -> String {
        seqs.map(|seq| std::str::from_utf8(&frame(epoch, seq)).unwrap().to_owned())
            .collect()
    }

    #[test]
    fn subscribers_before_the_first_snapshot_wait_and_are_placed_where_they_asked() {
        let topic = topic();
        let mut live = Client::new(&topic, Start::Live);
        let mut resumed = Client::new(&topic, Start::After(id(EPOCH, 2)));
        let mut stale = Client::new(&topic, Start::After(id(EPOCH - 1, 9)));
        assert!(!topic.is_synced());
        assert_eq!(topic.sync_point(), None, "nothing to continue from yet");
        assert_eq!(live.joined(&topic), None, "pending until the snapshot");
        assert_eq!(
            live.read(&topic),
            Ok(String::new()),
            "a pending subscriber reads nothing"
        );

        assert_eq!(merge(&topic, snapshot(EPOCH, 4, 1..=4)), Applied::Done);
        assert!(topic.is_synced());
        assert_eq!(topic.sync_point(), Some(id(EPOCH, 4)));
        assert_eq!(live.joined(&topic), Some(Joined::Live));
        assert_eq!(resumed.joined(&topic), Some(Joined::Resumed));
        assert!(matches!(
            stale.joined(&topic),
            Some(Joined::Reset { reason: ResetReason::UnknownEpoch, continue_from }) if continue_from == id(EPOCH, 5)
        ));
        assert_eq!(live.read(&topic), Ok(String::new()));
        assert_eq!(
            resumed.read(&topic),
            Ok(texts(EPOCH, 3..=4)),
            "the events after its id"
        );

        assert_eq!(topic.apply(id(EPOCH, 5), frame(EPOCH, 5)), Applied::Done);
        for client in [&live, &resumed, &stale] {
            assert_eq!(client.read(&topic), Ok(texts(EPOCH, 5..=5)));
        }
    }

    #[test]
    fn frames_that_arrive_before_the_first_snapshot_follow_it_in_order() {
        let topic = topic();
        let mut live = Client::new(&topic, Start::Live);
        // Published while the snapshot was on its way: the pub/sub listener is first.
        assert_eq!(topic.apply(id(EPOCH, 4), frame(EPOCH, 4)), Applied::Done);
        assert_eq!(topic.apply(id(EPOCH, 5), frame(EPOCH, 5)), Applied::Done);
        // The snapshot was taken after 4 was numbered: 4 comes once, 5 after it.
        assert_eq!(merge(&topic, snapshot(EPOCH, 4, 1..=4)), Applied::Done);
        assert_eq!(live.joined(&topic), Some(Joined::Live));
        assert_eq!(live.read(&topic), Ok(texts(EPOCH, 5..=5)));
        assert_eq!(topic.sync_point(), Some(id(EPOCH, 5)));
    }

    #[test]
    fn a_gap_asks_for_one_fetch_and_its_repair_delivers_everything_in_order() {
        let topic = topic();
        merge(&topic, snapshot(EPOCH, 3, 1..=3));
        let client = Client::new(&topic, Start::Live);
        assert_eq!(
            topic.apply(id(EPOCH, 6), frame(EPOCH, 6)),
            Applied::Fetch,
            "4 and 5 missing"
        );
        assert_eq!(
            topic.apply(id(EPOCH, 7), frame(EPOCH, 7)),
            Applied::Done,
            "one fetch on its way"
        );
        assert_eq!(
            client.read(&topic),
            Ok(String::new()),
            "nothing beyond a gap is sent"
        );
        assert_eq!(
            topic.sync_point(),
            Some(id(EPOCH, 3)),
            "the fetch continues after 3"
        );

        assert_eq!(merge(&topic, snapshot(EPOCH, 5, 4..=5)), Applied::Done);
        assert_eq!(client.read(&topic), Ok(texts(EPOCH, 4..=7)));
        assert_eq!(
            topic.apply(id(EPOCH, 9), frame(EPOCH, 9)),
            Applied::Fetch,
            "a new gap, a new fetch"
        );
    }

    #[test]
    fn a_frame_already_held_is_skipped() {
        let topic = topic();
        merge(&topic, snapshot(EPOCH, 3, 1..=3));
        let client = Client::new(&topic, Start::After(id(EPOCH, 1)));
        assert_eq!(
            topic.apply(id(EPOCH, 3), Bytes::from_static(b"a repeat\n\n")),
            Applied::Done
        );
        assert_eq!(client.read(&topic), Ok(texts(EPOCH, 2..=3)));
        assert_eq!(merge(&topic, snapshot(EPOCH, 3, 2..=3)), Applied::Done);
        assert_eq!(
            client.read(&topic),
            Ok(String::new()),
            "a second snapshot repeats nothing"
        );
    }

    #[test]
    fn a_new_epoch_resets_every_placed_subscriber_in_its_stream_and_starts_a_new_log() {
        let topic = topic();
        merge(&topic, snapshot(EPOCH, 3, 1..=3));
        let client = Client::new(&topic, Start::Live);
        let waiting = Client::new(&topic, Start::Live);
        // The broker lost the topic (a restart without persistence): it numbers anew.
        assert_eq!(
            topic.apply(id(EPOCH + 1, 1), frame(EPOCH + 1, 1)),
            Applied::Fetch
        );
        assert_eq!(
            client.read(&topic),
            Ok(String::new()),
            "nothing of the new epoch yet"
        );
        assert_eq!(merge(&topic, snapshot(EPOCH + 1, 1, 1..=1)), Applied::Done);
        // One reset, whose id is the new numbering's position before its first event, then
        // that event: the stream goes on.
        let reset = std::str::from_utf8(&crate::frame::reset("history-lost", id(EPOCH + 1, 1)))
            .unwrap()
            .to_owned();
        assert!(
            reset.starts_with(&format!("id: {}\n", id(EPOCH + 1, 0))),
            "{reset}"
        );
        assert_eq!(client.read(&topic), Ok(reset + &texts(EPOCH + 1, 1..=1)));
        assert_eq!(client.read(&topic), Ok(String::new()), "one reset only");
        topic.apply(id(EPOCH + 1, 2), frame(EPOCH + 1, 2));
        assert_eq!(client.read(&topic), Ok(texts(EPOCH + 1, 2..=2)));
        // Each placed subscriber gets its own.
        assert!(waiting.read(&topic).unwrap().contains("history-lost"));

        // A client from the old epoch is told once the broker confirms the epoch is gone.
        let mut back = Client::new(&topic, Start::After(id(EPOCH, 3)));
        assert!(back.member.fetch && back.joined(&topic).is_none());
        assert_eq!(merge(&topic, snapshot(EPOCH + 1, 2, 1..=2)), Applied::Done);
        assert!(matches!(
            back.joined(&topic),
            Some(Joined::Reset { reason: ResetReason::UnknownEpoch, continue_from }) if continue_from == id(EPOCH + 1, 3)
        ));
        let mut current = Client::new(&topic, Start::After(id(EPOCH + 1, 0)));
        assert_eq!(current.joined(&topic), Some(Joined::Resumed));
        assert_eq!(current.read(&topic), Ok(texts(EPOCH + 1, 1..=2)));
    }

    #[test]
    fn a_client_from_an_epoch_this_instance_has_not_heard_of_yet_waits_for_it_and_resumes() {
        let topic = topic();
        merge(&topic, snapshot(EPOCH, 3, 1..=3));
        let live = Client::new(&topic, Start::Live);
        assert!(!live.member.fetch, "a live subscriber needs nothing");
        // Another instance already follows the broker's new epoch (a failover moved the topic
        // there) and gave this client its first event; this instance has not heard of it yet.
        // Answering unknown-epoch now would send the client back to the epoch's start.
        let mut ahead = Client::new(&topic, Start::After(id(EPOCH + 1, 1)));
        assert!(ahead.member.fetch, "the topic asks its broker");
        let mut twin = Client::new(&topic, Start::After(id(EPOCH + 1, 1)));
        assert!(
            !twin.member.fetch,
            "one snapshot on its way serves everyone"
        );
        assert_eq!(ahead.joined(&topic), None);
        assert_eq!(ahead.read(&topic), Ok(String::new()), "it waits");
        assert_eq!(merge(&topic, snapshot(EPOCH + 1, 2, 1..=2)), Applied::Done);
        for client in [&mut ahead, &mut twin] {
            assert_eq!(client.joined(&topic), Some(Joined::Resumed));
            assert_eq!(
                client.read(&topic),
                Ok(texts(EPOCH + 1, 2..=2)),
                "nothing again"
            );
        }
        assert!(live.read(&topic).unwrap().contains("history-lost"));
    }

    #[test]
    fn events_the_broker_no_longer_holds_end_the_subscribers_that_needed_them() {
        let topic = topic();
        merge(&topic, snapshot(EPOCH, 3, 1..=3));
        let behind = Client::new(&topic, Start::After(id(EPOCH, 3)));
        // Away during an outage: 4..=8 were trimmed from the broker's stream meanwhile.
        assert_eq!(merge(&topic, snapshot(EPOCH, 10, 9..=10)), Applied::Done);
        assert_eq!(
            behind.read(&topic),
            Err("lagged"),
            "never a silent skip of 4..=8"
        );
        let late = Client::new(&topic, Start::After(id(EPOCH, 9)));
        assert_eq!(late.read(&topic), Ok(texts(EPOCH, 10..=10)));
        // Numbered but held nowhere: the log goes on after the broker's newest.
        let none_held = Snapshot {
            epoch: EPOCH,
            last_seq: 12,
            frames: Vec::new(),
        };
        assert_eq!(merge(&topic, none_held), Applied::Done);
        assert_eq!(topic.sync_point(), Some(id(EPOCH, 12)));
        assert_eq!(late.read(&topic), Err("lagged"));
    }

    /// Spec: snapshots read side by side (a resync after a resubscription and a gap's repair)
    /// can land in either order. One read before the snapshot merged last is left out: after
    /// a failover it would send every stream back into the epoch just left, to get events
    /// again under ids it already had.
    #[test]
    fn a_snapshot_read_before_the_one_merged_last_is_left_out() {
        let topic = topic();
        let mut live = Client::new(&topic, Start::Live);
        merge(&topic, snapshot(EPOCH, 3, 1..=3));
        assert_eq!(live.joined(&topic), Some(Joined::Live));
        let older = topic.snapshot_ticket();
        let newer = topic.snapshot_ticket();
        // The broker moved to a new epoch between the two reads; the newer lands first.
        assert_eq!(
            topic.merge(snapshot(EPOCH + 1, 2, 1..=2), newer),
            Applied::Done
        );
        let reset = std::str::from_utf8(&crate::frame::reset("history-lost", id(EPOCH + 1, 1)))
            .unwrap()
            .to_owned();
        assert_eq!(live.read(&topic), Ok(reset + &texts(EPOCH + 1, 1..=2)));
        assert_eq!(topic.merge(snapshot(EPOCH, 5, 1..=5), older), Applied::Done);
        assert_eq!(
            topic.sync_point(),
            Some(id(EPOCH + 1, 2)),
            "the epoch stays"
        );
        assert_eq!(
            live.read(&topic),
            Ok(String::new()),
            "no second reset, nothing again"
        );
    }

    #[test]
    fn frames_held_early_are_bounded_by_the_topics_retained_events() {
        let limits = Limits {
            history_events: 4,
            max_lag_events: 4,
            ..Limits::default()
        };
        let topic = Topic::unsynced(Arc::from("t"), false, limits);
        let mut live = Client::new(&topic, Start::Live);
        for seq in 2..=8 {
            topic.apply(id(EPOCH, seq), frame(EPOCH, seq));
        }
        assert_eq!(
            topic.state.read().replica.early.len(),
            4,
            "the rest is fetched again"
        );
        // The held 2..=5 continue a snapshot at 1; 6..=8 found no room: one fetch for them.
        assert_eq!(merge(&topic, snapshot(EPOCH, 1, 1..=1)), Applied::Fetch);
        assert_eq!(live.joined(&topic), Some(Joined::Live));
        assert_eq!(live.read(&topic), Ok(texts(EPOCH, 2..=5)));
        // Nothing more is published: the fetch alone brings what did not fit.
        assert_eq!(topic.sync_point(), Some(id(EPOCH, 5)));
        assert_eq!(merge(&topic, snapshot(EPOCH, 8, 6..=8)), Applied::Done);
        assert_eq!(live.read(&topic), Ok(texts(EPOCH, 6..=8)));
    }

    #[test]
    fn a_closed_topic_takes_no_frame_and_asks_for_nothing() {
        let topic = topic();
        merge(&topic, snapshot(EPOCH, 3, 1..=3));
        topic.close();
        assert_eq!(topic.apply(id(EPOCH, 9), frame(EPOCH, 9)), Applied::Done);
        assert_eq!(merge(&topic, snapshot(EPOCH + 1, 1, 1..=1)), Applied::Done);
        assert_eq!(topic.sync_point(), Some(id(EPOCH, 3)));
    }

    #[test]
    fn a_subscriber_that_left_before_the_snapshot_is_never_placed() {
        let topic = topic();
        let gone = Client::new(&topic, Start::Live);
        let mut stays = Client::new(&topic, Start::Live);
        topic.unsubscribe(gone.member.key, true);
        // Its key is reused by the next subscriber, which must not inherit the placement.
        let mut reused = Client::new(&topic, Start::After(id(EPOCH, 1)));
        assert_eq!(reused.member.key, gone.member.key);
        merge(&topic, snapshot(EPOCH, 2, 1..=2));
        assert_eq!(stays.joined(&topic), Some(Joined::Live));
        assert_eq!(reused.joined(&topic), Some(Joined::Resumed));
        assert_eq!(reused.read(&topic), Ok(texts(EPOCH, 2..=2)));
        assert_eq!(
            topic.state.read().replica.placed.len(),
            0,
            "every placement collected"
        );
    }
}
