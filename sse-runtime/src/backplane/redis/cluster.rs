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
//! client find the slot's new owner), and so is a channel the server unsubscribed.
//!
//! Neither covers a subscription stranded without any push: a master that hangs (a paused
//! host, a partition: no FIN, no RST) says nothing, its replica takes over, and the client
//! keeps its old slot map (it asks again on a redirection or a dropped connection, not on a
//! timeout), so the subscription stays on the hung node and nothing reaches it. So every
//! probe also audits where the subscriptions are ([`audit`]): for each shard with a confirmed
//! channel, the node the client routes the channel to must be the master the cluster names.
//! Where it is not, or the probe's `PING` fails, on two probes in a row, the listener starts
//! over from the seed nodes (a fresh slot map) and subscribes every channel again. Each
//! confirmation after the first resyncs its topic from the stream: whatever was published
//! while it was not subscribed is there (a snapshot read before the one merged last is left
//! out, see [`Topic::merge`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, PushInfo, PushKind, RedisFuture, RedisResult, Value};
use tokio::sync::{OnceCell, mpsc};

use super::pubsub::{Control, dispatch};
use super::sync::{release, sync};
use super::{BACKOFF_MAX, PROBE_EVERY, PROBE_TIMEOUT, RESPONSE_TIMEOUT, Shared};
use crate::topic::Topic;

/// How long connecting to the cluster may take: redis-rs connects to every seed node (a
/// silent one costs its connection timeout), then reads the slots and connects to every node
/// they name.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3 * RESPONSE_TIMEOUT.as_secs());

/// How often a cluster request is tried (redirections and reconnects) before it fails.
const RETRIES: u32 = 3;

