//! The Lua scripts, one file each under `scripts/`: each is atomic on the node that holds its
//! topic's keys (one hash tag), and runs by its SHA (`EVALSHA`), loaded again when Redis lost
//! it (a restart).
//!
//! Each starts with the pub/sub it uses: `pubsub.lua` on one Redis, `sharded.lua` in a
//! cluster (sharded pub/sub, so a publish reaches only its shard). The two that number a topic
//! go on with `numbering.lua`, which keeps the numbering to one history of writes (a failover
//! or a restart moves it to a new epoch).

use redis::Script;

/// Every script the engine runs.
pub(super) struct Scripts {
    /// KEYS: meta, stream, lease. ARGV: tail, epoch if new, history, idle TTL ms, dedup, lease
    /// token ('' for none), channel. Returns {status, epoch, seq}: 1 sent, 0 duplicate,
    /// 2 nobody listens and nothing is retained, -1 fenced.
    pub(super) publish: Script,
    /// KEYS: meta, stream. ARGV: epoch if new, count, idle TTL ms, first sequence wanted ('' for
    /// the newest `count`), the caller's epoch. Returns {epoch, last seq, newest-first?, entries}.
    pub(super) sync: Script,
    /// KEYS: meta, stream. ARGV: channel, retention ms. Once no instance listens, the history is
    /// kept for the retention time only.
    pub(super) release: Script,
    /// KEYS: lease. ARGV: token, TTL ms.
    pub(super) renew: Script,
    /// KEYS: lease. ARGV: token, channel.
    pub(super) hand_over: Script,
}

const NUMBERING: &str = include_str!("scripts/numbering.lua");

impl Scripts {
    /// The scripts for one Redis, or (`sharded`) for a cluster.
    pub(super) fn new(sharded: bool) -> Self {
        let pubsub = if sharded {
            include_str!("scripts/sharded.lua")
        } else {
            include_str!("scripts/pubsub.lua")
        };
        let script = |parts: &[&str]| Script::new(&[&[pubsub], parts].concat().concat());
        Self {
            publish: script(&[NUMBERING, include_str!("scripts/publish.lua")]),
            sync: script(&[NUMBERING, include_str!("scripts/sync.lua")]),
            release: script(&[include_str!("scripts/release.lua")]),
            renew: script(&[include_str!("scripts/renew.lua")]),
            hand_over: script(&[include_str!("scripts/hand_over.lua")]),
        }
    }
}
