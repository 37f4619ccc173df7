//! [`Server`]: its settings, the accept loop, and what each accepted connection is served with
//! (the framework's engine or hyper, over TLS or not).

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use futures_util::FutureExt;
use futures_util::future::Either;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[cfg(feature = "tls")]
use super::Tls;
use super::body::Budget;
use super::connection::{Streams, connection};
use super::{DEFAULT_HEAD_TIMEOUT, MAX_HEAD_TIMEOUT, MAX_PENDING_BODIES, hyper};
use crate::stream::Served;

/// Serves an axum [`Router`], with the settings a server on the internet needs.
///
/// Two engines run the same `Router`: the framework's own HTTP/1.1 server (the default, see
/// [`serve`](super::serve())), which writes SSE streams straight to the socket, and hyper
/// ([`hyper`](Self::hyper)), for chunked uploads and protocol upgrades. Both close a connection
/// whose request head does not arrive in full within the [head
/// timeout](Self::head_timeout), and an idle keep-alive connection after it; an SSE stream,
/// whose client sends nothing after its request, is never closed by it. (`axum::serve` has no
/// such timeout: a client that sends nothing, or a byte now and then, holds its connection for
/// as long as it likes.)
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use std::time::Duration;
/// use sse_runtime::{Manager, Server, SseHandler, WriteDeadline};
///
/// let manager = Manager::new();
/// let app = axum::Router::new()
///     .route("/alarms", axum::routing::get(SseHandler::new(&manager).topic("alarms")));
/// let listener = sse_runtime::serve::bind("127.0.0.1:8080").await?;
/// Server::new(app)
///     .head_timeout(Duration::from_secs(10))
///     .hyper()
///     .run(WriteDeadline::new(listener, manager.heartbeat()))
///     .await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use = "call .run(listener) to serve"]
pub struct Server {
    router: Router,
    head_timeout: Duration,
    engine: Engine,
    #[cfg(feature = "tls")]
    tls: Option<Tls>,
    #[cfg(feature = "tls")]
    http2: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Direct,
    Hyper,
}

impl Server {
    /// A server for `router` on the framework's own engine, with the default head timeout.
    pub fn new(router: Router) -> Self {
        Self {
            router,
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            engine: Engine::Direct,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            http2: true,
        }
    }

    /// How long a client may take to send a request head, counted from the moment the server
    /// starts waiting for it (the connection's start, or the end of the previous response);
    /// also how long a body read may stall on the framework's engine. Default 30 s.
    pub fn head_timeout(mut self, timeout: Duration) -> Self {
        self.head_timeout = timeout.min(MAX_HEAD_TIMEOUT);
        self
    }

    /// Serve with hyper instead of the framework's engine: HTTP/1.1 in full (chunked request
    /// bodies, upgrades), at hyper's cost per connection (an order of magnitude more memory
    /// per idle SSE stream: `BENCHMARKS.md`, scenario S4). The head timeout is hyper's own `header_read_timeout`.
    pub fn hyper(mut self) -> Self {
        self.engine = Engine::Hyper;
        self
    }

    /// Serve HTTPS with `tls`'s certificate (feature `tls`). ALPN offers `h2` and `http/1.1`:
    /// a client that picks `h2` (every browser does) is served by hyper's HTTP/2, all its
    /// streams on one connection (HTTP/1.1 browsers open at most six connections to a host, so
    /// a seventh `EventSource` on one page waits); one that picks `http/1.1` by the engine this
    /// server runs. The TLS handshake has the [head timeout](Self::head_timeout) to complete;
    /// an HTTP/2 connection with no request open for the head timeout is closed; the write
    /// deadline of a [`WriteDeadline`](crate::WriteDeadline) listener holds below TLS.
    ///
    /// What a connection costs over TLS is in `BENCHMARKS.md`.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Whether to offer HTTP/2 over [TLS](Self::tls) (default `true`). Without it, every
    /// client speaks HTTP/1.1 to the server's engine: less memory per stream on the
    /// framework's engine, but a browser page gets at most six streams.
    #[cfg(feature = "tls")]
    pub fn http2(mut self, enabled: bool) -> Self {
        self.http2 = enabled;
        self
    }

    /// Serves on `listener` until the process ends.
    pub async fn run<L: Listener>(self, listener: L)
    where
        L::Addr: Clone + Sync + 'static,
    {
        self.run_with_shutdown(listener, std::future::pending())
            .await;
    }