fn builder(nodes: &[String]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(RESPONSE_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(RETRIES)
        .max_retry_wait(BACKOFF_MAX.as_millis() as u64)
}

/// The cluster's command connection, made on first use (and again after a failed attempt),
/// and replaced when a request times out.
///
/// redis-rs's cluster client retries a timed-out request on the same node and never asks
/// for the slots again, so a master that hangs (no FIN, no RST: a paused host, a partition)
/// would keep its slots' requests timing out after its replica took over. A new connection
/// starts from the seed nodes and reads the slot map afresh.
#[derive(Clone)]
pub(super) struct ClusterCommands(Arc<Inner>);

struct Inner {
    client: ClusterClient,
    /// The connection in use and its generation: a timeout replaces it only if it is still
    /// the one that timed out, so concurrent timeouts replace it once.
    current: Mutex<(u64, Arc<OnceCell<ClusterConnection>>)>,
}

impl ClusterCommands {
    pub(super) fn new(nodes: &[String]) -> RedisResult<Self> {
        Ok(Self(Arc::new(Inner {
            client: builder(nodes).build()?,
            current: Mutex::new((0, Arc::default())),
        })))
    }

    async fn connection(&self) -> RedisResult<(u64, ClusterConnection)> {
        let (generation, cell) = self.0.current.lock().clone();
        let connection = cell
            .get_or_try_init(|| async {
                let connecting = self.0.client.get_async_connection();
                match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                    Ok(connected) => connected,
                    Err(elapsed) => Err(std::io::Error::from(elapsed).into()),
                }
            })
            .await?;
        Ok((generation, connection.clone()))
    }

    /// Replaces the connection of `generation` (if it still is the current one).
    fn replace(&self, generation: u64) {
        let mut current = self.0.current.lock();
        if current.0 == generation {
            *current = (generation + 1, Arc::default());
        }
    }

    /// Replaces the current connection: the network path to a node is suspect.
    pub(super) fn replace_current(&self) {
        let generation = self.0.current.lock().0;
        self.replace(generation);
    }

    fn check<T>(&self, generation: u64, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(error) = &result
            && error.is_timeout()
        {
            tracing::debug!(%error, "backplane: a cluster node is silent; reconnecting");
            self.replace(generation);
        }
        result
    }

    pub(super) fn req_packed_command<'a>(&'a self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut connection) = self.connection().await?;
            let result = redis::aio::ConnectionLike::req_packed_command(&mut connection, cmd).await;
            self.check(generation, result)
        })
    }

    pub(super) fn req_packed_commands<'a>(
        &'a self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut connection) = self.connection().await?;
            let result = redis::aio::ConnectionLike::req_packed_commands(
                &mut connection,
                pipeline,
                offset,
                count,
            )
            .await;
            self.check(generation, result)
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
    let mut connection: Option<ClusterConnection> = None;
    // The current connection's pushes. Each connection has its own channel: a connection
    // given up can still confirm a subscription, which must not count as the new one's.
    let mut pushes: Option<mpsc::UnboundedReceiver<PushInfo>> = None;
    let mut watched: HashMap<String, Watched> = HashMap::new();
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    // The previous probe found trouble.
    let mut in_doubt = false;
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
            push = async {
                match &mut pushes {
                    Some(pushes) => pushes.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                match push {
                    Some(push) => pushed(&shared, &mut watched, &connection, push),
                    None => pushes = None,
                }
            }
            _ = probe.tick() => {
                let mut answered = true;
                if let Some(live) = &mut connection {
                    let audit = audit(live, &watched).await;
                    let ping = redis::cmd("PING");
                    let ping = tokio::time::timeout(PROBE_TIMEOUT, ping.query_async::<Value>(live));
                    answered = matches!(ping.await, Ok(Ok(_)));
                    let trouble = match audit {
                        Audit::Held => None,
                        Audit::Stranded { channel, serves } => Some(format!(
                            "{serves} serves {channel}, but the client routes it to a node that does not answer"
                        )),
                    };
                    // Trouble counts when the next probe finds it too: a node may be slow once.
                    let doubted = std::mem::replace(&mut in_doubt, trouble.is_some());
                    if let Some(trouble) = trouble.filter(|_| doubted) {
                        in_doubt = false;
                        // Start over from the seed nodes, now: a fresh slot map, every channel
                        // subscribed again where it is served, each topic resynced on its
                        // confirmation. (The command connection may be stuck on the same node.)
                        tracing::warn!(%trouble, "backplane: cluster subscriptions in doubt; reconnecting");
                        connection = None;
                        pushes = None;
                        for w in watched.values_mut() {
                            w.confirmed = false;
                        }
                        shared.commands.replace_current();
                        if shared.connected.swap(false, Ordering::Relaxed) {
                            shared.changed.notify_waiters();
                        }
                    }
                }
                if connection.is_none() {
                    let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(&nodes)).await;
                    match connected {
                        Ok(Ok((made, its_pushes))) => {
                            if !first {
                                shared.reconnects.fetch_add(1, Ordering::Relaxed);
                            }
                            first = false;
                            connection = Some(made);
                            pushes = Some(its_pushes);
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
                let all = watched.values().all(|w| w.confirmed);
                let was = shared.connected.swap(answered && all, Ordering::Relaxed);
                if was != shared.connected.load(Ordering::Relaxed) {
                    shared.changed.notify_waiters();
                }
            }
        }
    }
}

/// What an audit of the shard subscriptions found.
enum Audit {
    /// Every watched shard's channels are routed to a node that answers, or the cluster
    /// has nowhere better to route them.
    Held,
    /// The client routes `channel` to a node that does not answer (it hangs, or it is gone
    /// and refuses connections), while the master the cluster names for it (`serves`) does,
    /// or is one the client does not know: its slot map is stale, and the subscription is
    /// where nothing reaches it.
    Stranded { channel: String, serves: String },
}

/// How long one request of an audit may take.
const AUDIT_REQUEST: Duration = Duration::from_millis(500);

