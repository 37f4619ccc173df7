//! A topic's log: its recent encoded events, oldest first, numbered by sequence.
//!
//! The log is what subscribers read from (each one a cursor into it), what a resuming client
//! continues from, and what bounds a topic's memory: it evicts its oldest events past a count
//! and a byte limit, and a subscriber whose next event was evicted has fallen out of it.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::config::Limits;
use crate::telemetry::{self, Stamp};

/// Most bytes handed to the connection in one chunk when a subscriber is behind.
const MAX_CHUNK: usize = 256 * 1024;

/// The encoded events a topic keeps, oldest first, with their sequence numbers.
pub(crate) struct Log {
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`; equals `next_seq` when the log is empty. Sequence
    /// numbers start at 1, so 0 is never an event.
    first_seq: u64,
    next_seq: u64,
    /// Bytes of all frames currently in `entries`.
    bytes: usize,
    /// Bytes of all frames ever appended: the stream offset just past the newest frame.
    end_offset: u64,
}

struct Entry {
    frame: Bytes,
    /// Stream offset just past this frame.
    end: u64,
    /// When it was appended (for the publish-to-write histogram; nothing without `metrics`).
    at: Stamp,
}

/// Frames read for one subscriber: what [`Log::chunk`] hands out.
pub(crate) struct Chunk {
    /// One or more whole frames.
    pub(crate) bytes: Bytes,
    /// How many.
    pub(crate) events: u64,
    /// When the first of them was appended.
    pub(crate) oldest: Stamp,
}

/// How far a subscriber is behind the head of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backlog {
    /// Events not sent yet, the one being sent next included.
    pub(crate) events: u64,
    /// Bytes of the events queued *behind* the one being sent next: a single large event is
    /// never lag by itself, only what piles up after it.
    pub(crate) bytes_behind: u64,
}

/// Why a client cannot continue after the sequence number it last received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gap {
    /// Events after it were evicted (or are beyond the history the topic keeps for resume).
    Evicted,
    /// It is ahead of anything the log has numbered.
    Ahead,
}

impl Log {
    pub(crate) const fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            first_seq: 1,
            next_seq: 1,
            bytes: 0,
            end_offset: 0,
        }
    }

    /// An empty log whose first event will be `seq` (a cache of a broker's log that starts
    /// there).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) const fn starting_at(seq: u64) -> Self {
        let mut log = Self::new();
        log.first_seq = seq;
        log.next_seq = seq;
        log
    }

    /// Drops every event and continues at `seq` (above `next_seq`): the events in between are
    /// gone for good, so a subscriber still before `seq` has fallen out of the log.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn restart_at(&mut self, seq: u64) {
        debug_assert!(seq >= self.next_seq);
        self.entries.clear();
        self.bytes = 0;
        self.first_seq = seq;
        self.next_seq = seq;
    }

    /// Sequence number the next appended event gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Sequence number of the newest event ever appended, if any.
    pub(crate) fn last_seq(&self) -> Option<u64> {
        (self.next_seq > 1).then(|| self.next_seq - 1)
    }

    /// Events currently held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of the frames currently held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the newest event is still held (it always is once one was appended: eviction
    /// keeps at least one).
    pub(crate) fn holds_newest(&self) -> bool {
        self.last_seq().is_some_and(|seq| seq >= self.first_seq)
    }

    /// The backlog of a subscriber whose next event is `cursor`; `None` when that event has
    /// already been evicted.
    pub(crate) fn behind(&self, cursor: u64) -> Option<Backlog> {
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
    ///
    /// With `append_to`, the frames are appended to that buffer instead and the chunk's bytes
    /// are empty: a reader that reuses its buffer allocates nothing, however many frames it
    /// reads at once. Without, a single frame is the shared encoded one (no allocation) and
    /// several are copied into a new buffer.
    pub(crate) fn chunk(&self, cursor: u64, append_to: Option<&mut Vec<u8>>) -> (Chunk, u64) {
        let start = (cursor - self.first_seq) as usize;
        let first = &self.entries[start];
        let mut end = start + 1;
        let mut len = first.frame.len();
        while end < self.entries.len() && len + self.entries[end].frame.len() <= MAX_CHUNK {
            len += self.entries[end].frame.len();
            end += 1;
        }
        let bytes = if let Some(buf) = append_to {
            buf.reserve(len);
            for entry in self.entries.range(start..end) {
                buf.extend_from_slice(&entry.frame);
            }
            Bytes::new()
        } else if end == start + 1 {
            first.frame.clone()
        } else {
            let mut buf = BytesMut::with_capacity(len);
            for entry in self.entries.range(start..end) {
                buf.extend_from_slice(&entry.frame);
            }
            buf.freeze()
        };
        let events = (end - start) as u64;
        let chunk = Chunk {
            bytes,
            events,
            oldest: first.at,
        };
        (chunk, cursor + events)
    }

    /// Where a client that last received sequence number `last` continues: the cursor right
    /// after it, when every event since is held and within the newest `history` events.
    pub(crate) fn resume_point(
        &self,
        last: u64,
        history_events: usize,
        history_bytes: usize,
    ) -> Result<u64, Gap> {
        let cursor = last.saturating_add(1);
        if cursor > self.next_seq {
            return Err(Gap::Ahead);
        }
        let history_start = self
            .next_seq
            .saturating_sub(history_events as u64)
            .max(self.first_seq);
        if cursor < history_start {
            return Err(Gap::Evicted);
        }
        // The log may hold more than the history (the lag window of slow subscribers); a
        // resume replays at most the history's bytes, or the newest event alone.
        if self.next_seq - cursor > 1 {
            let first = &self.entries[(cursor - self.first_seq) as usize];
            let replay = self.end_offset - (first.end - first.frame.len() as u64);
            if replay > history_bytes as u64 {
                return Err(Gap::Evicted);
            }
        }
        Ok(cursor)
    }

    /// Appends a frame, then drops the oldest while over either bound (keeping the newest).
    pub(crate) fn append(&mut self, frame: Bytes, limits: &Limits) {
        // A frozen buffer is shared lazily: its first clone allocates the shared header. Clone
        // it here, on the publisher, so that no reader ever allocates (nor under the topic's
        // read lock): every clone a reader makes is a reference count.
        let frame = frame.clone();
        self.end_offset += frame.len() as u64;
        self.bytes += frame.len();
        self.entries.push_back(Entry {
            frame,
            end: self.end_offset,
            at: telemetry::stamp(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(events: usize, bytes: usize) -> Limits {
        Limits {
            history_events: events,
            history_bytes: bytes,
            max_lag_events: 1,
            max_lag_bytes: 1,
            ..Limits::default()
        }
    }

    #[test]
    fn eviction_keeps_the_newest_event_even_over_the_byte_bound() {
        let mut log = Log::new();
        log.append(Bytes::from_static(b"0123456789"), &limits(10, 4));
        log.append(Bytes::from_static(b"abcdefghij"), &limits(10, 4));
        assert_eq!((log.len(), log.bytes(), log.last_seq()), (1, 10, Some(2)));
        assert!(log.holds_newest());
        assert_eq!(log.behind(1), None, "the first event was evicted");
    }

    #[test]
    fn backlog_counts_bytes_behind_the_next_event_only() {
        let mut log = Log::new();
        for frame in [&b"aaaa"[..], b"bb", b"c"] {
            log.append(Bytes::copy_from_slice(frame), &limits(10, 100));
        }
        let backlog = log.behind(1).unwrap();
        assert_eq!((backlog.events, backlog.bytes_behind), (3, 3));
        assert_eq!(log.behind(4).unwrap().events, 0);
    }

    #[test]
    fn resume_point_is_right_after_the_last_id_within_history() {
        let mut log = Log::new();
        for _ in 0..5 {
            log.append(Bytes::from_static(b"x"), &limits(10, 100));
        }
        assert_eq!(log.resume_point(5, 3, 100), Ok(6));
        assert_eq!(log.resume_point(2, 3, 100), Ok(3));
        assert_eq!(log.resume_point(1, 3, 100), Err(Gap::Evicted));
        assert_eq!(log.resume_point(6, 3, 100), Err(Gap::Ahead));
        // By bytes: three 1-byte frames to replay do not fit in 2; the newest alone always does.
        assert_eq!(log.resume_point(2, 10, 2), Err(Gap::Evicted));
        assert_eq!(log.resume_point(3, 10, 2), Ok(4));
        assert_eq!(log.resume_point(4, 10, 0), Ok(5));
        let (chunk, next) = log.chunk(3, None);
        assert_eq!((&chunk.bytes[..], chunk.events, next), (&b"xxx"[..], 3, 6));
        let mut buf = b"head:".to_vec();
        let (chunk, next) = log.chunk(4, Some(&mut buf));
        assert_eq!(
            (&buf[..], chunk.bytes.len(), chunk.events, next),
            (&b"head:xx"[..], 0, 2, 6)
        );
    }
}
