//! The Redis engine.
//!
//! Per topic `T` (all keys share the hash tag `{T}`, so Redis Cluster keeps them on one node):
//!
//! - `<prefix>{T}:m`, the meta hash: `e` the epoch (hex), `s` the last sequence, `h` the digest of
//!   the newest payload (change detection);
//! - `<prefix>{T}:s`, a Stream of the encoded frames, entry id `<seq>-0`, `MAXLEN ~ history`;
//! - `<prefix>{T}:l`, the poller's lease (a token, `PX` its time to live);
//! - `<prefix>{T}:c`, the pub/sub channel: whole frames, and `!` when the lease is handed
//!   over. (A skipped duplicate is published nowhere: a newcomer to a change-detecting topic
//!   starts on its newest event, so nobody is owed it.)
//!
//! One script call per publish numbers the event, appends it, refreshes the TTLs and publishes
//! it. A topic that no instance listens to and whose history has expired is not recorded at
//! all (the script answers at once). While an instance listens, the keys live for a day after
//! the last event; once none does, for the topic's retention time. Every key has a TTL.
//!
//! Two connections per instance: a managed, multiplexed one for scripts (publishes go through a
//! bounded queue and are pipelined in batches, in order), and a dedicated pub/sub one, owned by
//! one task that also serialises subscribe and unsubscribe, probes the connection every second
//! and, when it died, reconnects with backoff, resubscribes and resyncs every topic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script, Value};
use tokio::sync::{Notify, mpsc, oneshot};

use super::Broker;
use crate::config::Limits;
use crate::event_id::EventId;
use crate::publish::{Outcome, PublishError};
use crate::remote::{Outgoing, Publish, frame_id};
use crate::stats::{BackplaneStats, Counters};
use crate::topic::{Applied, Snapshot, Topic};

/// Most publishes sent in one pipeline.
const BATCH: usize = 256;
/// How often the pub/sub connection is probed, and how long a probe may take.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may take before it counts as failed (a publish never waits longer).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a listened-to topic's keys outlive its last event.
const IDLE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Reconnect and resync backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// KEYS: meta, stream, lease. ARGV: tail, epoch if new, history, idle TTL ms, dedup, lease
/// token ('' for none), channel. Returns {status, epoch, seq}: 1 sent, 0 duplicate,
/// 2 nobody listens and nothing is retained, -1 fenced.
const PUBLISH: &str = r"
local meta, stream, lease = KEYS[1], KEYS[2], KEYS[3]
local tail, maxlen, dedup, token, channel = ARGV[1], tonumber(ARGV[3]), ARGV[5], ARGV[6], ARGV[7]
if token ~= '' and redis.call('get', lease) ~= token then
  return {-1}
end
local watched = redis.call('pubsub', 'numsub', channel)[2] > 0
local epoch = redis.call('hget', meta, 'e')
if not epoch then
  if not watched then return {2} end
  epoch = ARGV[2]
  redis.call('del', stream)
  redis.call('hset', meta, 'e', epoch, 's', 0)
end
if dedup == '1' then
  local digest = redis.sha1hex(tail)
  if redis.call('hget', meta, 'h') == digest then
    return {0, epoch, tonumber(redis.call('hget', meta, 's'))}
  end
  redis.call('hset', meta, 'h', digest)
end
local seq = redis.call('hincrby', meta, 's', 1)
local frame = 'id: ' .. epoch .. '-' .. seq .. '\n' .. tail
if maxlen > 0 then
  redis.call('xadd', stream, 'MAXLEN', '~', maxlen, seq .. '-0', 'f', frame)
end
if watched then
  redis.call('pexpire', meta, ARGV[4])
  redis.call('pexpire', stream, ARGV[4])
else
  local ttl = redis.call('pttl', meta)
  if ttl > 0 then redis.call('pexpire', stream, ttl) end
end
redis.call('publish', channel, frame)
return {1, epoch, seq}
";

/// KEYS: meta, stream. ARGV: epoch if new, count, idle TTL ms, first sequence wanted ('' for
/// the newest `count`), the caller's epoch. Returns {epoch, last seq, newest-first?, entries}.
const SYNC: &str = r"
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('del', KEYS[2])
  redis.call('hset', KEYS[1], 'e', epoch, 's', 0)
