//! Scale-out: many instances behind a load balancer as one hub, over a broker.
//!
//! With a [`Backplane`], a manager's topics are numbered, recorded and fanned out by the broker
//! instead of in the process: a publish on any instance reaches the subscribers of every
//! instance in the same order with the same ids, a client resumes with `Last-Event-ID` on any
//! instance (and across restarts), and a polled topic is polled by one instance of the cluster
//! at a time, under a lease.
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use sse_runtime::Manager;
//! use sse_runtime::backplane::Backplane;
//!
//! let backplane = Backplane::redis("redis://127.0.0.1:6379")?.key_prefix("shop:");
//! let manager = Manager::builder().backplane(backplane).build()?;
//! let app: axum::Router = sse_runtime::routes::router_with(&manager);
//! # let _ = app; Ok(()) }
//! ```
//!
//! Each instance keeps a topic's log as a cache while it has local subscribers of it: it
//! listens to the topic's broker channel, applies events in sequence order, and repairs a gap
//! from the broker's history once per topic. The broker sits behind one internal seam, so other
//! engines can be added without touching topics or streams; Redis (cargo feature `redis`) is
//! the first. `docs/ARCHITECTURE.md` describes the keys, the scripts and the guarantees.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use crate::publish::{Outcome, PublishError};
use crate::remote::{Outgoing, Publish};
use crate::stats::{BackplaneStats, Counters};
use crate::topic::Topic;

mod lease;
#[cfg(feature = "redis")]
mod redis;

pub use crate::broker_error::{BrokerError, BrokerErrorKind};

pub(crate) use lease::Leased;

/// How long a poller's lease lasts unless renewed (renewed every third of it).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

/// The broker seam: everything the hub asks of a broker. One implementation per engine.
pub(crate) trait Broker: Publish {
    /// `topic` got its first local subscriber: listen to its events, then sync it
    /// ([`Topic::merge`]) from the broker's history. Never blocks.
    fn watch(&self, topic: &Arc<Topic>);
    /// Its last local subscriber left: stop listening; the broker keeps the history for the
    /// retention time once no instance listens. Never blocks.
    fn unwatch(&self, topic: &Arc<Topic>);
    /// A watched `topic` needs a fresh snapshot ([`Topic::merge`]) to place a subscriber (one
    /// that resumed from an epoch it is not in). Never blocks.
    fn refresh(&self, topic: &Arc<Topic>);
    /// Publishes and reports the outcome (one broker round trip).
    fn publish_confirmed(
        &self,
        message: Outgoing,
    ) -> BoxFuture<'static, Result<Outcome, PublishError>>;
    /// How long a lease lasts unless renewed.
    fn lease_ttl(&self) -> Duration;
    /// A token no other lease holder in the cluster uses.
    fn lease_token(&self) -> String;
    /// Takes `topic`'s lease if nobody holds it.
    fn acquire<'a>(
        &'a self,
        topic: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool, BrokerError>>;
    /// Extends the lease if `token` still holds it.
    fn renew<'a>(
        &'a self,
        topic: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool, BrokerError>>;
    /// Gives the lease up (if `token` holds it) and tells the other instances at once.
    fn release<'a>(&'a self, topic: &'a str, token: &'a str) -> BoxFuture<'a, ()>;
    /// Notified when `topic`'s lease holder releases it.
    fn handover(&self, topic: &str) -> Arc<Notify>;
    /// Counts leases held by this instance.
    fn leading(&self, held: bool);
    fn stats(&self) -> BackplaneStats;
}

/// Which broker a [`Manager`](crate::Manager) runs over, and how. Give it to
/// [`ManagerBuilder::backplane`](crate::manager::ManagerBuilder::backplane).
///
/// ```
/// # #[cfg(feature = "redis")] {
/// use std::time::Duration;
/// use sse_runtime::backplane::Backplane;
///
/// let backplane = Backplane::redis("redis://127.0.0.1:6379")
///     .unwrap()
///     .key_prefix("shop:")
///     .lease_ttl(Duration::from_secs(5));
/// assert!(Backplane::redis("not a url").is_err());
/// # }
/// ```
#[derive(Clone)]
pub struct Backplane {
    engine: Engine,
    prefix: String,
    lease_ttl: Duration,
    queue: usize,
}

#[derive(Clone)]
enum Engine {
    #[cfg(feature = "redis")]
    Redis(::redis::Client),
    /// The seed nodes' URLs (checked when the backplane was made).
    #[cfg(feature = "redis-cluster")]
    RedisCluster(Vec<String>),
}

/// A backplane that cannot be used as given (a malformed URL); the engine's own error is its
/// [`source`](std::error::Error::source).
///
/// ```
/// # #[cfg(feature = "redis")] {
/// use std::error::Error;
/// use sse_runtime::backplane::Backplane;
///
/// let error = Backplane::redis("http://localhost").unwrap_err();
/// assert!(error.to_string().starts_with("invalid redis URL \"http://localhost\""));
/// assert!(error.source().is_some());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BackplaneError {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl fmt::Display for BackplaneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackplaneError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

