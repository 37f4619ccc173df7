//! The engine over a Redis Cluster: its command connection (redis-rs's async cluster client:
//! a connection per node, `MOVED` and `ASK` followed, the slot map rebuilt when a node fails)
//! and the listener on sharded pub/sub.
//!
//! The listener's connection has its own client (RESP3, pushes into a channel): redis-rs
//! sends each `SSUBSCRIBE` to the node that holds the channel's slot and subscribes a
//! reconnected node again by itself. What it does not do is notice that a node is gone for
//! good (a failover) until a request for one of its slots fails, nor resubscribe a channel
//! the server dropped (its slot moved). So here, on a disconnection every watched channel is
//! subscribed again, once a second until it is confirmed (a request for the slot makes the
//! client find the slot's new owner), and so is a channel the server unsubscribed. Not yet
//! handled: a master killed outright can strand an instance's subscription on it without
//! any push saying so (seen in about one run in ten of a kill after a forced failover). Each
//! confirmation after the first resyncs its topic from the stream: whatever was published
//! while it was not subscribed is there.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, PushInfo, PushKind, RedisFuture, RedisResult, Value};
use tokio::sync::{OnceCell, mpsc};

use super::pubsub::{Control, dispatch};
use super::sync::{release, sync};
use super::{BACKOFF_MAX, PROBE_EVERY, PROBE_TIMEOUT, RESPONSE_TIMEOUT, Shared};
use crate::topic::Topic;

/// How often a cluster request is tried (redirections and reconnects) before it fails.
const RETRIES: u32 = 3;

fn builder(nodes: &[String]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(RESPONSE_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(RETRIES)
        .max_retry_wait(BACKOFF_MAX.as_millis() as u64)
}

/// The cluster's command connection, made on first use (and again after a failed attempt).
#[derive(Clone)]
pub(super) struct ClusterCommands(Arc<Inner>);

struct Inner {
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

impl ClusterCommands {
    pub(super) fn new(nodes: &[String]) -> RedisResult<Self> {
        Ok(Self(Arc::new(Inner {
            client: builder(nodes).build()?,
            connection: OnceCell::new(),
        })))
    }

    async fn connection(&self) -> RedisResult<ClusterConnection> {
        self.0
            .connection
            .get_or_try_init(|| self.0.client.get_async_connection())
            .await
            .cloned()
    }

    pub(super) fn req_packed_command<'a>(&'a self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            redis::aio::ConnectionLike::req_packed_command(&mut connection, cmd).await
        })
    }

    pub(super) fn req_packed_commands<'a>(
        &'a self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            redis::aio::ConnectionLike::req_packed_commands(
                &mut connection,
                pipeline,
                offset,
                count,
            )
            .await
        })
    }
}

/// A watched topic as the listener tracks it.
struct Watched {
    topic: Arc<Topic>,
    /// Its subscription is confirmed by the node that holds its slot.
    confirmed: bool,
    /// It has been confirmed before: the next confirmation is a resubscription, after which
    /// the topic resyncs.
    seen: bool,
}

/// Owns the sharded pub/sub connection: applies the hub's orders in order, dispatches
/// messages, and keeps every watched channel subscribed through disconnections and slot moves.
pub(super) async fn listening(
    shared: Arc<Shared>,
    nodes: Vec<String>,
    mut orders: mpsc::UnboundedReceiver<Control>,
) {
    let (pushes_tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
    let client = match builder(&nodes)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(pushes_tx)
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "backplane: the cluster client cannot be made");
            return;
        }
    };
    let mut connection: Option<ClusterConnection> = None;
    let mut watched: HashMap<String, Watched> = HashMap::new();
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tokio::select! {
            order = orders.recv() => {
                let Some(order) = order else { return };
                match order {
                    Control::Watch(topic) => {
                        let channel = shared.channel(&topic.name);
                        let entry = Watched { topic: topic.clone(), confirmed: false, seen: false };
                        watched.insert(channel.clone(), entry);
                        shared.watched.store(watched.len(), Ordering::Relaxed);
                        if let Some(connection) = &connection {
                            subscribe(connection, channel, true);
                        }
                        tokio::spawn(sync(shared.clone(), topic));
                    }
                    Control::Unwatch(topic) => {
                        let channel = shared.channel(&topic.name);
                        if !watched.get(&channel).is_some_and(|w| Arc::ptr_eq(&w.topic, &topic)) {
                            continue;
                        }
                        watched.remove(&channel);
                        if let Some(connection) = &connection {
                            subscribe(connection, channel, false);
                        }
                        tokio::spawn(release(shared.clone(), topic));
                        shared.watched.store(watched.len(), Ordering::Relaxed);
                        shared.changed.notify_waiters();
                    }
                    Control::Sync(topic) => {
                        let channel = shared.channel(&topic.name);
                        if watched.get(&channel).is_some_and(|w| Arc::ptr_eq(&w.topic, &topic)) {
                            shared.resyncs.fetch_add(1, Ordering::Relaxed);
                            tokio::spawn(sync(shared.clone(), topic));
                        }
                    }
                }
            }
            push = pushes.recv() => {
                let Some(push) = push else { return };
                pushed(&shared, &mut watched, &connection, push);
            }
            _ = probe.tick() => {
                if connection.is_none() {
                    let connected =
                        tokio::time::timeout(RESPONSE_TIMEOUT, client.get_async_connection()).await;
                    match connected {
                        Ok(Ok(made)) => {
                            if !first {
                                shared.reconnects.fetch_add(1, Ordering::Relaxed);
                            }
                            first = false;
                            connection = Some(made);
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "backplane: cluster unreachable; retrying");
                        }
                        Err(_) => tracing::debug!("backplane: cluster connect timed out; retrying"),
                    }
                }
                let Some(live) = &mut connection else { continue };
                // Every channel not confirmed: new, dropped by its node, or on a node that
                // went away (the request makes the client find the slot's owner).
                for (channel, _) in watched.iter().filter(|(_, w)| !w.confirmed) {
                    subscribe(live, channel.clone(), true);
                }
                let ping = tokio::time::timeout(PROBE_TIMEOUT, redis::cmd("PING").query_async::<Value>(live)).await;
                let all = watched.values().all(|w| w.confirmed);
                let was = shared.connected.swap(matches!(ping, Ok(Ok(_))) && all, Ordering::Relaxed);
                if was != shared.connected.load(Ordering::Relaxed) {
                    shared.changed.notify_waiters();
                }
            }
        }
    }
}

