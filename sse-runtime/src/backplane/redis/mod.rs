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
//!
//! Here: the handle (`Redis`, the `Broker` calls, the key names). `commands`: the command
//! connection's supervisor. `scripts` and `scripts/*.lua`: the Lua scripts. `publishing`: the
//! publish queue and its pipelines. `sync`: snapshots of a topic's stream. `pubsub`: the
//! listener task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use redis::aio::ConnectionManagerConfig;
use redis::{Client, Value};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{Broker, BrokerError};
use crate::publish::{Outcome, PublishError};
use crate::remote::{Outgoing, Publish};
use crate::stats::{BackplaneStats, Counters};
use crate::topic::Topic;

#[cfg(feature = "redis-cluster")]
mod cluster;
mod commands;
mod publishing;
mod pubsub;
mod scripts;
mod sync;

use commands::Commands;
use publishing::publishing;
use pubsub::{Control, listening};
use scripts::Scripts;

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

/// Which Redis: one (with its replicas behind one address), or a cluster from its seed nodes.
pub(crate) enum Target {
    Single(Client),
    #[cfg(feature = "redis-cluster")]
    Cluster(Vec<String>),
}

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

/// One publish waiting in the queue.
struct Job {
    message: Outgoing,
    reply: Option<oneshot::Sender<Result<Outcome, PublishError>>>,
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
        target: Target,
        settings: Settings,
        counters: Arc<Counters>,
        changed: Arc<Notify>,
    ) -> Arc<dyn Broker> {
        let commands = match &target {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_connection_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(BACKOFF_MAX);
                Commands::new(client.clone(), config)
            }
            #[cfg(feature = "redis-cluster")]
            Target::Cluster(nodes) => Commands::Cluster(
                cluster::ClusterCommands::new(nodes)
                    .expect("the nodes' URLs were checked by Backplane::redis_cluster"),
            ),
        };
        let instance = format!(
            "{:x}{:x}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64
        );
        let sharded = commands.is_cluster();
        let shared = Arc::new(Shared {
            prefix: settings.prefix,
            instance,
            commands,
            scripts: Scripts::new(sharded),
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
        match target {
            Target::Single(client) => {
                tokio::spawn(listening(shared.clone(), client, orders));
            }
            #[cfg(feature = "redis-cluster")]
            Target::Cluster(nodes) => {
                tokio::spawn(cluster::listening(shared.clone(), nodes, orders));
            }
        }
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

    fn refresh(&self, topic: &Arc<Topic>) {
        let _ = self.control.send(Control::Sync(topic.clone()));
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
                .unwrap_or_else(|_| Err(PublishError::Broker(BrokerError::stopped())))
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
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
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
                .await?;
            Ok(matches!(reply, Value::Okay))
        })
    }

    fn renew<'a>(
        &'a self,
        topic: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
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
                .await?;
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
