//! Several topics on one stream: the parts of a multi-topic stream, how their events are
//! relabelled on the way out, and the composite `Last-Event-ID` that resumes every topic.
//!
//! Each topic's frames are encoded once for all its subscribers, with that topic's id. A
//! multi-topic stream copies each frame it sends and rewrites its first lines: the `event:` type
//! becomes the topic as the client named it (plus `#` and the event's own name, if it has one),
//! and the `id:` becomes the composite of every topic's position, so whichever event the client
//! saw last, its `Last-Event-ID` says where to resume each topic.
//!
//! The composite id's format is stated for users in the [`multi`](crate::multi) module;
//! [`write_composite`] and [`parse_composite`] are its two sides. `18c2f0a9d3e00-42_.1-7_.1-0_.1-1`
//! is the position of four topics, the third of which has sent nothing yet. An empty entry is
//! never written (a stream waits for every topic's position before it sends anything); one
//! read from a client resets its topic, as it cannot say what the client has seen.

use std::task::{Context, Poll};

use bytes::{BufMut, Bytes};

use crate::event_id::{EventId, IdBuf};
use crate::frame;
use crate::log::Chunk;
use crate::subscription::{EndReason, Joined, Subscription};
use crate::telemetry;

/// Separates the entries of a composite id.
const SEPARATOR: char = '_';
/// Marks an entry whose epoch is written as the delta from the previous entry's.
const DELTA: char = '.';

/// The topics of one multi-topic stream, read together.
pub(crate) struct Multiplex {
    parts: Box<[Part]>,
    /// Why it ended: the reason of the first part that ended (the others end with it, so the
    /// client reconnects once and resumes every topic from the composite id).
    ended: Option<EndReason>,
    /// Whether every part's start is known and was sent (its reset, the stream's position).
    announced: bool,
    /// Whether the position is sent as a `position` event rather than an `id:`-only frame
    /// (the client asked, with [`POSITION_QUERY`](crate::multi::POSITION_QUERY)).
    position_event: bool,
}

struct Part {
    subscription: Subscription,
    /// The event type of this topic's events: the topic as the client named it.
    label: Box<str>,
    /// Where the client resumes this topic: the id of the last of its events sent (or, before
    /// any, of the event before the first one the subscription yields; `<epoch>-0` before the
    /// topic's first event). See [`Subscription::position`]. `None` only before the stream is
    /// announced.
    position: Option<EventId>,
    /// How it joined, once known (`Some(None)`: it ended first).
    joined: Option<Option<Joined>>,
    /// Its producer finished and ended it (`EndReason::Finished`): its `end` event was sent,
    /// and the stream goes on with the other topics.
    finished: bool,
}

impl Multiplex {
    /// Reads `parts` (a subscription and its label each; at least one) as one stream, its
    /// position sent as an event if `position_event`.
    pub(crate) fn new(parts: Vec<(Subscription, String)>, position_event: bool) -> Self {
        assert!(!parts.is_empty(), "a multi-topic stream has a topic");
        let parts = parts
            .into_iter()
            .map(|(subscription, label)| Part {
                subscription,
                label: label.into(),
                position: None,
                joined: None,
                finished: false,
            })
            .collect();
        Self {
            parts,
            ended: None,
            announced: false,
            position_event,
        }
    }

    /// The first topic's subscription (for the stream's settings and its retry jitter).
    pub(crate) fn first(&self) -> &Subscription {
        &self.parts[0].subscription
    }

    /// The topics as the client named them.
    pub(crate) fn labels(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().map(|part| &*part.label)
    }

    /// Whether any topic has frames waiting (registers the waker with every one).
    pub(crate) fn has_pending(&self, cx: &Context<'_>) -> bool {
        self.ended.is_none()
            && self
                .parts
                .iter()
                .fold(false, |any, part| part.subscription.has_pending(cx) | any)
    }

    /// Why the stream ended, once it has.
    pub(crate) fn end_reason(&self) -> Option<EndReason> {
        self.ended
    }

