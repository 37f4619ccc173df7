//! Real reverse proxies in front of a test's server: nginx and Caddy (Debian's packages), each
//! on a free loopback port, configured from the repository's own templates (`deploy/nginx.conf`,
//! `deploy/Caddyfile`, which docs/DEPLOYMENT.md shows), so what is documented is what is tested.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::PATIENCE;

/// Which proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    Nginx,
    Caddy,
}

impl ProxyKind {
    pub const ALL: [Self; 2] = [Self::Nginx, Self::Caddy];

    fn template(self) -> &'static str {
        match self {
            Self::Nginx => include_str!("../../deploy/nginx.conf"),
            Self::Caddy => include_str!("../../deploy/Caddyfile"),
        }
    }

    fn program(self) -> PathBuf {
        let (name, usual) = match self {
            Self::Nginx => ("nginx", "/usr/sbin/nginx"),
            Self::Caddy => ("caddy", "/usr/bin/caddy"),
        };
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .map(|dir| dir.join(name))
            .chain([PathBuf::from(usual)])
            .find(|path| path.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "this test needs {name}: `cargo xtask test` installs it (apt-get install \
                     nginx caddy); a test that cannot run must not pass"
                )
            })
    }
}

/// What to change in a template.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// How long the proxy waits for the next byte from the app before it gives up on a
    /// response (nginx's `proxy_read_timeout`, Caddy's `read_timeout`).
    pub read_timeout: Duration,
    /// Whether the answer to an app that is down (a `200` event stream holding `retry:`) stays
    /// in: without it, the proxy answers `502`.
    pub unavailable_answer: bool,
    /// HTTPS (and HTTP/2) to the clients with this certificate and key (PEM files): the
    /// templates' `tls` lines instead of their `plain` ones.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            read_timeout: Duration::from_secs(60),
            unavailable_answer: true,
            tls: None,
        }
    }
}

/// A running proxy, stopped when dropped.
pub struct Proxy {
    pub kind: ProxyKind,
    pub addr: SocketAddr,
    _child: Child,
    dir: PathBuf,
    tls: bool,
}

impl Proxy {
    pub async fn start(kind: ProxyKind, upstream: SocketAddr) -> Self {
        Self::start_with(kind, upstream, ProxyOptions::default()).await
    }

    /// Starts `kind` in front of `upstream` and waits until it accepts connections.
    pub async fn start_with(kind: ProxyKind, upstream: SocketAddr, options: ProxyOptions) -> Self {
        Self::start_balancing(kind, &[upstream], options).await
    }

    /// Starts `kind` in front of every instance of `upstreams` (nginx's round robin, Caddy's
    /// random choice, each moving on to the next when a connect fails) and waits until it
    /// accepts connections.
    pub async fn start_balancing(
        kind: ProxyKind,
        upstreams: &[SocketAddr],
        options: ProxyOptions,
    ) -> Self {
        let program = kind.program();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("sse-proxy-{kind:?}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("proxy directory");
        let config = fill(kind.template(), &dir, port, upstreams, &options);
        let mut command = match kind {
            ProxyKind::Nginx => {
                let file = dir.join("nginx.conf");
                std::fs::write(&file, config).expect("write nginx.conf");
                let mut command = Command::new(program);
                command.arg("-p").arg(&dir).arg("-c").arg(&file);
                command
            }
            ProxyKind::Caddy => {
                let file = dir.join("Caddyfile");
                std::fs::write(&file, config).expect("write Caddyfile");
                let mut command = Command::new(program);
                command
                    .args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&file)
                    .env("HOME", &dir)
                    .env("XDG_DATA_HOME", dir.join("data"))
                    .env("XDG_CONFIG_HOME", dir.join("config"));
                command
            }
        };
        let log = dir.join("proxy.log");
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("proxy log"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {kind:?}: {e}"));
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        // Neither says when it listens: wait for the port to accept.
        tokio::time::timeout(PATIENCE, async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("{kind:?} did not listen on {addr} in time; its log:\n{log}")
        });
        Self {
            kind,
            addr,
            _child: child,
            dir,
            tls: options.tls.is_some(),
        }
    }

    /// `http://127.0.0.1:PORT/path`, or `https://localhost:PORT/path` over TLS (the test
    /// certificate's name).
    pub fn url(&self, path: &str) -> String {
        if self.tls {
            format!("https://localhost:{}{}", self.addr.port(), path)
        } else {
            format!("http://{}{}", self.addr, path)
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The template with its `{{...}}` values, and with only the sections that apply: the lines
/// from `# begin: NAME` to `# end: NAME` are left out for `unavailable` without the unavailable
/// answer, for `tls` on plain TCP, for `plain` over TLS.
fn fill(
    template: &str,
    dir: &Path,
    port: u16,
    upstreams: &[SocketAddr],
    options: &ProxyOptions,
) -> String {
    let left_out = |section: &str| match section {
        "unavailable" => !options.unavailable_answer,
        "tls" => options.tls.is_none(),
        "plain" => options.tls.is_some(),
        other => panic!("a template section nobody knows: {other}"),
    };
    let mut out = String::new();
    let mut skipping = false;
    for line in template.lines() {
        if let Some(section) = line.trim().strip_prefix("# begin: ") {
            skipping = left_out(section);
        }
        if !skipping && line.trim().starts_with("server {{UPSTREAM}}") {
            // nginx's `upstream` block: a `server` line per instance.
            for upstream in upstreams {
                out.push_str(&line.replace("{{UPSTREAM}}", &upstream.to_string()));
                out.push('\n');
            }
        } else if !skipping {
            // Caddy's `reverse_proxy`: the instances on one line.
            let all: Vec<String> = upstreams.iter().map(ToString::to_string).collect();
            out.push_str(&line.replace("{{UPSTREAM}}", &all.join(" ")));
            out.push('\n');
        }
        if line.trim().starts_with("# end: ") {
            skipping = false;
        }
    }
    let (cert, key) = options
        .tls
        .as_ref()
        .map(|(cert, key)| (cert.display().to_string(), key.display().to_string()))
        .unwrap_or_default();
    out.replace("{{DIR}}", &dir.display().to_string())
        .replace("{{PORT}}", &port.to_string())
        .replace("{{CERT}}", &cert)
        .replace("{{KEY}}", &key)
        .replace(
            "{{READ_TIMEOUT}}",
            &format!("{}ms", options.read_timeout.as_millis()),
        )
}
