//! The publish queue: bounded, drained by one task in batches, each batch one pipeline of
//! script calls, in queue order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::Value;
use tokio::sync::mpsc;

use super::{BATCH, IDLE_TTL, Job, Shared, millis, new_epoch};
use crate::backplane::{BrokerError, BrokerErrorKind};
use crate::config::Limits;
use crate::event_id::EventId;
use crate::publish::{Outcome, PublishError};
use crate::remote::Outgoing;

/// Drains the publish queue: each batch is one pipeline, in queue order, so the events of one
/// publisher are numbered in the order it published them.
pub(super) async fn publishing(shared: Arc<Shared>, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let outcomes = publish_batch(&shared, &batch).await;
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            match &outcome {
                Ok(Outcome::Sent(_)) => {
                    shared.counters.published();
                }
                Ok(Outcome::Duplicate) => {
                    shared.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(PublishError::Fenced) => {
                    shared.fenced.fetch_add(1, Ordering::Relaxed);
                    if let Some(lease) = &job.message.fence {
                        lease.lose();
                    }
                    tracing::info!(topic = %job.message.topic, "backplane: publish fenced off (lease lost)");
                }
                Err(error) => shared.failed("publish", &error.to_string()),
            }
            if let Some(reply) = job.reply {
                let _ = reply.send(outcome);
            }
        }
    }
}

/// Runs one batch: one pipeline on one Redis; in a cluster, one per slot (a pipeline must not
/// cross slots), concurrently. Each topic's events stay in queue order: a topic is one slot.
pub(super) async fn publish_batch(
    shared: &Shared,
    batch: &[Job],
) -> Vec<Result<Outcome, PublishError>> {
    let groups = slot_groups(shared, batch);
    let epoch = new_epoch();
    let answers = futures_util::future::join_all(
        groups
            .iter()
            .map(|group| publish_group(shared, batch, group, &epoch)),
    )
    .await;
    let mut outcomes: Vec<Option<Result<Outcome, PublishError>>> = vec![None; batch.len()];
    for (group, answers) in groups.iter().zip(answers) {
        for (&i, outcome) in group.iter().zip(answers) {
            outcomes[i] = Some(outcome);
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every job is in one group"))
        .collect()
}

/// The batch's jobs by slot, each group in queue order (one group on one Redis).
fn slot_groups(shared: &Shared, batch: &[Job]) -> Vec<Vec<usize>> {
    #[cfg(feature = "redis-cluster")]
    if shared.commands.is_cluster() {
        let mut groups: Vec<(redis::cluster_routing::Slot, Vec<usize>)> = Vec::new();
        for (i, job) in batch.iter().enumerate() {
            let key = shared.keys(&job.message.topic).meta;
            let slot = redis::cluster_routing::Slot::for_key(key);
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, group)) => group.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        return groups.into_iter().map(|(_, group)| group).collect();
    }
    let _ = shared;
    vec![(0..batch.len()).collect()]
}

/// Runs the jobs `group` of `batch` as a pipeline of `EVALSHA`s; when Redis lost the script
/// (a restart, a failover), loads it and sends the refused ones again, still in order (a
/// refused script did not run). Returns the outcomes in `group`'s order.
async fn publish_group(
    shared: &Shared,
    batch: &[Job],
    group: &[usize],
    epoch: &str,
) -> Vec<Result<Outcome, PublishError>> {
    let mut outcomes: Vec<Option<Result<Outcome, PublishError>>> = vec![None; group.len()];
    let mut pending: Vec<usize> = (0..group.len()).collect();
    let mut conn = shared.commands.clone();
    for _attempt in 0..2 {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &i in &pending {
            pipe.add_command(publish_command(shared, &batch[group[i]].message, epoch));
        }
        let replies: Vec<Value> = match pipe.query_async(&mut conn).await {
            Ok(replies) => replies,
            Err(error) => {
                for &i in &pending {
                    outcomes[i] = Some(Err(PublishError::Broker(error.clone().into())));
                }
                break;
            }
        };
        let mut unloaded = Vec::new();
        for (&i, reply) in pending.iter().zip(replies) {
            match reply {
                Value::ServerError(error) if error.code() == "NOSCRIPT" => unloaded.push(i),
                reply => outcomes[i] = Some(publish_outcome(reply)),
            }
        }
        if unloaded.is_empty() {
            break;
        }
        // In a cluster, redis-rs sends the load to every node.
        let loaded = shared
            .scripts
            .publish
            .prepare_invoke()
            .load_async(&mut conn)
            .await;
        if let Err(error) = loaded {
            for &i in &unloaded {
                outcomes[i] = Some(Err(PublishError::Broker(error.clone().into())));
            }
            break;
        }
        pending = unloaded;
    }
    outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| {
                Err(PublishError::Broker(BrokerError::described(
                    BrokerErrorKind::Script,
                    "the publish script could not be loaded",
                )))
            })
        })
        .collect()
}