    /// Everything the topics have to send now, relabelled, in one chunk; `joined` is told how
    /// each topic joined when that becomes known. `None` once a topic's subscription ended
    /// (after what was read before it went out).
    ///
    /// Nothing is read before every topic's start is known (with a backplane, once each has
    /// synced): then the first chunk holds a `reset` for each topic that could not resume and
    /// the stream's position, an `id:`-only frame with the composite of every topic's position,
    /// so that an id the client holds never leaves a topic out.
    ///
    /// With `append_to`, the relabelled frames are appended to that buffer and the chunk's
    /// bytes are empty (see [`Log::chunk`](crate::log::Log::chunk)).
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
        joined: impl FnMut(Option<Joined>),
        append_to: Option<&mut Vec<u8>>,
    ) -> Poll<Option<Chunk>> {
        if self.ended.is_some() {
            return Poll::Ready(None);
        }
        let mut own = Vec::new();
        let appending = append_to.is_some();
        let out = append_to.unwrap_or(&mut own);
        let before = out.len();
        if !self.announced && self.announce(cx, joined, out).is_pending() {
            return Poll::Pending;
        }
        let mut events = 0;
        #[allow(clippy::let_unit_value)] // a stamp is `()` without the `metrics` feature
        let mut oldest = telemetry::stamp();
        for index in 0..self.parts.len() {
            if self.parts[index].finished {
                continue;
            }
            match self.parts[index].subscription.poll_chunk(cx) {
                Poll::Ready(Some(chunk)) => {
                    events += chunk.events;
                    oldest = telemetry::earlier(&oldest, &chunk.oldest);
                    let mut rest = &chunk.bytes[..];
                    while !rest.is_empty() {
                        let end = frame_end(rest);
                        self.relabel(out, index, &rest[..end]);
                        rest = &rest[end..];
                    }
                }
                Poll::Ready(None) => {
                    let part = &self.parts[index].subscription;
                    let reason = part.end_reason().unwrap_or(EndReason::Closed);
                    if reason == EndReason::Finished {
                        // This topic is done: its `end` event, then the others go on; the
                        // stream ends once every topic has finished.
                        self.relabel(out, index, &frame::finished());
                        self.parts[index].finished = true;
                        if self.parts.iter().all(|part| part.finished) {
                            self.ended = Some(EndReason::Finished);
                        }
                        continue;
                    }
                    self.ended = Some(reason);
                    break;
                }
                Poll::Pending => {}
            }
        }
        if out.len() == before {
            return if self.ended.is_some() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            };
        }
        Poll::Ready(Some(Chunk {
            bytes: if appending { Bytes::new() } else { own.into() },
            events,
            oldest,
        }))
    }

    /// Waits until every topic's start is known, then appends to `out` a `reset` for each topic
    /// that could not resume and the stream's position.
    fn announce(
        &mut self,
        cx: &Context<'_>,
        mut joined: impl FnMut(Option<Joined>),
        out: &mut Vec<u8>,
    ) -> Poll<()> {
        let mut waiting = false;
        for part in self.parts.iter_mut().filter(|part| part.joined.is_none()) {
            match part.subscription.poll_joined(cx) {
                Poll::Ready(how) => {
                    // `None`: it ended before it joined; the read that follows ends the stream.
                    part.joined = Some(how);
                    joined(how);
                }
                Poll::Pending => waiting = true,
            }
        }
        if waiting {
            return Poll::Pending;
        }
        self.announced = true;
        for part in &mut *self.parts {
            part.position = part.subscription.position();
        }
        for index in 0..self.parts.len() {
            if let Some(Some(Joined::Reset {
                reason,
                continue_from,
            })) = self.parts[index].joined
            {
                self.relabel(out, index, &frame::reset(reason.as_str(), continue_from));
            }
        }
        out.put_slice(b"id: ");
        let id = out.len();
        write_composite(out, self.parts.iter().map(|part| part.position));
        if self.position_event {
            // Dispatched as an event only with data: the id again.
            let end = out.len();
            out.put_slice(b"\nevent: position\ndata: ");
            out.extend_from_within(id..end);
        }
        out.put_slice(b"\n\n");
        Poll::Ready(())
    }

    /// Appends `frame`, one encoded event of part `index`, as this stream sends it: the
    /// composite id with that part's position moved to the event's id, the part's label as the
    /// event type (`label#name` for a named event), then the event's data lines.
    fn relabel(&mut self, out: &mut Vec<u8>, index: usize, frame: &[u8]) {
        let (id, name, data) = split_frame(frame);
        if let Some(id) = id {
            self.parts[index].position = Some(id);
        }
        out.put_slice(b"id: ");
        write_composite(out, self.parts.iter().map(|part| part.position));
        out.put_slice(b"\nevent: ");
        out.put_slice(self.parts[index].label.as_bytes());
        if let Some(name) = name {
            out.put_u8(b'#');
            out.put_slice(name);
        }
        out.put_u8(b'\n');
        out.put_slice(data);
    }
}

/// Length of the first frame of `bytes`, its closing blank line included. Every line of an
/// encoded frame ends with `\n` and none is empty but the last, so the first `\n\n` ends it.
fn frame_end(bytes: &[u8]) -> usize {
    bytes
        .windows(2)
        .position(|pair| pair == b"\n\n")
        .map_or(bytes.len(), |at| at + 2)
}

