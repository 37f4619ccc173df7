//! Binding the listening socket: an accept queue deep enough for a reconnect wave.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, ToSocketAddrs};

/// The accept queue [`bind`] asks for. Linux silently lowers it to `net.core.somaxconn`
/// (4096 by default since Linux 5.4), so this is "as deep as the system allows", as Go's
/// `net.Listen` does by reading `somaxconn`. `tokio::net::TcpListener::bind` asks for 128, as
/// std's does.
pub const LISTEN_BACKLOG: u32 = 65_535;

/// Binds a TCP listener for [`serve`](super::serve()) with the deepest accept queue the system
/// allows ([`LISTEN_BACKLOG`], capped by the kernel), otherwise as
/// `tokio::net::TcpListener::bind` does (`SO_REUSEADDR` on Unix, the first address of
/// `addr` that binds).
///
/// Why it matters to an SSE server: when a proxy in front restarts, or the server itself does,
/// every client reconnects within the same second. A connection the kernel cannot queue
/// while the server accepts the others has its SYN dropped and is retried by the client's
/// kernel after 1 s, then 3 s, 7 s. In `BENCHMARKS.md`'s reconnect wave, 19 000 clients were
/// all live again after 4.6 s behind tokio's queue of 128, after 0.57 s behind the system's
/// 4096 (medians of 3 rounds).
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use sse_runtime::{Manager, SseHandler, WriteDeadline};
///
/// let manager = Manager::new();
/// let app = axum::Router::new()
///     .route("/alarms", axum::routing::get(SseHandler::new(&manager).topic("alarms")));
/// let listener = sse_runtime::serve::bind("0.0.0.0:8080").await?;
/// sse_runtime::serve(WriteDeadline::new(listener, manager.heartbeat()), app).await;
/// # Ok(()) }
/// ```
///
/// # Errors
/// The error of the last address tried (it could not be bound, or listened on), or an
/// `InvalidInput` error when `addr` resolves to no address.
pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match listen(addr) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        )
    }))
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As std's and tokio's listeners: a restarted server binds again at once, whatever
    // connections of its previous run are still in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
