//! The command connection's supervisor: one multiplexed connection for scripts and commands,
//! shared by every task, and replaced when it falls silent; in a cluster, the cluster
//! client's connection (one per node, redirections followed).

use std::sync::Arc;

use parking_lot::Mutex;
use redis::Client;
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The connection for commands and scripts, shared by every task (a clone is one handle).
///
/// `ConnectionManager` reconnects by itself when its connection drops, but not when the
/// connection falls silent (no FIN, no RST: a NAT entry dropped, a middlebox gone), which
/// only shows as response timeouts; then every publish and sync would fail until the kernel
/// gives up on the socket, many minutes later. So a timeout replaces it here, as does the
/// pub/sub probe finding its own connection silent.
#[derive(Clone)]
pub(super) enum Commands {
    Single(Arc<CommandsInner>),
    #[cfg(feature = "redis-cluster")]
    Cluster(super::cluster::ClusterCommands),
}

pub(super) struct CommandsInner {
    client: Client,
    config: ConnectionManagerConfig,
    /// The connection in use and its generation: a failure replaces the connection only if
    /// it is still the one that failed, so concurrent timeouts replace it once.
    current: Mutex<(u64, ConnectionManager)>,
}

impl Commands {
    pub(super) fn new(client: Client, config: ConnectionManagerConfig) -> Self {
        let connection = CommandsInner::connect(&client, &config);
        Self::Single(Arc::new(CommandsInner {
            client,
            config,
            current: Mutex::new((0, connection)),
        }))
    }

    /// Replaces the current connection: the network path to Redis is suspect.
    pub(super) fn replace_current(&self) {
        match self {
            Self::Single(inner) => {
                let generation = inner.current.lock().0;
                inner.replace(generation);
            }
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(cluster) => cluster.replace_current(),
        }
    }

    /// Whether this is a cluster's connection.
    pub(super) fn is_cluster(&self) -> bool {
        !matches!(self, Self::Single(_))
    }
}

impl CommandsInner {
    /// A connection manager that connects on first use.
    fn connect(client: &Client, config: &ConnectionManagerConfig) -> ConnectionManager {
        ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .expect("no push sender or resubscription is configured")
    }

    fn current(&self) -> (u64, ConnectionManager) {
        self.current.lock().clone()
    }

    /// Replaces the connection of `generation` (if it still is the current one).
    fn replace(&self, generation: u64) {
        let mut current = self.current.lock();
        if current.0 == generation {
            *current = (generation + 1, Self::connect(&self.client, &self.config));
        }
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
        match self {
            Self::Single(inner) => Box::pin(async move {
                let (generation, mut connection) = inner.current();
                let result = connection.send_packed_command(cmd).await;
                inner.check(generation, result)
            }),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(cluster) => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(inner) => Box::pin(async move {
                let (generation, mut connection) = inner.current();
                let result = connection
                    .send_packed_commands(pipeline, offset, count)
                    .await;
                inner.check(generation, result)
            }),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(inner) => inner.client.get_connection_info().redis_settings().db(),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(_) => 0,
        }
    }
}