/// Audits where the client's subscriptions are: for one watched channel per shard (confirmed
/// or not: a subscription sent to a node that hangs is never confirmed), whether
/// the node the client routes the channel's slot to (`CLUSTER MYID`, sent the way
/// `SSUBSCRIBE` is) answers; where it does not, whether the master the cluster names
/// (`CLUSTER SLOTS`, from any node) does. A node that answers, with a redirection or else,
/// the client mends by itself (a redirection corrects its slot map); one that does not, it
/// may keep routing to: a timeout makes it retry the same node, and a refused connection
/// makes it reconnect to the same address. Asking nothing of the
/// subscriptions themselves, it cannot be misled by channels subscribed and unsubscribed
/// meanwhile.
async fn audit(connection: &mut ClusterConnection, watched: &HashMap<String, Watched>) -> Audit {
    if watched.is_empty() {
        return Audit::Held;
    }
    let mut slots = redis::cmd("CLUSTER");
    let slots = slots.arg("SLOTS").query_async::<Value>(connection);
    // Unreadable (the node asked may be the one that hangs): the next probe asks another.
    let Ok(Ok(Value::Array(ranges))) = tokio::time::timeout(PROBE_TIMEOUT, slots).await else {
        return Audit::Held;
    };
    // Each range: start, end, then the master as [host, port, id, ...], then its replicas.
    let masters: Vec<(u16, u16, String, u16)> = ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(fields) = range else {
                return None;
            };
            let (Value::Int(start), Value::Int(end), Value::Array(master)) =
                (fields.first()?, fields.get(1)?, fields.get(2)?)
            else {
                return None;
            };
            let (Value::BulkString(host), Value::Int(port)) = (master.first()?, master.get(1)?)
            else {
                return None;
            };
            Some((
                u16::try_from(*start).ok()?,
                u16::try_from(*end).ok()?,
                String::from_utf8(host.clone()).ok()?,
                u16::try_from(*port).ok()?,
            ))
        })
        .collect();
    let mut audited = std::collections::HashSet::new();
    for channel in watched.keys() {
        let slot = key_slot(channel.as_bytes());
        let Some((_, _, host, port)) = masters.iter().find(|m| (m.0..=m.1).contains(&slot)) else {
            continue;
        };
        if !audited.insert((host, port)) {
            continue;
        }
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
            Route::with_key(channel.as_bytes(), SlotAddr::Master),
        ));
        let myid = redis::cmd("CLUSTER").arg("MYID").clone();
        let routed = tokio::time::timeout(AUDIT_REQUEST, connection.route_command(myid, routing));
        match routed.await {
            // It answered, even with an error (a redirection, a cluster that is down): the
            // node is there, and a redirection corrects the client's slot map.
            Ok(Ok(_)) => continue,
            Ok(Err(error)) if matches!(error.kind(), redis::ErrorKind::Server(_)) => continue,
            _ => {}
        }
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port: *port,
        });
        let ping = redis::cmd("PING").clone();
        let named = tokio::time::timeout(AUDIT_REQUEST, connection.route_command(ping, routing));
        let stranded = match named.await {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => error.kind() == redis::ErrorKind::ClusterConnectionNotFound,
            Err(_) => false,
        };
        if stranded {
            let serves = format!("{host}:{port}");
            return Audit::Stranded {
                channel: channel.clone(),
                serves,
            };
        }
    }
    Audit::Held
}

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag, the part between the first `{`
/// and the first `}` after it when that part is not empty, else of the whole key; modulo 16384.
fn key_slot(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|b| *b == b'}')
                .map(|close| &rest[..close])
        })
        .filter(|tag| !tag.is_empty());
    crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(key)) % 16384
}

/// A new connection for the listener (RESP3), with the channel its pushes come on.
async fn connect(
    nodes: &[String],
) -> RedisResult<(ClusterConnection, mpsc::UnboundedReceiver<PushInfo>)> {
    let (sender, pushes) = mpsc::unbounded_channel();
    let client = builder(nodes)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(sender)
        .build()?;
    Ok((client.get_async_connection().await?, pushes))
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

#[cfg(test)]
mod tests {
    use super::key_slot;

    /// Spec: the slots Redis gives (`CLUSTER KEYSLOT`), hash tags as Redis reads them.
    #[test]
    fn a_key_hashes_to_the_slot_redis_gives_it() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{foo}bar"), 12182);
        assert_eq!(key_slot(b"sse:{foo}:c"), 12182);
        // An empty tag hashes the whole key; the first `}` after the first `{` ends the tag.
        assert_eq!(key_slot(b"foo{}{bar}"), 8363);
        assert_eq!(key_slot(b"foo{{bar}}zap"), 4015);
        assert_eq!(key_slot(b"{bar"), 4015);
        assert_eq!(key_slot(b"foo{bar}{zap}"), 5061);
    }
}
