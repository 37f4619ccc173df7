//! An HTTP/1.1 server for an axum [`Router`] that writes SSE streams straight to the socket.
//!
//! `axum::serve` (hyper) keeps a read buffer and a write buffer for every connection and writes
//! each body chunk through its dispatcher. For a server holding many long-lived SSE streams
//! that is most of the memory and CPU per connection. [`serve`] runs every request through the
//! same `Router`, but once a handler answers with an [`SseStream`] the
//! connection keeps no buffers at all: frames go from the topic's log into a buffer the
//! worker thread reuses, and from there to the socket in one write per wake-up. A stream gets
//! a task of its own, sized for the stream alone (a request's state is boxed while it is
//! answered).
//!
//! TCP connections get `TCP_NODELAY`: a stream coalesces what it writes itself, so an event
//! goes out when it is written.
//!
//! What it implements of HTTP/1.1: keep-alive, pipelined requests, `Content-Length` request
//! bodies (up to [`MAX_BODY`], streamed to the handler only when it reads them, under a budget
//! shared by all connections), `Expect: 100-continue`, `HEAD`, chunked and fixed-length
//! responses, HTTP/1.0 clients, a head timeout. What it refuses with a clear status: chunked
//! request bodies (`501`), request heads over [`MAX_HEAD`] (`431`), malformed requests (`400`).
//! [`Server::hyper`] serves the same `Router` with hyper for anything else (chunked uploads,
//! upgrades). How it frames requests is held to hyper's decisions by a differential test.

//!
//! The modules follow a request through the engine: [`Server`] accepts (`server`), a connection
//! reads request heads and answers them (`connection`), a head is parsed, bounded or refused
//! (`head`), a response is framed onto the wire (`response`), and once a handler answers with
//! an SSE stream, the stream's writer owns the connection (`writer`). [`bind`] makes the
//! listening socket (`listen`). `hyper` is the other engine, `tls` the HTTPS layer under both,
//! `body` the request bodies read on demand.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;

mod body;
mod connection;
mod date;
mod head;
mod hyper;
mod listen;
mod response;
mod server;
#[cfg(feature = "tls")]
mod tls;
mod writer;

pub use listen::{LISTEN_BACKLOG, bind};
pub use server::Server;
#[cfg(feature = "tls")]
pub use tls::{Tls, TlsError};

#[cfg(doc)]
use crate::stream::SseStream;

/// Longest request head (request line and headers) accepted; longer gets `431`.
pub const MAX_HEAD: usize = 16 * 1024;

/// Largest request body accepted; a request declaring more gets `413` before any handler runs.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// Bytes of request bodies that all connections of one server hold at most, together. A body
/// is read only when its handler asks for it, and only once this budget has room for it.
pub const MAX_PENDING_BODIES: usize = 32 * 1024 * 1024;

/// Most headers in a request.
pub(super) const MAX_HEADERS: usize = 64;

/// Default of [`Server::head_timeout`]: how long a connection may take to send a request head
/// (slow-loris protection), how long an idle keep-alive connection is kept, and how long a body
/// read may wait.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest head timeout honoured (a larger one, such as `Duration::MAX`, is clamped to it).
pub(super) const MAX_HEAD_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Serves `router` on `listener` until the process ends, writing SSE streams straight to the
/// socket.
///
/// Every request runs through the same axum `Router` as under `axum::serve`, but once a
/// handler answers with an [`SseStream`] the connection keeps no buffers: its
/// frames go from the topic's log to the socket in one write per wake-up, copied into a
/// buffer the worker thread reuses: no allocation per event, a fraction of hyper's memory per
/// idle connection and about half its CPU per event (measured in the repository's
/// `BENCHMARKS.md`).
///
/// It speaks HTTP/1.1 with keep-alive and pipelining, `Content-Length` request bodies up to
/// [`MAX_BODY`] (read only when the handler asks for them), `Expect: 100-continue`, `HEAD`, and
/// HTTP/1.0 clients. It answers chunked request bodies with `501`, request heads over
/// [`MAX_HEAD`] with `431`, malformed requests with `400`, and closes connections whose request
/// head takes longer than [`DEFAULT_HEAD_TIMEOUT`] ([`Server`] sets another).
///
/// Layers apply as under any server, but for the body of an SSE response: its frames go to
/// the socket, not through the body the layers wrapped, so a body layer sees none of them. It
/// sees the stream's end: that body is ended with the stream (tower-http's `TraceLayer` calls
/// `on_eos` once per stream, however it ended). A response whose body a layer encodes (it has
/// `Content-Encoding`) is written through its body instead, as any server would.
///
/// Every request carries its peer's address as `ConnectInfo<L::Addr>` (a `SocketAddr` on a
/// `TcpListener`), as `axum::serve` does with `into_make_service_with_connect_info`: handlers
/// extract it, and [`SseHandler`](crate::SseHandler) counts streams per client address with it. Use
/// [`Server::hyper`] where you need chunked uploads or upgrades.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use sse_runtime::{Manager, SseHandler, WriteDeadline};
///
/// let manager = Manager::new();
/// let app = axum::Router::new()
///     .route("/alarms", axum::routing::get(SseHandler::new(&manager).topic("alarms")));
/// let listener = sse_runtime::serve::bind("127.0.0.1:8080").await?;
/// sse_runtime::serve(WriteDeadline::new(listener, manager.heartbeat()), app).await;
/// # Ok(()) }
/// ```
pub async fn serve<L: Listener>(listener: L, router: Router)
where
    L::Addr: Clone + Sync + 'static,
{
    Server::new(router).run(listener).await;
}

/// Like [`serve`], until `signal` completes: then it stops accepting, lets every request in
/// progress finish, closes idle connections and returns once all are closed. Open SSE streams
/// are ended too: it shuts down the [`Manager`](crate::Manager) of every stream it served (as
/// [`Manager::shutdown`](crate::Manager::shutdown) does; each stream's last frame says when to
/// come back), so a client that stays connected never holds the server open.
pub async fn serve_with_shutdown<L: Listener>(
    listener: L,
    router: Router,
    signal: impl Future<Output = ()> + Send,
) where
    L::Addr: Clone + Sync + 'static,
{
    Server::new(router)
        .run_with_shutdown(listener, signal)
        .await;
}