pub(super) fn publish_command(shared: &Shared, message: &Outgoing, epoch: &str) -> redis::Cmd {
    let keys = shared.keys(&message.topic);
    let limits: &Limits = &message.limits;
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(shared.scripts.publish.get_hash())
        .arg(3)
        .arg(&keys.meta)
        .arg(&keys.stream)
        .arg(&keys.lease)
        .arg(&message.tail[..])
        .arg(epoch)
        .arg(limits.history_events)
        .arg(millis(IDLE_TTL))
        .arg(if message.dedup { "1" } else { "0" })
        .arg(
            message
                .fence
                .as_ref()
                .map_or("", |lease| lease.token.as_str()),
        )
        .arg(&keys.channel)
        .arg(if message.listened { "1" } else { "0" });
    cmd
}

pub(super) fn publish_outcome(reply: Value) -> Result<Outcome, PublishError> {
    let bad = |what: &str| {
        PublishError::Broker(BrokerError::unexpected(format!("publish reply: {what}")))
    };
    let Value::Array(parts) = reply else {
        return Err(match reply {
            Value::ServerError(error) => {
                PublishError::Broker(redis::RedisError::from(error).into())
            }
            other => bad(&format!("{other:?}")),
        });
    };
    let status: i64 = parts
        .first()
        .and_then(|v| redis::from_redis_value_ref(v).ok())
        .ok_or_else(|| bad("status"))?;
    match status {
        -1 => Err(PublishError::Fenced),
        2 => Ok(Outcome::Unwatched),
        0 => Ok(Outcome::Duplicate),
        1 => {
            let epoch: String = parts
                .get(1)
                .and_then(|v| redis::from_redis_value_ref(v).ok())
                .ok_or_else(|| bad("epoch"))?;
            let seq: u64 = parts
                .get(2)
                .and_then(|v| redis::from_redis_value_ref(v).ok())
                .ok_or_else(|| bad("seq"))?;
            let epoch = u64::from_str_radix(&epoch, 16).map_err(|_| bad("epoch"))?;
            Ok(Outcome::Sent(EventId::new(epoch, seq)))
        }
        _ => Err(bad("status")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(parts: Vec<Value>) -> Value {
        Value::Array(parts)
    }

    fn text(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn the_scripts_statuses_are_outcomes() {
        let sent = reply(vec![Value::Int(1), text("1f"), Value::Int(7)]);
        assert_eq!(
            publish_outcome(sent),
            Ok(Outcome::Sent(EventId::new(0x1f, 7)))
        );
        let duplicate = reply(vec![Value::Int(0), text("1f"), Value::Int(7)]);
        assert_eq!(publish_outcome(duplicate), Ok(Outcome::Duplicate));
        assert_eq!(
            publish_outcome(reply(vec![Value::Int(2)])),
            Ok(Outcome::Unwatched)
        );
        assert_eq!(
            publish_outcome(reply(vec![Value::Int(-1)])),
            Err(PublishError::Fenced)
        );
    }

    #[test]
    fn a_reply_it_cannot_read_is_an_unexpected_reply_and_a_server_error_a_script_error() {
        let kind = |value| match publish_outcome(value) {
            Err(PublishError::Broker(error)) => error.kind(),
            other => panic!("expected a broker error, got {other:?}"),
        };
        for unreadable in [
            Value::Nil,
            reply(vec![]),
            reply(vec![Value::Int(9)]),
            reply(vec![Value::Int(1), text("not hex"), Value::Int(7)]),
            reply(vec![Value::Int(1), text("1f")]),
        ] {
            assert_eq!(kind(unreadable), BrokerErrorKind::UnexpectedReply);
        }
        let oom = redis::ServerError::try_from(redis::make_extension_error(
            "OOM".into(),
            Some("command not allowed when used memory > 'maxmemory'".into()),
        ));
        let oom = oom.expect("an extension error is a server error");
        assert_eq!(kind(Value::ServerError(oom)), BrokerErrorKind::Script);
    }
}