end
redis.call('pexpire', KEYS[1], ARGV[3])
redis.call('pexpire', KEYS[2], ARGV[3])
local last = redis.call('hget', KEYS[1], 's')
if ARGV[4] == '' or ARGV[5] ~= epoch then
  return {epoch, last, 1, redis.call('xrevrange', KEYS[2], '+', '-', 'COUNT', ARGV[2])}
end
return {epoch, last, 0, redis.call('xrange', KEYS[2], ARGV[4] .. '-0', '+', 'COUNT', ARGV[2])}
";

/// KEYS: meta, stream. ARGV: channel, retention ms. Once no instance listens, the history is
/// kept for the retention time only.
const RELEASE: &str = r"
if redis.call('pubsub', 'numsub', ARGV[1])[2] == 0 then
  if tonumber(ARGV[2]) > 0 then
    redis.call('pexpire', KEYS[1], ARGV[2])
    redis.call('pexpire', KEYS[2], ARGV[2])
  else
    redis.call('del', KEYS[1], KEYS[2])
  end
end
return 1
";

/// KEYS: lease. ARGV: token, TTL ms.
const RENEW: &str = r"
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
";

/// KEYS: lease. ARGV: token, channel.
const HAND_OVER: &str = r"
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  redis.call('publish', ARGV[2], '!')
  return 1
end
return 0
";

pub(crate) struct Settings {
    pub(crate) prefix: String,
    pub(crate) lease_ttl: Duration,
    pub(crate) queue: usize,
}

pub(crate) struct Redis {
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
    control: mpsc::UnboundedSender<Control>,
    lease_ttl: Duration,
}

/// What the tasks and the handle share.
struct Shared {
    prefix: String,
    /// Distinguishes this instance's lease tokens and probe channel from every other's.
    instance: String,
    commands: Commands,
    scripts: Scripts,
    counters: Arc<Counters>,
    /// The hub's lifecycle signal: notified when a topic has synced.
    changed: Arc<Notify>,
    connected: AtomicBool,
    watched: AtomicUsize,
    leases: AtomicUsize,
    next_token: AtomicU64,
    publish_failures: AtomicU64,
    overflows: AtomicU64,
    fenced: AtomicU64,
    reconnects: AtomicU64,
    resyncs: AtomicU64,
    /// Lease keepers waiting for a hand-over, by channel.
    handovers: Mutex<HashMap<String, Weak<Notify>>>,
}

/// The connection for commands and scripts, shared by every task (a clone is one handle).
///
/// `ConnectionManager` reconnects by itself when its connection drops, but not when the
/// connection falls silent (no FIN, no RST: a NAT entry dropped, a middlebox gone), which
/// only shows as response timeouts; then every publish and sync would fail until the kernel
/// gives up on the socket, many minutes later. So a timeout replaces it here, as does the
/// pub/sub probe finding its own connection silent.
#[derive(Clone)]
struct Commands(Arc<CommandsInner>);

struct CommandsInner {
    client: Client,
    config: ConnectionManagerConfig,
    /// The connection in use and its generation: a failure replaces the connection only if
    /// it is still the one that failed, so concurrent timeouts replace it once.
    current: Mutex<(u64, ConnectionManager)>,
}

impl Commands {
    fn new(client: Client, config: ConnectionManagerConfig) -> Self {
        let connection = Self::connect(&client, &config);
        Self(Arc::new(CommandsInner {
            client,
            config,
            current: Mutex::new((0, connection)),
        }))
    }

    /// A connection manager that connects on first use.
    fn connect(client: &Client, config: &ConnectionManagerConfig) -> ConnectionManager {
        ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .expect("no push sender or resubscription is configured")
    }

    fn current(&self) -> (u64, ConnectionManager) {
        self.0.current.lock().clone()
    }

    /// Replaces the connection of `generation` (if it still is the current one).
    fn replace(&self, generation: u64) {
        let mut current = self.0.current.lock();
        if current.0 == generation {
            *current = (
                generation + 1,
                Self::connect(&self.0.client, &self.0.config),
            );
        }
    }

