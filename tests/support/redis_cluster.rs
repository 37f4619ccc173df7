//! A Redis Cluster of the test's own: three masters with a replica each, `redis-server`s on
//! free loopback ports made into a cluster by `redis-cli --cluster create`, so a test can
//! fail a master over, kill a node or read every node's keys.

use std::time::Duration;

use crate::RedisServer;
use crate::redis_server::free_port;

/// A running cluster; every node is killed when dropped.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct Node {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// The master's id, for a replica.
    pub replica_of: Option<String>,
    /// Slot ranges, inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts six nodes, makes them a cluster of three masters with one replica each, and
    /// waits until every node sees all 16 384 slots served.
    ///
    /// # Panics
    /// When `redis-server` or `redis-cli` is missing (`.ci/run` installs both).
    pub async fn start() -> Self {
        let mut nodes = Vec::new();
        for _ in 0..6 {
            // The cluster bus on a free port of its own: by default it is the node's port plus
            // 10 000, which may be taken (a client's ephemeral port, another test's node) or
            // over 65 535, and then the node does not start.
            let bus = free_port().to_string();
            nodes.push(
                RedisServer::start_with(&[
                    "--cluster-port",
                    &bus,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    // A master not heard from for 1 s is failed over by its replica.
                    "--cluster-node-timeout",
                    "1000",
                ])
                .await,
            );
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let created = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .expect(
                "redis-cli is not installed: the cluster tests need it \
                 (apt-get install redis-tools; .ci/run does)",
            );
        assert!(created.success(), "redis-cli --cluster create: {created}");
        let cluster = Self { nodes };
        cluster.wait_ok().await;
        // And every node knows which node replicates which (gossip spreads it).
        for _ in 0..1500 {
            let mut all = true;
            for node in &cluster.nodes {
                let seen = cluster.topology(node).await;
                all &= seen.iter().filter(|n| n.replica_of.is_some()).count() == 3;
            }
            if all {
                return cluster;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the cluster's replicas did not show");
    }

    /// The seed URLs, one per node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Waits until every running node says the cluster is ok and agrees on who serves what.
    pub async fn wait_ok(&self) {
        for _ in 0..1500 {
            let mut ok = true;
            for node in &self.nodes {
                let info = node.command(&["CLUSTER", "INFO"]).await;
                ok &= info.is_some_and(|i| {
                    i.contains("cluster_state:ok") && i.contains("cluster_slots_ok:16384")
                });
            }
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the cluster did not come up");
    }

    /// The cluster as `node` sees it.
    pub async fn topology(&self, node: &RedisServer) -> Vec<Node> {
        let reply = node
            .command(&["CLUSTER", "NODES"])
            .await
            .expect("the node answers");
        reply
            .lines()
            .filter(|l| l.split(' ').count() >= 8)
            .map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let port = fields[1]
                    .split(['@', ':'])
                    .nth(1)
                    .and_then(|p| p.parse().ok())
                    .expect("ip:port@cport");
                let slots = fields[8..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .map(|s| match s.split_once('-') {
                        Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                        None => (s.parse().unwrap(), s.parse().unwrap()),
                    })
                    .collect();
                Node {
                    id: fields[0].to_owned(),
                    port,
                    master: fields[2].contains("master"),
                    replica_of: (fields[3] != "-").then(|| fields[3].to_owned()),
                    slots,
                }
            })
            .collect()
    }

    /// Kills the node on `port` at once (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port() == port) {
            node.kill();
        }
    }

    /// Freezes the node on `port` (see [`RedisServer::freeze`]).
    pub fn freeze(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port() == port) {
            node.freeze();
        }
    }

    /// Starts the node on `port` again, killed before, with its files (`nodes.conf`, no
    /// data): it rejoins the cluster, as a replica of whichever node took its slots, and this
    /// waits until every node says the cluster is ok and sees it as a replica.
    pub async fn revive(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port() == port) {
            node.restart_from_snapshot().await;
        }
        self.wait_ok().await;
        for _ in 0..1500 {
            let mut all = true;
            for node in &self.nodes {
                let seen = self.topology(node).await;
                all &= seen
                    .iter()
                    .any(|n| n.port == port && n.replica_of.is_some());
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the node on {port} did not rejoin as a replica");
    }

    /// The node with `port`.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .expect("a node of this cluster")
    }

    /// The slot of `key`.
    pub async fn slot(&self, key: &str) -> u16 {
        let reply = self.nodes[0]
            .command(&["CLUSTER", "KEYSLOT", key])
            .await
            .expect("the node answers");
        reply
            .trim_start_matches(':')
            .trim()
            .parse()
            .expect("a slot")
    }

    /// The master serving `slot` and its replica, as the first running node sees them, once
    /// it sees one (after a failover the old master shows as the new one's replica a little
    /// later).
    pub async fn shard_of(&self, slot: u16) -> (Node, Node) {
        for _ in 0..1500 {
            if let Some((master, Some(replica))) = self.shard(slot).await {
                return (master, replica);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the master of slot {slot} has no replica");
    }

    /// The master serving `slot` and its replica if it has one, as the first node that answers
    /// sees them; `None` while no master serves the slot in that node's view (in the moments
    /// of a failover, a node may have heard that the old master lost the slot and not yet that
    /// another took it).
    pub async fn shard(&self, slot: u16) -> Option<(Node, Option<Node>)> {
        let mut seen = None;
        for node in &self.nodes {
            if node.command(&["PING"]).await.is_some() {
                seen = Some(self.topology(node).await);
                break;
            }
        }
        let nodes = seen.expect("a node answers");
        let master = nodes
            .iter()
            .find(|n| n.master && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))?
            .clone();
        let replica = nodes
            .iter()
            .find(|n| n.replica_of.as_deref() == Some(master.id.as_str()))
            .cloned();
        Some((master, replica))
    }
}

