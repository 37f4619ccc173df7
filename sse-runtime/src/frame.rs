//! Low-level SSE wire encoding, for custom handlers.
//!
//! The [`Manager`](crate::Manager) encodes every event once with these functions and shares the
//! resulting [`Bytes`] between all subscribers. They are public so that a hand-written handler can
//! speak exactly the same wire format.
//!
//! ```
//! use sse_runtime::frame;
//!
//! let bytes = frame::event(Some("7"), Some("alarm"), br#"{"level":3}"#);
//! assert_eq!(&bytes[..], b"id: 7\nevent: alarm\ndata: {\"level\":3}\n\n");
//! assert_eq!(&frame::heartbeat()[..], b":\n\n");
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, header};
use serde::Serialize;

use crate::event_id::{EventId, IdBuf};

/// The comment frame sent on idle streams so proxies keep the connection open and a dead peer
/// surfaces as a write error.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// The heartbeat frame `:\n\n` as shared bytes (no allocation).
pub fn heartbeat() -> Bytes {
    Bytes::from_static(HEARTBEAT)
}

/// Encodes one event frame: optional `id:` and `event:` lines, then `data`, one `data:` line per
/// line of input (`\n`, `\r\n` and `\r` all split lines, as the SSE parser would), then the
/// blank line that dispatches the event.
///
/// `id` and `event` must not contain line breaks; line breaks in them are replaced by spaces so a
/// caller can never inject fields into the stream.
pub fn event(id: Option<&str>, event: Option<&str>, data: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(encoded_len(id, event, data));
    write_event(&mut buf, id, event, data);
    buf.freeze()
}

/// Serializes `value` as JSON and encodes it as one event frame.
///
/// # Errors
/// The serializer's error, when `value` cannot be represented as JSON (for example a map with
/// non-string keys). Nothing is written in that case.
///
/// ```
/// let bytes = sse_runtime::frame::json_event(None, None, &[1, 2, 3]).unwrap();
/// assert_eq!(&bytes[..], b"data: [1,2,3]\n\n");
/// ```
pub fn json_event<T: Serialize + ?Sized>(
    id: Option<&str>,
    event_name: Option<&str>,
    value: &T,
) -> Result<Bytes, serde_json::Error> {
    let data = serde_json::to_vec(value)?;
    Ok(event(id, event_name, &data))
}

/// Encodes a `retry:` frame telling the browser how long to wait before reconnecting.
///
/// ```
/// assert_eq!(&sse_runtime::frame::retry(2500)[..], b"retry: 2500\n\n");
/// ```
pub fn retry(millis: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(32);
    buf.put_slice(b"retry: ");
    buf.put_slice(itoa::Buffer::new().format(millis).as_bytes());
    buf.put_slice(b"\n\n");
    buf.freeze()
}

/// The name of the event a stream ends with when its topic's producer finished and ended its
/// streams (a poller with [`Polling::end_on_stop`](crate::polling::Polling::end_on_stop)); its
/// data is `{"reason":"finished"}`. In a multi-topic stream it is `<topic>#end`, and the
/// stream goes on with its other topics. A browser that should not come back closes its
/// `EventSource` on it (`source.addEventListener("end", () => source.close())`); one that does
/// not reconnects after `retry:` like after any end of a stream.
pub const END_EVENT: &str = "end";

/// The frame of [`END_EVENT`].
pub(crate) fn finished() -> Bytes {
    event(None, Some(END_EVENT), br#"{"reason":"finished"}"#)
}

/// A `retry:` delay in milliseconds: `base` plus a random part of `spread`, so that clients
/// told to come back at once (a restart, a refused crowd) come back spread out.
pub(crate) fn jittered_millis(base: std::time::Duration, spread: std::time::Duration) -> u64 {
    use std::hash::BuildHasher;
    // A fresh `RandomState` is randomly keyed: hashing anything with it gives a random value.
    let random = std::hash::RandomState::new().hash_one(());
    base.as_millis() as u64 + random % (spread.as_millis() as u64).max(1)
}

/// Sets the three SSE response headers: `Content-Type: text/event-stream`,
/// `Cache-Control: no-cache` and `X-Accel-Buffering: no` (so nginx-style proxies pass events
/// through instead of buffering them).
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// sse_runtime::frame::set_headers(&mut headers);
/// assert_eq!(headers["content-type"], "text/event-stream");
/// ```
pub fn set_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

/// The `reset` event that tells a client its `Last-Event-ID` could not be resumed from:
/// `{"reason", "continueFrom"}`, with the id just before `continue_from` (the live stream's
/// first), so a reconnect after it resumes from there instead of being reset again.
pub(crate) fn reset(reason: &str, continue_from: EventId) -> Bytes {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Reset<'a> {
        reason: &'a str,
        continue_from: String,
    }
    let data = serde_json::to_vec(&Reset {
        reason,
        continue_from: continue_from.to_string(),
    })
    .expect("plain struct serializes");
    let here = EventId::new(continue_from.epoch(), continue_from.sequence() - 1);
    event(Some(&here.to_string()), Some("reset"), &data)
}