/// An encoded frame's id, its event name, and the rest (its data lines and the blank line).
fn split_frame(frame: &[u8]) -> (Option<EventId>, Option<&[u8]>, &[u8]) {
    fn field<'a>(rest: &mut &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
        let value = rest.strip_prefix(name)?;
        let end = value.iter().position(|&b| b == b'\n')?;
        *rest = &value[end + 1..];
        Some(&value[..end])
    }
    let mut rest = frame;
    let id = field(&mut rest, b"id: ")
        .and_then(|id| std::str::from_utf8(id).ok())
        .and_then(|id| id.parse().ok());
    let name = field(&mut rest, b"event: ");
    (id, name, rest)
}

/// Writes the composite id of `positions` (see the module's documentation).
pub(crate) fn write_composite(
    out: &mut impl BufMut,
    positions: impl Iterator<Item = Option<EventId>>,
) {
    let mut previous: Option<u64> = None;
    for (i, position) in positions.enumerate() {
        if i > 0 {
            out.put_u8(SEPARATOR as u8);
        }
        let Some(id) = position else { continue };
        // A delta entry is an id whose epoch is the delta: written and read as one.
        let delta = previous
            .and_then(|p| id.epoch().checked_sub(p))
            .filter(|&delta| delta < 1 << 32);
        let written = match delta {
            Some(delta) => {
                out.put_u8(DELTA as u8);
                EventId::new(delta, id.sequence())
            }
            None => id,
        };
        out.put_slice(written.encode(&mut IdBuf::new()).as_bytes());
        previous = Some(id.epoch());
    }
}

/// The positions of `topics` topics in a composite id; `None` if it is not one (another number
/// of entries, an entry that is not an id).
pub(crate) fn parse_composite(text: &str, topics: usize) -> Option<Vec<Option<EventId>>> {
    let mut previous: Option<u64> = None;
    let mut positions = Vec::with_capacity(topics);
    for entry in text.split(SEPARATOR) {
        if entry.is_empty() {
            positions.push(None);
            continue;
        }
        let id = match entry.strip_prefix(DELTA) {
            Some(delta) => {
                let delta: EventId = delta.parse().ok()?;
                let epoch = previous?.checked_add(delta.epoch())?;
                EventId::new(epoch, delta.sequence())
            }
            None => entry.parse().ok()?,
        };
        previous = Some(id.epoch());
        positions.push(Some(id));
    }
    (positions.len() == topics).then_some(positions)
}

/// The composite id of `positions` as text.
#[cfg(test)]
fn composite(positions: &[Option<EventId>]) -> String {
    let mut out = Vec::new();
    write_composite(&mut out, positions.iter().copied());
    String::from_utf8(out).expect("ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(epoch: u64, sequence: u64) -> Option<EventId> {
        Some(EventId::new(epoch, sequence))
    }

    #[test]
    fn composite_ids_write_close_epochs_as_deltas_and_read_back() {
        let base = 0x18c2f0a9d3e00;
        let positions = [id(base, 42), id(base + 1, 7), None, id(base + 3, 1)];
        let text = composite(&positions);
        assert_eq!(text, "18c2f0a9d3e00-42_.1-7__.2-1");
        assert_eq!(parse_composite(&text, 4), Some(positions.to_vec()));
    }

    #[test]
    fn composite_ids_write_distant_or_smaller_epochs_in_full() {
        let positions = [id(5, 1), id(3, 2), id(3 + (1 << 40), 3), None];
        let text = composite(&positions);
        assert_eq!(text, "5-1_3-2_10000000003-3_");
        assert_eq!(parse_composite(&text, 4), Some(positions.to_vec()));
        assert_eq!(parse_composite("", 1), Some(vec![None]));
        assert_eq!(parse_composite("_", 2), Some(vec![None, None]));
    }

    #[test]
    fn composite_ids_that_do_not_fit_the_topics_are_malformed() {
        for (bad, topics) in [
            ("1-1", 2),
            ("1-1_2-2", 1),
            (".1-1", 1),
            ("_.1-1", 2),
            ("1-1_x", 2),
            ("1-1_.ffffffffffffffff-1", 2),
            ("1-1 _2-2", 2),
            ("1-1,2-2", 2),
        ] {
            assert_eq!(parse_composite(bad, topics), None, "{bad:?}");
        }
    }

    #[test]
    fn a_frame_is_split_into_id_name_and_data() {
        let frame = b"id: 1f-3\nevent: alarm\ndata: {}\n\n";
        let (id, name, data) = split_frame(frame);
        assert_eq!(id, Some(EventId::new(0x1f, 3)));
        assert_eq!(name, Some(&b"alarm"[..]));
        assert_eq!(data, b"data: {}\n\n");
        assert_eq!(
            split_frame(b"data: x\n\n"),
            (None, None, &b"data: x\n\n"[..])
        );
        assert_eq!(frame_end(b"data: a\ndata: b\n\nid: 2\n"), 17);
    }
}