/// The broker a cross-instance test runs on: one `redis-server`, or a cluster, each the
/// test's own.
pub enum Redis {
    One(RedisServer),
    Cluster(RedisCluster),
}

impl Redis {
    pub async fn one() -> Self {
        Self::One(RedisServer::start().await)
    }

    pub async fn cluster() -> Self {
        Self::Cluster(RedisCluster::start().await)
    }

    /// A backplane on it (keys under `prefix`).
    pub fn backplane(&self, prefix: &str) -> sse_runtime::backplane::Backplane {
        let backplane = match self {
            Self::One(redis) => sse_runtime::backplane::Backplane::redis(&redis.url()),
            Self::Cluster(cluster) => {
                sse_runtime::backplane::Backplane::redis_cluster(cluster.urls())
            }
        };
        backplane.expect("a valid URL").key_prefix(prefix)
    }

    /// The masters (one Redis: itself).
    async fn masters(&self) -> Vec<&RedisServer> {
        match self {
            Self::One(redis) => vec![redis],
            Self::Cluster(cluster) => {
                let mut masters = Vec::new();
                for node in &cluster.nodes {
                    let role = node.command(&["ROLE"]).await.unwrap_or_default();
                    if role.contains("master") {
                        masters.push(node);
                    }
                }
                masters
            }
        }
    }

    /// Every key matching `pattern`, on every master.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for node in self.masters().await {
            let reply = node.command(&["KEYS", pattern]).await.expect("it answers");
            keys.extend(bulk_lines(&reply));
        }
        keys
    }

    /// `PTTL` of `key`, from the master that holds it.
    pub async fn pttl(&self, key: &str) -> i64 {
        for node in self.masters().await {
            let reply = node.command(&["PTTL", key]).await.expect("it answers");
            if reply.starts_with("-MOVED") {
                continue;
            }
            let ttl: i64 = reply.trim_start_matches(':').trim().parse().expect("a TTL");
            if ttl != -2 {
                return ttl;
            }
        }
        -2
    }

    /// Kills every pub/sub client connection (`CLIENT KILL TYPE pubsub` on every master);
    /// returns how many.
    pub async fn kill_pubsub_clients(&self) -> usize {
        let mut killed = 0;
        for node in self.masters().await {
            let reply = node
                .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
                .await
                .expect("it answers");
            killed += reply
                .trim_start_matches(':')
                .trim()
                .parse::<usize>()
                .expect("a count");
        }
        killed
    }

    /// The pub/sub channels matching `pattern` with a subscriber (sharded ones in a cluster).
    pub async fn channels(&self, pattern: &str) -> Vec<String> {
        let command = match self {
            Self::One(_) => ["PUBSUB", "CHANNELS", pattern],
            Self::Cluster(_) => ["PUBSUB", "SHARDCHANNELS", pattern],
        };
        let mut channels = Vec::new();
        for node in self.masters().await {
            let reply = node.command(&command).await.expect("it answers");
            channels.extend(bulk_lines(&reply));
        }
        channels
    }
}

/// The strings of a RESP array of bulk strings.
fn bulk_lines(reply: &str) -> Vec<String> {
    reply
        .lines()
        .filter(|l| !l.starts_with(['*', '$']) && !l.is_empty())
        .map(str::to_owned)
        .collect()
}
