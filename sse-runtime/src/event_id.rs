//! Event ids: `<epoch>-<sequence>`.
//!
//! Every event a topic sends carries an id. The sequence increases by one per event of the
//! topic; the epoch is fixed when the topic's broadcaster is created and differs for every
//! broadcaster a process creates (and, being time-based, from those of earlier processes), so an
//! id from an earlier incarnation of a topic is never mistaken for one of the current one.

use std::fmt;
use std::str::FromStr;

/// The id of one event: the broadcaster's epoch and the event's sequence number in it.
///
/// Its text form (what goes on the wire in `id:` and comes back in `Last-Event-ID`) is the epoch
/// in lower-case hex, a dash, and the sequence in decimal.
///
/// ```
/// use sse_runtime::event_id::EventId;
///
/// let id: EventId = "18c2f0a9d3e00-42".parse().unwrap();
/// assert_eq!(id.sequence(), 42);
/// assert_eq!(id.to_string(), "18c2f0a9d3e00-42");
/// assert!("42".parse::<EventId>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventId {
    epoch: u64,
    sequence: u64,
}

impl EventId {
    pub(crate) const fn new(epoch: u64, sequence: u64) -> Self {
        Self { epoch, sequence }
    }

    /// The epoch of the broadcaster that sent the event.
    pub const fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The event's position in its topic: 1 for the first event, then one more per event.
    pub const fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Writes the text form into a stack buffer, for frame encoding without allocation.
    pub(crate) fn encode<'a>(&self, buf: &'a mut IdBuf) -> &'a str {
        let mut len = 0;
        let mut push = |bytes: &[u8]| {
            buf.0[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        push(hex(self.epoch, &mut [0; 16]));
        push(b"-");
        push(itoa::Buffer::new().format(self.sequence).as_bytes());
        // Only ASCII digits, hex letters and '-' were written.
        std::str::from_utf8(&buf.0[..len]).expect("ascii")
    }
}

/// Room for the longest id: 16 hex digits, a dash and 20 decimal digits.
pub(crate) struct IdBuf([u8; 40]);

impl IdBuf {
    pub(crate) const fn new() -> Self {
        Self([0; 40])
    }
}

/// Lower-case hex digits of `value`, written at the end of `out` (no allocation).
pub(crate) fn hex(mut value: u64, out: &mut [u8; 16]) -> &[u8] {
    let mut at = out.len();
    loop {
        at -= 1;
        out[at] = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
        if value == 0 {
            return &out[at..];
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode(&mut IdBuf::new()))
    }
}

/// A `Last-Event-ID` value that is not an id this crate produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MalformedEventId;

impl fmt::Display for MalformedEventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed event id: expected <hex epoch>-<decimal sequence>")
    }
}

impl std::error::Error for MalformedEventId {}

impl FromStr for EventId {
    type Err = MalformedEventId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, sequence) = s.split_once('-').ok_or(MalformedEventId)?;
        let digits = |part: &str, radix: u32| {
            !part.is_empty() && part.len() <= 20 && part.chars().all(|c| c.is_digit(radix))
        };
        if !digits(epoch, 16)
            || !digits(sequence, 10)
            || epoch.bytes().any(|b| b.is_ascii_uppercase())
        {
            return Err(MalformedEventId);
        }
        Ok(Self {
            epoch: u64::from_str_radix(epoch, 16).map_err(|_| MalformedEventId)?,
            sequence: sequence.parse().map_err(|_| MalformedEventId)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        for (epoch, sequence) in [(0, 0), (1, 1), (0x18c2f0a9d3e00, 42), (u64::MAX, u64::MAX)] {
            let id = EventId::new(epoch, sequence);
            assert_eq!(id.to_string().parse::<EventId>(), Ok(id));
        }
    }

    #[test]
    fn malformed_values_are_rejected() {
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "12",
            "x-1",
            "1-x",
            "1--1",
            "1-+1",
            "+1-1",
            "1- 1",
            "A-1",
            "1-99999999999999999999999",
            "11111111111111111-1",
            "١-١",
            "1-1\n",
        ] {
            assert_eq!(bad.parse::<EventId>(), Err(MalformedEventId), "{bad:?}");
        }
    }
}