/// A frame that carries only an id: `id: <id>` and the blank line. A client takes the id as its
/// last event id (what it sends as `Last-Event-ID` when it reconnects) and, as the data is empty,
/// dispatches no event (WHATWG HTML, "dispatch the event", steps 1 and 2). It tells a stream's
/// client where it is before the first event it receives.
pub(crate) fn position(id: EventId) -> Bytes {
    let mut buf = BytesMut::with_capacity(48);
    write_line(&mut buf, b"id: ", id.encode(&mut IdBuf::new()).as_bytes());
    buf.put_u8(b'\n');
    buf.freeze()
}

pub(crate) fn encoded_len(id: Option<&str>, event: Option<&str>, data: &[u8]) -> usize {
    let lines = 1 + memchr::memchr2_iter(b'\n', b'\r', data).count();
    id.map_or(0, |id| id.len() + 5) + event.map_or(0, |e| e.len() + 8) + data.len() + lines * 7 + 1
}

/// Appends one event frame to `buf`.
pub(crate) fn write_event(buf: &mut BytesMut, id: Option<&str>, event: Option<&str>, data: &[u8]) {
    if let Some(id) = id {
        write_field(buf, b"id: ", id.as_bytes());
    }
    if let Some(event) = event {
        write_field(buf, b"event: ", event.as_bytes());
    }
    let mut rest = data;
    loop {
        match line_break(rest) {
            Some(at) => {
                write_line(buf, b"data: ", &rest[..at]);
                let skip = if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[at + skip..];
            }
            None => {
                write_line(buf, b"data: ", rest);
                break;
            }
        }
    }
    buf.put_u8(b'\n');
}

/// Where the first line break (`\n` or `\r`) in `bytes` is. A payload is scanned with memchr's
/// vectorised search: issue 29 measured the byte-at-a-time scans (three per event) at about
/// 2 500 instructions for a 100-byte event, ten times that for 1 KiB.
fn line_break(bytes: &[u8]) -> Option<usize> {
    memchr::memchr2(b'\n', b'\r', bytes)
}

/// Appends `name`, `value` and a line feed; `value` holds no line break.
fn write_line(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    buf.put_slice(name);
    buf.put_slice(value);
    buf.put_u8(b'\n');
}

/// Appends a one-line field whose value comes from the application (an id, an event name):
/// a line break in it becomes a space, so that it cannot end the field and start another.
fn write_field(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    if line_break(value).is_none() {
        return write_line(buf, name, value);
    }
    buf.put_slice(name);
    buf.extend(
        value
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
    buf.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_frame_is_an_id_line_and_the_blank_line_with_no_data() {
        let frame = position(EventId::new(0x1f, 0));
        assert_eq!(&frame[..], b"id: 1f-0\n\n");
    }

    #[test]
    fn data_lines_split_on_every_line_break_kind() {
        let frame = event(None, None, b"a\nb\r\nc\rd");
        assert_eq!(&frame[..], b"data: a\ndata: b\ndata: c\ndata: d\n\n");
    }

    #[test]
    fn empty_data_is_one_empty_data_line() {
        assert_eq!(&event(None, None, b"")[..], b"data: \n\n");
    }

    #[test]
    fn trailing_newline_gives_a_trailing_empty_data_line() {
        assert_eq!(&event(None, None, b"x\n")[..], b"data: x\ndata: \n\n");
    }

    #[test]
    fn id_and_event_cannot_inject_fields() {
        let frame = event(Some("1\ndata: evil"), Some("a\rb"), b"{}");
        assert_eq!(&frame[..], b"id: 1 data: evil\nevent: a b\ndata: {}\n\n");
    }

    #[test]
    fn capacity_estimate_is_never_short() {
        for data in [&b""[..], b"x", b"a\nb\n\nc", b"\r\n\r\n", b"{\"a\":1}"] {
            let exact = event(Some("12-3"), Some("e"), data).len();
            assert!(encoded_len(Some("12-3"), Some("e"), data) >= exact);
        }
    }

    #[test]
    fn headers_are_the_three_sse_headers() {
        let mut headers = HeaderMap::new();
        set_headers(&mut headers);
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(headers["cache-control"], "no-cache");
        assert_eq!(headers["x-accel-buffering"], "no");
    }
}
