//! Syncing a topic with the broker's stream (its first snapshot, a gap's repair, a resync after
//! an outage), and releasing it when this instance stops listening.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use redis::Value;

use super::{BACKOFF_MAX, BACKOFF_MIN, IDLE_TTL, Shared, millis, new_epoch};
use crate::backplane::BrokerError;
use crate::topic::{Applied, Snapshot, Topic};

/// Brings `topic` in line with the broker, retrying with backoff while the broker is away,
/// until it is synced (or closed).
pub(super) async fn sync(shared: Arc<Shared>, topic: Arc<Topic>) {
    let keys = shared.keys(&topic.name);
    let mut conn = shared.commands.clone();
    let mut backoff = BACKOFF_MIN;
    while !topic.is_closed() {
        let (_, limits) = topic.settings();
        let ticket = topic.snapshot_ticket();
        let point = topic.sync_point();
        let (after, epoch) = match point {
            Some(id) => ((id.sequence() + 1).to_string(), format!("{:x}", id.epoch())),
            None => (String::new(), String::new()),
        };
        let reply: Result<Value, _> = shared
            .scripts
            .sync
            .key(&keys.meta)
            .key(&keys.stream)
            .arg(new_epoch())
            .arg(limits.history_events.max(1))
            .arg(millis(IDLE_TTL))
            .arg(after)
            .arg(epoch)
            .invoke_async(&mut conn)
            .await;
        match reply.map_err(BrokerError::from).and_then(snapshot) {
            Ok(snapshot) => match topic.merge(snapshot, ticket) {
                Applied::Done => {
                    shared.changed.notify_waiters();
                    return;
                }
                Applied::Fetch => {
                    shared.resyncs.fetch_add(1, Ordering::Relaxed);
                }
            },
            Err(error) => {
                tracing::debug!(topic = %topic.name, %error, "backplane: sync failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// A stream entry as `XRANGE` returns it: its id and its field-value pairs.
pub(super) type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// Reads the sync script's reply.
pub(super) fn snapshot(reply: Value) -> Result<Snapshot, BrokerError> {
    let bad = |what: String| BrokerError::unexpected(format!("sync reply: {what}"));
    let Value::Array(parts) = reply else {
        return Err(bad(format!("{reply:?}")));
    };
    let [epoch, last, newest_first, entries] =
        <[Value; 4]>::try_from(parts).map_err(|parts| bad(format!("{parts:?}")))?;
    let epoch: String = redis::from_redis_value(epoch).map_err(|e| bad(e.to_string()))?;
    let epoch =
        u64::from_str_radix(&epoch, 16).map_err(|e| bad(format!("epoch {epoch:?}: {e}")))?;
    let last_seq: u64 = redis::from_redis_value(last).map_err(|e| bad(e.to_string()))?;
    let newest_first: i64 =
        redis::from_redis_value(newest_first).map_err(|e| bad(e.to_string()))?;
    let entries: Vec<StreamEntry> =
        redis::from_redis_value(entries).map_err(|e| bad(e.to_string()))?;
    let mut frames = Vec::with_capacity(entries.len());
    for (id, fields) in entries {
        let seq = id
            .split_once('-')
            .and_then(|(seq, _)| seq.parse().ok())
            .ok_or_else(|| bad(format!("stream id {id:?}")))?;
        if let Some((_, frame)) = fields.into_iter().find(|(field, _)| field == "f") {
            frames.push((seq, Bytes::from(frame)));
        }
    }
    if newest_first == 1 {
        frames.reverse();
    }
    Ok(Snapshot {
        epoch,
        last_seq,
        frames,
    })
}

/// Tells the broker this instance no longer listens to `topic` (after unsubscribing), so the
/// history is kept for the retention time only once no instance does.
pub(super) async fn release(shared: Arc<Shared>, topic: Arc<Topic>) {
    let keys = shared.keys(&topic.name);
    let (_, limits) = topic.settings();
    let retention = if limits.history_events == 0 {
        0
    } else {
        limits.retention.as_millis() as u64
    };
    let mut conn = shared.commands.clone();
    let released: Result<i64, _> = shared
        .scripts
        .release
        .key(&keys.meta)
        .key(&keys.stream)
        .arg(&keys.channel)
        .arg(retention)
        .invoke_async(&mut conn)
        .await;
    if let Err(error) = released {
        // The keys expire a day after the last event anyway.
        tracing::debug!(topic = %topic.name, %error, "backplane: release failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A stream entry as `XRANGE` answers it: `[id, [field, value, ...]]`.
    fn entry(seq: u64, frame: &str) -> Value {
        Value::Array(vec![
            text(&format!("{seq}-0")),
            Value::Array(vec![text("f"), text(frame)]),
        ])
    }

    fn reply(newest_first: i64, entries: Vec<Value>) -> Value {
        Value::Array(vec![
            text("a0"),
            text("9"),
            Value::Int(newest_first),
            Value::Array(entries),
        ])
    }

    #[test]
    fn a_snapshot_holds_the_epoch_the_last_sequence_and_the_frames_oldest_first() {
        for (newest_first, entries) in [
            (0, vec![entry(8, "eight"), entry(9, "nine")]),
            (1, vec![entry(9, "nine"), entry(8, "eight")]),
        ] {
            let snapshot = snapshot(reply(newest_first, entries)).unwrap();
            assert_eq!((snapshot.epoch, snapshot.last_seq), (0xa0, 9));
            let frames: Vec<(u64, &[u8])> = snapshot
                .frames
                .iter()
                .map(|(seq, f)| (*seq, &f[..]))
                .collect();
            assert_eq!(frames, [(8, &b"eight"[..]), (9, b"nine")]);
        }
    }

    #[test]
    fn a_sync_reply_it_cannot_read_is_an_unexpected_reply() {
        let bad_id = Value::Array(vec![
            text("x-0"),
            Value::Array(vec![text("f"), text("frame")]),
        ]);
        for unreadable in [
            Value::Nil,
            Value::Array(vec![text("a0"), text("9")]),
            Value::Array(vec![
                text("zz"),
                text("9"),
                Value::Int(0),
                Value::Array(vec![]),
            ]),
            reply(0, vec![bad_id]),
        ] {
            let error = snapshot(unreadable).err().expect("an error");
            assert_eq!(
                error.kind(),
                crate::backplane::BrokerErrorKind::UnexpectedReply
            );
        }
    }
}