    /// Replaces the current connection: the network path to Redis is suspect.
    fn replace_current(&self) {
        let generation = self.0.current.lock().0;
        self.replace(generation);
    }

    fn check<T>(&self, generation: u64, result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(error) = &result
            && error.is_timeout()
        {
            tracing::debug!(%error, "backplane: command connection silent; replacing it");
            self.replace(generation);
        }
        result
    }
}

impl redis::aio::ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut connection) = self.current();
            let result = connection.send_packed_command(cmd).await;
            self.check(generation, result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut connection) = self.current();
            let result = connection
                .send_packed_commands(pipeline, offset, count)
                .await;
            self.check(generation, result)
        })
    }

    fn get_db(&self) -> i64 {
        self.0.client.get_connection_info().redis_settings().db()
    }
}

struct Scripts {
    publish: Script,
    sync: Script,
    release: Script,
    renew: Script,
    hand_over: Script,
}

/// One publish waiting in the queue.
struct Job {
    message: Outgoing,
    reply: Option<oneshot::Sender<Result<Outcome, PublishError>>>,
}

/// Work for the pub/sub task, in the order the hub decided it.
enum Control {
    Watch(Arc<Topic>),
    Unwatch(Arc<Topic>),
}

/// A topic's key names.
struct Keys {
    meta: String,
    stream: String,
    lease: String,
    channel: String,
}

impl Shared {
    fn keys(&self, topic: &str) -> Keys {
        let base = format!("{}{{{topic}}}:", self.prefix);
        Keys {
            meta: format!("{base}m"),
            stream: format!("{base}s"),
            lease: format!("{base}l"),
            channel: format!("{base}c"),
        }
    }

    fn channel(&self, topic: &str) -> String {
        format!("{}{{{topic}}}:c", self.prefix)
    }

    fn probe_channel(&self) -> String {
        format!("{}probe:{}", self.prefix, self.instance)
    }

    /// Counts a failed broker call; logs the first and then every power of two, not each one.
    fn failed(&self, what: &str, error: &str) {
        let n = self.publish_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(failures = n, %error, "backplane: {what} failed");
        }
    }
}

/// An epoch for a topic the broker does not know yet: microseconds since 1970, so a topic
/// recreated after its keys were lost never reuses an earlier epoch.
fn new_epoch() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64;
    format!("{micros:x}") // an id's epoch: lower-case hex
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().max(1) as u64
}

impl Redis {
    /// Starts the connections and the two tasks. Must run inside a tokio runtime.
    pub(crate) fn start(
        client: Client,
        settings: Settings,
        counters: Arc<Counters>,
        changed: Arc<Notify>,
    ) -> Arc<dyn Broker> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF_MAX);
        let commands = Commands::new(client.clone(), config);
        let instance = format!(
            "{:x}{:x}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64
        );
        let shared = Arc::new(Shared {
            prefix: settings.prefix,
            instance,
            commands,
            scripts: Scripts {
                publish: Script::new(PUBLISH),
                sync: Script::new(SYNC),
                release: Script::new(RELEASE),
                renew: Script::new(RENEW),
                hand_over: Script::new(HAND_OVER),
            },
            counters,
            changed,
            connected: AtomicBool::new(false),
            watched: AtomicUsize::new(0),
            leases: AtomicUsize::new(0),
            next_token: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            fenced: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            handovers: Mutex::new(HashMap::new()),
        });
        let (jobs, queue) = mpsc::channel(settings.queue);
        let (control, orders) = mpsc::unbounded_channel();
        tokio::spawn(publishing(shared.clone(), queue));
        tokio::spawn(listening(shared.clone(), client, orders));
        Arc::new(Self {
            shared,
            jobs,
            control,
            lease_ttl: settings.lease_ttl,
        })
    }

    fn enqueue(&self, job: Job) -> Result<(), PublishError> {
        self.jobs.try_send(job).map_err(|_| {
            let n = self.shared.overflows.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    overflows = n,
                    "backplane: publish queue full; event dropped"
                );
            }
            PublishError::Overflow
        })
    }
}

impl Publish for Redis {
    fn publish(&self, message: Outgoing) {
        let _ = self.enqueue(Job {
            message,
            reply: None,
        });
    }
}

