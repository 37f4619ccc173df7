//! The one SSE frame parser every test crate of the workspace uses, for the encoded frames a
//! `Subscription` yields and the bytes a raw client reads. A crate of its own, with no
//! dependency on `sse-runtime`, so that `sse-runtime`'s own tests and the workspace's tests
//! share it without a dependency cycle.
//!
//! ```
//! let chunk = b"retry: 2500\n\nid: 1f-7\nevent: alarm\ndata: {\"a\":1}\n\n: heartbeat\n\n";
//! let frames = sse_test_frames::frames(chunk);
//! assert_eq!(frames.len(), 1);
//! assert_eq!(frames[0].sequence(), 7);
//! assert_eq!(frames[0].event.as_deref(), Some("alarm"));
//! assert_eq!(frames[0].json()["a"], 1);
//! ```

/// One event parsed out of encoded frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

impl Frame {
    /// The sequence number of its id (`<epoch>-<sequence>`).
    pub fn sequence(&self) -> u64 {
        let id = self.id.as_deref().expect("an id");
        id.split_once('-')
            .and_then(|(_, sequence)| sequence.parse().ok())
            .unwrap_or_else(|| panic!("id {id:?} is not <epoch>-<sequence>"))
    }

    /// Its data, as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// The events in `chunk`, in order. Blocks without a `data:` line (retry hints, heartbeats,
/// comments) are not events and are skipped; a trailing partial block counts if it has data.
pub fn frames(chunk: &[u8]) -> Vec<Frame> {
    String::from_utf8_lossy(chunk)
        .split("\n\n")
        .filter_map(|block| {
            let mut frame = Frame::default();
            let mut data: Option<Vec<&str>> = None;
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("data: ") {
                    data.get_or_insert_with(Vec::new).push(value);
                } else if let Some(value) = line.strip_prefix("id: ") {
                    frame.id = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("event: ") {
                    frame.event = Some(value.to_owned());
                }
            }
            frame.data = data?.join("\n");
            Some(frame)
        })
        .collect()
}

/// Like [`frames`], for a chunk that must hold whole frames only (as a subscription yields
/// them): UTF-8, ending on a frame boundary.
pub fn whole_frames(chunk: &[u8]) -> Vec<Frame> {
    let text = std::str::from_utf8(chunk).expect("frames are UTF-8");
    assert!(
        text.ends_with("\n\n"),
        "chunk ends on a frame boundary: {text:?}"
    );
    frames(chunk)
}

/// The data of each event in `chunk`.
pub fn data_of(chunk: &[u8]) -> Vec<String> {
    frames(chunk).into_iter().map(|frame| frame.data).collect()
}

/// The sequence number of each event in `chunk`.
pub fn sequences_of(chunk: &[u8]) -> Vec<u64> {
    frames(chunk).iter().map(Frame::sequence).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_data_is_joined_and_blocks_without_data_are_skipped() {
        let chunk = b"id: a-1\ndata: one\ndata: two\n\nretry: 10\n\nevent: reset\ndata: {}\n\n";
        let frames = whole_frames(chunk);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].data, "one\ntwo");
        assert_eq!(frames[0].sequence(), 1);
        assert_eq!(frames[1].event.as_deref(), Some("reset"));
        assert_eq!(frames[1].id, None);
    }

    #[test]
    #[should_panic(expected = "frame boundary")]
    fn a_chunk_cut_inside_a_frame_is_not_whole() {
        whole_frames(b"id: a-1\ndata: x\n");
    }
}
