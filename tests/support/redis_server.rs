//! A `redis-server` of the test's own, on a free loopback port, so a test can kill it and
//! start it again (a backplane outage) without touching anything else on the machine.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running `redis-server`, killed when dropped. Nothing is persisted: a restart starts empty.
pub struct RedisServer {
    port: u16,
    /// The master it starts as a replica of (see [`Self::start_replica_of`]).
    master: Option<u16>,
    /// More arguments for `redis-server` (a cluster node's).
    args: Vec<String>,
    child: Option<Child>,
    /// Stopped (SIGSTOP): it holds its connections open and answers nothing.
    frozen: bool,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    /// When `redis-server` is not on the PATH: the backplane tests need it (`.ci/run` installs
    /// it with apt-get), and a test that cannot run must not pass.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts one with more arguments for `redis-server`.
    pub async fn start_with(args: &[&str]) -> Self {
        let mut server = Self {
            port: free_port(),
            master: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            frozen: false,
        };
        server.restart().await;
        server
    }

    /// Starts one as a replica of `master` and waits until it has the master's dataset (its
    /// link is up).
    pub async fn start_replica_of(master: &RedisServer) -> Self {
        let mut server = Self {
            port: free_port(),
            master: Some(master.port),
            args: Vec::new(),
            child: None,
            frozen: false,
        };
        server.restart().await;
        server.wait_in_sync().await;
        server
    }

    /// Where it runs (and would write its snapshots).
    fn dir(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("sse-redis-{}-{}", std::process::id(), self.port))
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Makes it a replica of `master`, or (with `None`) promotes it to a master
    /// (`REPLICAOF NO ONE`, what Sentinel does in a failover). A replica pointed at a port
    /// where nothing listens keeps its dataset but receives nothing more: a replica cut off
    /// from its master, falling behind.
    pub async fn replica_of(&self, master: Option<u16>) {
        let port = master.map(|p| p.to_string());
        let args = match &port {
            Some(port) => vec!["REPLICAOF", "127.0.0.1", port.as_str()],
            None => vec!["REPLICAOF", "NO", "ONE"],
        };
        let reply = self.command(&args).await.expect("redis-server answers");
        assert!(reply.starts_with("+OK"), "REPLICAOF: {reply}");
    }

    /// Waits until, as a replica, its link to the master is up and the initial sync is done.
    pub async fn wait_in_sync(&self) {
        for _ in 0..1000 {
            if let Some(info) = self.command(&["INFO", "replication"]).await
                && info.contains("master_link_status:up")
                && info.contains("master_sync_in_progress:0")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the replica on port {} did not sync", self.port);
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL: no save, every connection cut).
    pub fn kill(&mut self) {
        self.frozen = false;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it (SIGSTOP) without closing anything: a host that hangs or a network that
    /// drops every packet. Its connections stay open and nothing on them says it is gone.
    pub fn freeze(&mut self) {
        self.signal(libc::SIGSTOP);
        self.frozen = true;
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&mut self) {
        self.signal(libc::SIGCONT);
        self.frozen = false;
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("a running redis-server");
        let pid = libc::pid_t::try_from(child.id()).expect("a pid");
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "signal {signal} to redis-server {pid}");
    }

    /// Starts it (again) on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        // Its own directory: a replica's full sync writes the master's snapshot there, and a
        // server started where a snapshot lies would load it (a later run's data).
        let _ = std::fs::remove_dir_all(self.dir());
        self.spawn().await;
    }

    /// Kills it and starts it again from its last snapshot (`SAVE`): a crash of a Redis
    /// that persists, which comes back without what was written after the snapshot.
    pub async fn restart_from_snapshot(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let dir = self.dir();
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let mut command = Command::new("redis-server");
        command
            .current_dir(&dir)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            // A replica's full sync starts at once (the default waits 5 s for more replicas).
            .args(["--repl-diskless-sync-delay", "0"]);
        if let Some(master) = self.master {
            command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        command.args(&self.args);
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is not installed: the backplane tests need it \
                 (apt-get install redis-server; .ci/run does)",
            );
        self.child = Some(child);
        for _ in 0..500 {
            if self
                .command(&["PING"])
                .await
                .is_some_and(|r| r.starts_with("+PONG"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// Sends one command (inline, space-free arguments) and returns the raw reply, or `None`
    /// when the server cannot be reached.
    pub async fn command(&self, args: &[&str]) -> Option<String> {
        if self.frozen {
            return None;
        }
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut reply = vec![0; 64 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&reply[..n]).into_owned())
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir());
    }
}