/// Equal when they say the same.
impl PartialEq for BackplaneError {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for BackplaneError {}

impl Backplane {
    /// Redis at `url` (`redis://[user:password@]host:port[/db]`). Nothing connects until the
    /// manager is built; the connections then reconnect by themselves.
    #[cfg(feature = "redis")]
    pub fn redis(url: &str) -> Result<Self, BackplaneError> {
        let client = ::redis::Client::open(url).map_err(|error| BackplaneError {
            message: format!("invalid redis URL {url:?}: {error}"),
            source: Some(Arc::new(error)),
        })?;
        Ok(Self {
            engine: Engine::Redis(client),
            prefix: "sse:".to_owned(),
            lease_ttl: DEFAULT_LEASE_TTL,
            queue: 8192,
        })
    }

    /// A Redis Cluster (Redis 7 or later), found from any of its `nodes`
    /// (`redis://host:port`, more than one in case one is down). Every key of a topic is in
    /// one slot (the topic is the hash tag) and its events go through sharded pub/sub
    /// (`SPUBLISH`), so a publish reaches only the shard that holds the topic; redirections
    /// (`MOVED`, `ASK`) and topology changes are followed, subscriptions move with their
    /// slots, and a failover moves each topic of the shard to a new epoch (one `reset` per
    /// stream, never a reused id). Nothing connects until the manager is built.
    ///
    /// ```
    /// # #[cfg(feature = "redis-cluster")] {
    /// use sse_runtime::backplane::Backplane;
    ///
    /// let backplane =
    ///     Backplane::redis_cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]).unwrap();
    /// assert!(Backplane::redis_cluster(["not a url"]).is_err());
    /// assert!(Backplane::redis_cluster(Vec::<String>::new()).is_err());
    /// # }
    /// ```
    #[cfg(feature = "redis-cluster")]
    pub fn redis_cluster<I>(nodes: I) -> Result<Self, BackplaneError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(|n| n.as_ref().to_owned()).collect();
        if nodes.is_empty() {
            return Err(BackplaneError {
                message: "a Redis Cluster needs at least one node's URL".to_owned(),
                source: None,
            });
        }
        for node in &nodes {
            ::redis::Client::open(node.as_str()).map_err(|error| BackplaneError {
                message: format!("invalid redis URL {node:?}: {error}"),
                source: Some(Arc::new(error)),
            })?;
        }
        Ok(Self {
            engine: Engine::RedisCluster(nodes),
            prefix: "sse:".to_owned(),
            lease_ttl: DEFAULT_LEASE_TTL,
            queue: 8192,
        })
    }

    /// Prefix of every key and channel (default `sse:`), so several applications can share one
    /// broker.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a poller's lease lasts unless renewed (default [`DEFAULT_LEASE_TTL`], at least
    /// 300 ms): when its holder dies, another instance takes the poll over within about this.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(300));
        self
    }

    /// Most publishes waiting for the broker (default 8192); beyond, `publish` drops and counts
    /// them and `publish_confirmed` fails with [`PublishError::Overflow`].
    pub fn queue(mut self, events: usize) -> Self {
        self.queue = events.max(1);
        self
    }

    /// Starts the engine's connections and tasks (needs a tokio runtime).
    /// `changed` is notified whenever a topic has synced.
    pub(crate) fn connect(&self, counters: Arc<Counters>, changed: Arc<Notify>) -> Arc<dyn Broker> {
        match &self.engine {
            #[cfg(feature = "redis")]
            Engine::Redis(client) => redis::Redis::start(
                redis::Target::Single(client.clone()),
                self.redis_settings(),
                counters,
                changed,
            ),
            #[cfg(feature = "redis-cluster")]
            Engine::RedisCluster(nodes) => redis::Redis::start(
                redis::Target::Cluster(nodes.clone()),
                self.redis_settings(),
                counters,
                changed,
            ),
            #[cfg(not(feature = "redis"))]
            _ => {
                let _ = (counters, changed);
                unreachable!("no engine is compiled in")
            }
        }
    }
}

#[cfg(feature = "redis")]
impl Backplane {
    fn redis_settings(&self) -> redis::Settings {
        redis::Settings {
            prefix: self.prefix.clone(),
            lease_ttl: self.lease_ttl,
            queue: self.queue,
        }
    }
}

impl fmt::Debug for Backplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let engine = match &self.engine {
            #[cfg(feature = "redis")]
            Engine::Redis(_) => "redis",
            #[cfg(feature = "redis-cluster")]
            Engine::RedisCluster(_) => "redis-cluster",
            #[cfg(not(feature = "redis"))]
            _ => "none",
        };
        f.debug_struct("Backplane")
            .field("engine", &engine)
            .field("prefix", &self.prefix)
            .field("lease_ttl", &self.lease_ttl)
            .finish()
    }
}