impl Broker for Redis {
    fn watch(&self, topic: &Arc<Topic>) {
        let _ = self.control.send(Control::Watch(topic.clone()));
    }

    fn unwatch(&self, topic: &Arc<Topic>) {
        let _ = self.control.send(Control::Unwatch(topic.clone()));
    }

    fn publish_confirmed(
        &self,
        message: Outgoing,
    ) -> BoxFuture<'static, Result<Outcome, PublishError>> {
        let (reply, answer) = oneshot::channel();
        let queued = self.enqueue(Job {
            message,
            reply: Some(reply),
        });
        Box::pin(async move {
            queued?;
            answer
                .await
                .unwrap_or_else(|_| Err(PublishError::Broker("backplane stopped".into())))
        })
    }

    fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    fn lease_token(&self) -> String {
        let n = self.shared.next_token.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.shared.instance)
    }

    fn acquire<'a>(
        &'a self,
        topic: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let keys = self.shared.keys(topic);
            let mut conn = self.shared.commands.clone();
            let reply: Value = redis::cmd("SET")
                .arg(&keys.lease)
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(millis(self.lease_ttl))
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(matches!(reply, Value::Okay))
        })
    }

    fn renew<'a>(&'a self, topic: &'a str, token: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let keys = self.shared.keys(topic);
            let mut conn = self.shared.commands.clone();
            let renewed: i64 = self
                .shared
                .scripts
                .renew
                .key(&keys.lease)
                .arg(token)
                .arg(millis(self.lease_ttl))
                .invoke_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(renewed == 1)
        })
    }

    fn release<'a>(&'a self, topic: &'a str, token: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let keys = self.shared.keys(topic);
            let mut conn = self.shared.commands.clone();
            let released: Result<i64, _> = self
                .shared
                .scripts
                .hand_over
                .key(&keys.lease)
                .arg(token)
                .arg(&keys.channel)
                .invoke_async(&mut conn)
                .await;
            if let Err(error) = released {
                // The lease expires by itself within its TTL.
                tracing::debug!(%topic, %error, "backplane: lease hand-over failed");
            }
        })
    }

    fn handover(&self, topic: &str) -> Arc<Notify> {
        let channel = self.shared.channel(topic);
        let mut handovers = self.shared.handovers.lock();
        handovers.retain(|_, notify| notify.strong_count() > 0);
        if let Some(notify) = handovers.get(&channel).and_then(Weak::upgrade) {
            return notify;
        }
        let notify = Arc::new(Notify::new());
        handovers.insert(channel, Arc::downgrade(&notify));
        notify
    }

    fn leading(&self, held: bool) {
        if held {
            self.shared.leases.fetch_add(1, Ordering::Relaxed);
        } else {
            self.shared.leases.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn stats(&self) -> BackplaneStats {
        let s = &self.shared;
        BackplaneStats {
            connected: s.connected.load(Ordering::Relaxed),
            watched: s.watched.load(Ordering::Relaxed),
            synced: 0,
            leases: s.leases.load(Ordering::Relaxed),
            queued: self.jobs.max_capacity() - self.jobs.capacity(),
            failures: s.publish_failures.load(Ordering::Relaxed),
            overflows: s.overflows.load(Ordering::Relaxed),
            fenced: s.fenced.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
            resyncs: s.resyncs.load(Ordering::Relaxed),
        }
    }
}

/// Drains the publish queue: each batch is one pipeline, in queue order, so the events of one
/// publisher are numbered in the order it published them.
async fn publishing(shared: Arc<Shared>, mut queue: mpsc::Receiver<Job>) {
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

/// Runs one batch as a pipeline of `EVALSHA`s; when Redis lost the script (a restart), loads it
/// and sends the refused ones again, still in order (a refused script did not run).
async fn publish_batch(shared: &Shared, batch: &[Job]) -> Vec<Result<Outcome, PublishError>> {
    let mut outcomes: Vec<Option<Result<Outcome, PublishError>>> = vec![None; batch.len()];
    let mut pending: Vec<usize> = (0..batch.len()).collect();
    let epoch = new_epoch();
    let mut conn = shared.commands.clone();
    for _attempt in 0..2 {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &i in &pending {
            pipe.add_command(publish_command(shared, &batch[i].message, &epoch));
        }
        let replies: Vec<Value> = match pipe.query_async(&mut conn).await {
            Ok(replies) => replies,
            Err(error) => {
                for &i in &pending {
                    outcomes[i] = Some(Err(PublishError::Broker(error.to_string())));
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
        if let Err(error) = shared
            .scripts
            .publish
            .prepare_invoke()
            .load_async(&mut conn)
            .await
        {
            for &i in &unloaded {
                outcomes[i] = Some(Err(PublishError::Broker(error.to_string())));
            }
            break;
        }
        pending = unloaded;
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(PublishError::Broker("script not loaded".into()))))
        .collect()
}

fn publish_command(shared: &Shared, message: &Outgoing, epoch: &str) -> redis::Cmd {
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
        .arg(&keys.channel);
    cmd
}

fn publish_outcome(reply: Value) -> Result<Outcome, PublishError> {
    let bad = |what: &str| PublishError::Broker(format!("unexpected publish reply: {what}"));
    let Value::Array(parts) = reply else {
        return Err(match reply {
            Value::ServerError(error) => PublishError::Broker(error.to_string()),
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

/// Brings `topic` in line with the broker, retrying with backoff while the broker is away,
/// until it is synced (or closed).
async fn sync(shared: Arc<Shared>, topic: Arc<Topic>) {
    let keys = shared.keys(&topic.name);
    let mut conn = shared.commands.clone();
    let mut backoff = BACKOFF_MIN;
    while !topic.is_closed() {
        let (_, limits) = topic.settings();
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
        match reply.map_err(|e| e.to_string()).and_then(snapshot) {
            Ok(snapshot) => match topic.merge(snapshot) {
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
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// Reads the sync script's reply.
fn snapshot(reply: Value) -> Result<Snapshot, String> {
    let Value::Array(parts) = reply else {
        return Err(format!("unexpected sync reply {reply:?}"));
    };
    let [epoch, last, newest_first, entries] = <[Value; 4]>::try_from(parts)
        .map_err(|parts| format!("unexpected sync reply {parts:?}"))?;
    let epoch: String = redis::from_redis_value(epoch).map_err(|e| e.to_string())?;
    let epoch = u64::from_str_radix(&epoch, 16).map_err(|e| e.to_string())?;
    let last_seq: u64 = redis::from_redis_value(last).map_err(|e| e.to_string())?;
    let newest_first: i64 = redis::from_redis_value(newest_first).map_err(|e| e.to_string())?;
    let entries: Vec<StreamEntry> = redis::from_redis_value(entries).map_err(|e| e.to_string())?;
    let mut frames = Vec::with_capacity(entries.len());
    for (id, fields) in entries {
        let seq = id
            .split_once('-')
            .and_then(|(seq, _)| seq.parse().ok())
            .ok_or_else(|| format!("unexpected stream id {id}"))?;
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
async fn release(shared: Arc<Shared>, topic: Arc<Topic>) {
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

/// Owns the pub/sub connection: serialises subscribe and unsubscribe in the hub's order,
/// dispatches messages to the topics, probes the connection and reconnects it.
async fn listening(
    shared: Arc<Shared>,
    client: Client,
    mut orders: mpsc::UnboundedReceiver<Control>,
) {
    let mut watched: HashMap<String, Arc<Topic>> = HashMap::new();
    let probe_channel = shared.probe_channel();
    let mut backoff = BACKOFF_MIN;
    let mut first = true;
    loop {
        let connected = async {
            let (mut sink, stream) = client.get_async_pubsub().await?.split();
            let mut channels: Vec<&str> = watched.keys().map(String::as_str).collect();
            channels.push(&probe_channel);
            sink.subscribe(&channels).await?;
            Ok::<_, redis::RedisError>((sink, stream))
        };
        let (mut sink, mut stream) = match tokio::time::timeout(RESPONSE_TIMEOUT, connected).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(_)) | Err(_) => {
                // Orders still apply while away: the topics change, the subscriptions follow
                // on reconnect.
                let deadline = tokio::time::sleep(backoff);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        () = &mut deadline => break,
                        order = orders.recv() => match order {
                            None => return,
                            Some(order) => apply_offline(&shared, &mut watched, order),
                        },
                    }
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        shared.connected.store(true, Ordering::Relaxed);
        shared.changed.notify_waiters();
        if !first {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(topics = watched.len(), "backplane: reconnected; resyncing");
        }
        first = false;
        // Whatever was published while away comes from the streams.
        for topic in watched.values() {
            tokio::spawn(sync(shared.clone(), topic.clone()));
        }
        let mut probe = tokio::time::interval(PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe.tick().await;
        let lost = loop {
            tokio::select! {
                order = orders.recv() => {
                    let Some(order) = order else { return };
                    let result = match order {
                        Control::Watch(topic) => {
                            let channel = shared.channel(&topic.name);
                            watched.insert(channel.clone(), topic.clone());
                            shared.watched.store(watched.len(), Ordering::Relaxed);
                            let subscribed = sink.subscribe(&channel).await;
                            tokio::spawn(sync(shared.clone(), topic));
                            subscribed
                        }
                        Control::Unwatch(topic) => {
                            let channel = shared.channel(&topic.name);
                            if !watched.get(&channel).is_some_and(|t| Arc::ptr_eq(t, &topic)) {
                                continue;
                            }
                            watched.remove(&channel);
                            let unsubscribed = sink.unsubscribe(&channel).await;
                            if unsubscribed.is_ok() {
                                tokio::spawn(release(shared.clone(), topic));
                            }
                            shared.watched.store(watched.len(), Ordering::Relaxed);
                            shared.changed.notify_waiters();
                            unsubscribed
                        }
                    };
                    if let Err(error) = result {
                        break error.to_string();
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else { break "connection closed".to_owned() };
                    let channel = message.get_channel_name();
                    if let Some(topic) = watched.get(channel) {
                        dispatch(&shared, topic, message.get_payload_bytes());
                    }
                }
                _ = probe.tick() => {
                    let ping = tokio::time::timeout(PROBE_TIMEOUT, sink.ping::<Value>()).await;
                    match ping {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => break error.to_string(),
                        Err(_) => break "probe timed out".to_owned(),
                    }
                }
            }
        };
        shared.connected.store(false, Ordering::Relaxed);
        shared.changed.notify_waiters();
        // What silenced this connection may have silenced the other one too.
        shared.commands.replace_current();
        tracing::warn!(error = %lost, "backplane: pub/sub connection lost; reconnecting");
    }
}

/// An order while disconnected: only the bookkeeping; the reconnect subscribes what is left.
fn apply_offline(shared: &Arc<Shared>, watched: &mut HashMap<String, Arc<Topic>>, order: Control) {
    match order {
        Control::Watch(topic) => {
            watched.insert(shared.channel(&topic.name), topic);
        }
        Control::Unwatch(topic) => {
            let channel = shared.channel(&topic.name);
            if watched
                .get(&channel)
                .is_some_and(|t| Arc::ptr_eq(t, &topic))
            {
                watched.remove(&channel);
                tokio::spawn(release(shared.clone(), topic));
            }
        }
    }
    shared.watched.store(watched.len(), Ordering::Relaxed);
    shared.changed.notify_waiters();
}

/// One pub/sub message for a listened-to topic.
fn dispatch(shared: &Arc<Shared>, topic: &Arc<Topic>, payload: &[u8]) {
    match payload.first() {
        Some(b'i') => {
            let Some(id) = frame_id(payload) else {
                tracing::warn!(topic = %topic.name, "backplane: frame without an id; ignored");
                return;
            };
            match topic.apply(id, Bytes::copy_from_slice(payload)) {
                Applied::Done => {}
                Applied::Fetch => {
                    shared.resyncs.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(sync(shared.clone(), topic.clone()));
                }
            }
        }
        Some(b'!') => {
            let channel = shared.channel(&topic.name);
            if let Some(notify) = shared
                .handovers
                .lock()
                .get(&channel)
                .and_then(Weak::upgrade)
            {
                notify.notify_one();
            }
        }
        _ => {}
    }
}