    /// Serves until `signal` completes: then it stops accepting, lets every request in
    /// progress finish, closes idle connections and returns once all are closed. Open SSE
    /// streams are ended by shutting down the [`Manager`](crate::Manager) of every stream it
    /// served (see [`serve_with_shutdown`](super::serve_with_shutdown)).
    pub async fn run_with_shutdown<L: Listener>(
        self,
        mut listener: L,
        signal: impl Future<Output = ()> + Send,
    ) where
        L::Addr: Clone + Sync + 'static,
    {
        let stop = CancellationToken::new();
        let connections = TaskTracker::new();
        let budget = Budget::new(MAX_PENDING_BODIES);
        let served = Served::default();
        #[cfg(feature = "tls")]
        let tls = self
            .tls
            .as_ref()
            .map(|tls| tokio_rustls::TlsAcceptor::from(tls.server_config(self.http2)));
        tokio::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => break,
                (mut io, peer) = listener.accept() => {
                    no_delay(&mut io);
                    let connection = Connection {
                        router: self.router.clone(),
                        stop: stop.clone(),
                        budget: budget.clone(),
                        head_timeout: self.head_timeout,
                        engine: self.engine,
                        streams: Streams { tasks: connections.clone(), served: served.clone() },
                    };
                    #[cfg(feature = "tls")]
                    if let Some(tls) = &tls {
                        connections.spawn(logged(connection.serve_tls(tls.clone(), io, peer)));
                        continue;
                    }
                    connections.spawn(logged(connection.serve(io, peer)));
                }
            }
        }
        stop.cancel();
        // The streams end with their managers: else a stream would hold the server open for
        // as long as its client stays.
        served.shut_down();
        connections.close();
        connections.wait().await;
    }
}

/// A connection's task: what ended it with an error is logged (at debug: a client that went
/// away mid-request is no news). Mapped, not awaited in an `async fn`, which would keep the
/// connection's future twice (as its argument and as awaited): 3 288 bytes a connection
/// instead of 1 640, 15 896 instead of 7 944 over TLS.
fn logged(connection: impl Future<Output = io::Result<()>>) -> impl Future<Output = ()> {
    connection.map(|result| {
        if let Err(error) = result {
            tracing::debug!(%error, "connection ended with an error");
        }
    })
}

/// What a connection's task needs of its server.
struct Connection {
    router: Router,
    stop: CancellationToken,
    budget: Budget,
    head_timeout: Duration,
    engine: Engine,
    streams: Streams,
}

impl Connection {
    /// Serves HTTP/1.1 on `io` with the server's engine. (The engine's future itself, not one
    /// awaiting it, which would hold the socket and the settings twice.)
    fn serve<I, A>(self, io: I, peer: A) -> impl Future<Output = io::Result<()>> + Send
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        A: Clone + Send + Sync + 'static,
    {
        let Self {
            router,
            stop,
            budget,
            head_timeout,
            engine,
            streams,
        } = self;
        match engine {
            Engine::Direct => Either::Left(connection(
                io,
                peer,
                router,
                stop,
                budget,
                head_timeout,
                streams,
            )),
            Engine::Hyper => Either::Right(hyper::connection(
                io,
                peer,
                router,
                stop,
                head_timeout,
                streams.served,
            )),
        }
    }

    /// The TLS handshake (within the head timeout), then HTTP/2 or HTTP/1.1, as ALPN chose.
    #[cfg(feature = "tls")]
    async fn serve_tls<I, A>(
        self,
        acceptor: tokio_rustls::TlsAcceptor,
        io: I,
        peer: A,
    ) -> io::Result<()>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        A: Clone + Send + Sync + 'static,
    {
        let handshake = tokio::select! {
            biased;
            () = self.stop.cancelled() => return Ok(()),
            handshake = tokio::time::timeout(self.head_timeout, acceptor.accept(io)) => handshake,
        };
        let io = match handshake {
            Ok(Ok(io)) => io,
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                return Ok(());
            }
            Err(_elapsed) => {
                tracing::debug!("TLS handshake timed out");
                return Ok(());
            }
        };
        if io.get_ref().1.alpn_protocol() != Some(b"h2") {
            return self.serve(io, peer).await;
        }
        hyper::h2_connection(
            io,
            peer,
            self.router,
            self.stop,
            self.head_timeout,
            self.streams.served,
        )
        .await
    }
}

/// Sets `TCP_NODELAY` on a TCP connection (a `TcpListener`'s, or one under [`WriteDeadline`]),
/// as Go's `net/http` does for every connection: an event goes out when it is written, not
/// when the client has acknowledged the previous one (Nagle's algorithm). Streams coalesce what
/// they write themselves, and with Nagle on, the fan-out benchmark delivered a third fewer
/// events per second. Other I/O types are left as they are (wrap the listener with
/// `axum::serve::ListenerExt::tap_io` to set it on them).
///
/// [`WriteDeadline`]: crate::WriteDeadline
pub(super) fn no_delay<I: 'static>(io: &mut I) {
    let io: &dyn std::any::Any = io;
    let tcp = match io.downcast_ref::<tokio::net::TcpStream>() {
        Some(tcp) => tcp,
        None => match io.downcast_ref::<crate::deadline::DeadlineIo<tokio::net::TcpStream>>() {
            Some(io) => io.get_ref(),
            None => return,
        },
    };
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Accepted TCP connections, bare or under a write deadline, send without Nagle's delay.
    #[tokio::test]
    async fn tcp_connections_get_no_delay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut bare, _) = listener.accept().await.unwrap();
        assert!(!bare.nodelay().unwrap(), "off by default");
        no_delay(&mut bare);
        assert!(bare.nodelay().unwrap());

        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let mut guarded = crate::deadline::DeadlineIo::new(tcp, Duration::from_secs(1));
        no_delay(&mut guarded);
        assert!(guarded.get_ref().nodelay().unwrap());
    }
}