/// Sends `SSUBSCRIBE` (or `SUNSUBSCRIBE`) for `channel` without waiting for it: a request for
/// a slot whose node is gone waits for its retries, and the listener must go on meanwhile.
/// Its confirmation comes as a push; one that never comes is tried again on the next probe,
/// and one that overtakes another (an unsubscribe after a subscribe of the same channel)
/// shows as the server dropping the channel, which subscribes it again.
fn subscribe(connection: &ClusterConnection, channel: String, subscribe: bool) {
    let mut connection = connection.clone();
    tokio::spawn(async move {
        let sent = if subscribe {
            tokio::time::timeout(RESPONSE_TIMEOUT, connection.ssubscribe(&channel)).await
        } else {
            tokio::time::timeout(RESPONSE_TIMEOUT, connection.sunsubscribe(&channel)).await
        };
        if !matches!(sent, Ok(Ok(()))) {
            tracing::debug!(%channel, subscribe, ?sent, "backplane: (un)subscribe failed");
        }
    });
}

/// One push from the cluster: a message, a (re)subscription confirmed, a subscription the
/// server dropped, or a node's connection lost.
fn pushed(
    shared: &Arc<Shared>,
    watched: &mut HashMap<String, Watched>,
    connection: &Option<ClusterConnection>,
    push: PushInfo,
) {
    let channel = |data: &[Value]| match data.first() {
        Some(Value::BulkString(channel)) => String::from_utf8(channel.clone()).ok(),
        _ => None,
    };
    match push.kind {
        PushKind::SMessage => {
            if let (Some(name), Some(Value::BulkString(payload))) =
                (channel(&push.data), push.data.get(1))
                && let Some(w) = watched.get(&name)
            {
                dispatch(shared, &w.topic, payload);
            }
        }
        PushKind::SSubscribe => {
            let Some(name) = channel(&push.data) else {
                return;
            };
            let Some(w) = watched.get_mut(&name) else {
                return;
            };
            w.confirmed = true;
            if std::mem::replace(&mut w.seen, true) {
                // Resubscribed: what was published meanwhile is in the stream.
                shared.resyncs.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(sync(shared.clone(), w.topic.clone()));
            }
            if watched.values().all(|w| w.confirmed)
                && !shared.connected.swap(true, Ordering::Relaxed)
            {
                shared.changed.notify_waiters();
            }
        }
        PushKind::SUnsubscribe => {
            // Only the server unsubscribes a channel still watched: its slot moved.
            let Some(name) = channel(&push.data) else {
                return;
            };
            if let Some(w) = watched.get_mut(&name) {
                w.confirmed = false;
                tracing::info!(channel = %name, "backplane: shard channel moved; resubscribing");
                if let Some(connection) = connection {
                    subscribe(connection, name, true);
                }
            }
        }
        PushKind::Disconnection => {
            tracing::warn!("backplane: a cluster node's connection was lost; resubscribing");
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
            for w in watched.values_mut() {
                w.confirmed = false;
            }
            if shared.connected.swap(false, Ordering::Relaxed) {
                shared.changed.notify_waiters();
            }
        }
        _ => {}
    }
}
