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

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use axum::response::Response;
use axum::serve::Listener;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::stream::{Served, SseStream, Takeover};

mod body;
mod date;
mod hyper;
#[cfg(feature = "tls")]
mod tls;

#[cfg(feature = "tls")]
pub use tls::{Tls, TlsError};

use body::Budget;

/// Longest request head (request line and headers) accepted; longer gets `431`.
pub const MAX_HEAD: usize = 16 * 1024;

/// Largest request body accepted; a request declaring more gets `413` before any handler runs.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// Bytes of request bodies that all connections of one server hold at most, together. A body
/// is read only when its handler asks for it, and only once this budget has room for it.
pub const MAX_PENDING_BODIES: usize = 32 * 1024 * 1024;

/// Most headers in a request.
const MAX_HEADERS: usize = 64;

/// Default of [`Server::head_timeout`]: how long a connection may take to send a request head
/// (slow-loris protection), how long an idle keep-alive connection is kept, and how long a body
/// read may wait.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest head timeout honoured (a larger one, such as `Duration::MAX`, is clamped to it).
const MAX_HEAD_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Serves an axum [`Router`], with the settings a server on the internet needs.
///
/// Two engines run the same `Router`: the framework's own HTTP/1.1 server (the default, see
/// [`serve`]), which writes SSE streams straight to the socket, and hyper
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
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
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
    /// bodies, upgrades), at hyper's cost per connection (about 20 KiB per idle SSE stream
    /// instead of 1.4 KiB). The head timeout is hyper's own `header_read_timeout`.
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
    /// served (see [`serve_with_shutdown`]).
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
/// away mid-request is no news).
async fn logged(connection: impl Future<Output = io::Result<()>>) {
    if let Err(error) = connection.await {
        tracing::debug!(%error, "connection ended with an error");
    }
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
    /// Serves HTTP/1.1 on `io` with the server's engine.
    async fn serve<I, A>(self, io: I, peer: A) -> io::Result<()>
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
            Engine::Direct => {
                connection(io, peer, router, stop, budget, head_timeout, streams).await
            }
            Engine::Hyper => {
                hyper::connection(io, peer, router, stop, head_timeout, streams.served).await
            }
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
fn no_delay<I: 'static>(io: &mut I) {
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

/// Serves `router` on `listener` until the process ends, writing SSE streams straight to the
/// socket.
///
/// Every request runs through the same axum `Router` as under `axum::serve`, but once a
/// handler answers with an [`SseStream`] the connection keeps no buffers: its
/// frames go from the topic's log to the socket in one write per wake-up, copied into a
/// buffer the worker thread reuses (1.4 KiB per idle connection instead of hyper's ~17 KiB, no
/// allocation per event, and about half the CPU per event).
///
/// It speaks HTTP/1.1 with keep-alive and pipelining, `Content-Length` request bodies up to
/// [`MAX_BODY`] (read only when the handler asks for them), `Expect: 100-continue`, `HEAD`, and
/// HTTP/1.0 clients. It answers chunked request bodies with `501`, request heads over
/// [`MAX_HEAD`] with `431`, malformed requests with `400`, and closes connections whose request
/// head takes longer than [`DEFAULT_HEAD_TIMEOUT`] ([`Server`] sets another).
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
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
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

/// Why a request is refused before it reaches the router. The answer names the reason, and
/// the connection closes after it: where the request ends can no longer be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// The head is over [`MAX_HEAD`], or has more than `MAX_HEADERS` fields.
    HeadTooLarge,
    /// The head does not parse (or a field is not a valid name or value).
    Malformed,
    /// Neither HTTP/1.0 nor HTTP/1.1.
    Version,
    /// `Transfer-Encoding` on a request: only `Content-Length` bodies are read here.
    TransferEncoding,
    /// A `Content-Length` that is not one value of digits only.
    ContentLength,
    /// A body over [`MAX_BODY`].
    BodyTooLarge,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Self::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Malformed | Self::ContentLength => StatusCode::BAD_REQUEST,
            Self::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Self::TransferEncoding => StatusCode::NOT_IMPLEMENTED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::HeadTooLarge => "request head too large",
            Self::Malformed => "malformed request head",
            Self::Version => "only HTTP/1.0 and HTTP/1.1 are served",
            Self::TransferEncoding => {
                "chunked request bodies are not supported here (Server::hyper supports them)"
            }
            Self::ContentLength => "Content-Length must be a single value of digits only",
            Self::BodyTooLarge => "request body too large",
        }
    }
}

/// What reading the next request head gave.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per request and unpacked at once; boxing would allocate per request"
)]
enum Incoming {
    /// A complete head, and its length in the buffer.
    Head(Head, usize),
    /// The client closed the connection between requests.
    Closed,
    Refused(Refusal),
}

/// A request head, parsed.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

/// What a connection does after answering a request.
enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close: the answer said so, or the request's end cannot be trusted.
    Close,
    /// The handler answered with an SSE stream: the connection is the stream's from now on.
    Stream(Response, Pin<Box<SseStream>>),
}

/// Where a connection's SSE streams go: a task of their own, tracked so that the server's
/// shutdown waits for it, and their manager noted, so that the shutdown ends them.
struct Streams {
    tasks: TaskTracker,
    served: Served,
}

async fn connection<I, A>(
    mut io: I,
    peer: A,
    router: Router,
    stop: CancellationToken,
    budget: Budget,
    head_timeout: Duration,
    streams: Streams,
) -> io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Clone + Send + Sync + 'static,
{
    let mut buf = BytesMut::new();
    loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled(), if buf.is_empty() => return Ok(()),
            next = tokio::time::timeout(head_timeout, read_head(&mut io, &mut buf)) => next,
        };
        let (head, head_len) = match next {
            Err(_elapsed) => return Ok(()),
            Ok(incoming) => match incoming? {
                Incoming::Head(head, len) => (head, len),
                Incoming::Closed => return Ok(()),
                Incoming::Refused(refusal) => return refuse(&mut io, refusal).await,
            },
        };
        buf.advance(head_len);
        let version = head.version;
        // Boxed: a request's state (the router's future, the head, the body's feed) is large,
        // and a connection's task is as large as its largest await point. Unboxed, every open
        // stream kept room for it (2.2 KiB a connection); boxed, it lives only while a request
        // is answered.
        let answered = Box::pin(answer(
            &mut io,
            &mut buf,
            head,
            &peer,
            &router,
            &budget,
            head_timeout,
        ));
        match answered.await? {
            Next::KeepAlive => {}
            Next::Close => return io.shutdown().await,
            Next::Stream(response, stream) => {
                streams.served.note(stream.subscription().manager_handle());
                let (head, framing) = sse_head(response, version);
                // From here on the connection belongs to the stream, in a task of its own sized
                // for the stream alone (this one, sized for requests, ends: 1.4 KiB less for
                // every open stream). Tracked like the connection, so shutdown waits for it.
                streams.tasks.spawn(async move {
                    if let Err(error) = stream_sse(io, head, stream, framing).await {
                        tracing::debug!(%error, "stream ended with an error");
                    }
                });
                return Ok(());
            }
        }
    }
}

/// Answers one request whose head was read (and taken out of `buf`): runs the router while
/// the body is delivered on demand, then writes the response, or hands an SSE stream back.
async fn answer<I, A>(
    io: &mut I,
    buf: &mut BytesMut,
    head: Head,
    peer: &A,
    router: &Router,
    budget: &Budget,
    head_timeout: Duration,
) -> io::Result<Next>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Clone + Send + Sync + 'static,
{
    let length = match body_length(&head) {
        Ok(length) => length,
        Err(refusal) => {
            refuse(io, refusal).await?;
            return Ok(Next::Close);
        }
    };
    let keep_alive = wants_keep_alive(&head);
    let is_head = head.method == Method::HEAD;
    let version = head.version;
    // HTTP/1.0 has no 100 Continue; its clients send the body without waiting.
    let expect_continue = version == Version::HTTP_11
        && head
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // Most requests have no body: they get no channel either. A body that arrived whole
    // with its head is already in memory: the handler gets it as it is, with no channel,
    // budget or `100 Continue` (all for bytes still to come).
    let (mut feed, body) = match length {
        0 => (None, Body::empty()),
        _ if buf.len() as u64 >= length => {
            (None, Body::from(buf.split_to(length as usize).freeze()))
        }
        _ => {
            let (feed, body) = body::channel(length, expect_continue);
            (Some(feed), Body::new(body))
        }
    };
    let mut request = Request::new(body);
    *request.method_mut() = head.method;
    *request.uri_mut() = head.uri;
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers;
    request.extensions_mut().insert(ConnectInfo(peer.clone()));

    // The handler runs while the body is delivered on demand; whichever ends first, the
    // response is what decides the connection's next step.
    let respond = router.clone().oneshot(request);
    tokio::pin!(respond);
    let mut failed = false;
    let delivered = match feed.as_mut() {
        None => None,
        Some(feed) => tokio::select! {
            biased;
            Ok::<_, Infallible>(response) = &mut respond => Some(response),
            result = feed.deliver(io, buf, budget, head_timeout) => {
                failed = result.is_err();
                None
            }
        },
    };
    let mut response = match delivered {
        Some(response) => response,
        None => {
            let Ok::<_, Infallible>(response) = respond.await;
            response
        }
    };
    // A body the handler did not read: what arrived with the head is skipped; if more is
    // still to come, the connection closes rather than read it.
    let body_done = !failed && feed.as_mut().is_none_or(|f| f.discard_buffered(buf));

    let takeover = response
        .extensions_mut()
        .remove::<Takeover>()
        .and_then(|t| t.take());
    if let Some(stream) = takeover.filter(|_| !is_head) {
        return Ok(Next::Stream(response, stream));
    }
    // `keep_alive` is already false for HTTP/1.0 requests.
    let close = !keep_alive || !body_done || has_token(response.headers(), "close");
    write_response(io, response, is_head, close, version).await?;
    drop(feed); // releases the body's share of the budget
    Ok(if close { Next::Close } else { Next::KeepAlive })
}

/// Reads until `buf` holds a complete request head (or the client closes, or the head is to be
/// refused).
async fn read_head<I: AsyncRead + Unpin>(io: &mut I, buf: &mut BytesMut) -> io::Result<Incoming> {
    loop {
        // Leading empty lines between pipelined requests are allowed (RFC 9112 2.2).
        while buf.starts_with(b"\r\n") {
            buf.advance(2);
        }
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            let refusal = match request.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    return Ok(match parse_head(&request) {
                        Ok(head) => Incoming::Head(head, len),
                        Err(refusal) => Incoming::Refused(refusal),
                    });
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => None,
                Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                    Some(Refusal::HeadTooLarge)
                }
                Err(httparse::Error::Version) => Some(Refusal::Version),
                Err(_) => Some(Refusal::Malformed),
            };
            if let Some(refusal) = refusal {
                return Ok(Incoming::Refused(refusal));
            }
        }
        buf.reserve(1024);
        if io.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(Incoming::Closed)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

fn parse_head(request: &httparse::Request<'_, '_>) -> Result<Head, Refusal> {
    fn bad<E>(_: E) -> Refusal {
        Refusal::Malformed
    }
    let method =
        Method::from_bytes(request.method.ok_or(Refusal::Malformed)?.as_bytes()).map_err(bad)?;
    let uri: Uri = request
        .path
        .ok_or(Refusal::Malformed)?
        .parse()
        .map_err(bad)?;
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(Refusal::Version),
    };
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for h in request.headers.iter() {
        headers.append(
            HeaderName::from_bytes(h.name.as_bytes()).map_err(bad)?,
            HeaderValue::from_bytes(h.value).map_err(bad)?,
        );
    }
    Ok(Head {
        method,
        uri,
        version,
        headers,
    })
}

/// The length of the request's body. Only `Content-Length` framing is accepted, and only as
/// plain digits: a sign, a second value or a second header is refused (a disagreement about
/// where the body ends is how requests are smuggled).
fn body_length(head: &Head) -> Result<u64, Refusal> {
    if head.headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(Refusal::TransferEncoding);
    }
    let mut values = head.headers.get_all(header::CONTENT_LENGTH).iter();
    let length = match (values.next(), values.next()) {
        (None, _) => 0,
        (Some(value), None) => parse_length(value.as_bytes()).ok_or(Refusal::ContentLength)?,
        (Some(_), Some(_)) => return Err(Refusal::ContentLength),
    };
    if length > MAX_BODY as u64 {
        return Err(Refusal::BodyTooLarge);
    }
    Ok(length)
}

/// `1*DIGIT` (RFC 9110 8.6), nothing else.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn wants_keep_alive(head: &Head) -> bool {
    head.version != Version::HTTP_10 && !has_token(&head.headers, "close")
}

/// Whether the `Connection` headers, all of them, list `token` (a comma-separated,
/// case-insensitive list, RFC 9110 7.6.1).
fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Answers a request that cannot be served, saying why, and closes.
async fn refuse<I: AsyncWrite + Unpin>(io: &mut I, refusal: Refusal) -> io::Result<()> {
    let status = refusal.status();
    let canonical = status.canonical_reason().unwrap_or("");
    let body = format!("{} {canonical}: {}\n", status.as_u16(), refusal.reason());
    let response = format!(
        "HTTP/1.1 {} {canonical}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        body.len()
    );
    io.write_all(response.as_bytes()).await?;
    io.shutdown().await
}

fn encode_head(response: &Response, framing: Framing) -> Vec<u8> {
    let status = response.status();
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    if !response.headers().contains_key(header::DATE) {
        head.extend_from_slice(b"date: ");
        date::write(&mut head);
        head.extend_from_slice(b"\r\n");
    }
    for (name, value) in response.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(framing.header());
    head.extend_from_slice(b"\r\n");
    head
}

/// Writes a response: `Content-Length` when the body's size is known, otherwise chunked (or,
/// for an HTTP/1.0 client, which cannot decode chunks, delimited by closing the connection).
async fn write_response<I: AsyncWrite + Unpin>(
    io: &mut I,
    mut response: Response,
    is_head: bool,
    close: bool,
    version: Version,
) -> io::Result<()> {
    let status = response.status();
    let no_body = status.is_informational() || status == StatusCode::NO_CONTENT;
    let bodiless = is_head || no_body || status == StatusCode::NOT_MODIFIED;
    let exact = response.body().size_hint().exact();
    let headers = response.headers_mut();
    headers.remove(header::TRANSFER_ENCODING);
    if no_body {
        // RFC 9110 8.6: a 1xx or 204 response carries no Content-Length.
        headers.remove(header::CONTENT_LENGTH);
    }
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let framing = match exact {
        _ if bodiless => Framing::Length,
        Some(length) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            Framing::Length
        }
        None => {
            headers.remove(header::CONTENT_LENGTH);
            // An HTTP/1.0 request is never kept alive: `close` is already set.
            Framing::unknown_length(version)
        }
    };
    io.write_all(&encode_head(&response, framing)).await?;
    if bodiless {
        return io.flush().await;
    }
    let mut body = response.into_body();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        // `let else`, not `if let`: the scrutinee (a `Result` holding a trailers map) would
        // live across the write and grow every connection's task.
        let Ok(data) = frame.map_err(io::Error::other)?.into_data() else {
            continue;
        };
        write_data(io, framing, data).await?;
    }
    io.write_all(framing.last_chunk()).await?;
    io.flush().await
}

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// By the `Content-Length` in the headers (or there is no body).
    Length,
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// By closing the connection: an HTTP/1.0 client cannot decode chunks.
    Close,
}

impl Framing {
    /// The framing of a body whose length is not known in advance.
    fn unknown_length(version: Version) -> Self {
        if version == Version::HTTP_10 {
            Self::Close
        } else {
            Self::Chunked
        }
    }

    /// The header line it needs, if any (`Close` relies on `connection: close`).
    fn header(self) -> &'static [u8] {
        match self {
            Self::Chunked => b"transfer-encoding: chunked\r\n",
            Self::Length | Self::Close => b"",
        }
    }

    /// What ends the body: the last chunk, for `Chunked`.
    fn last_chunk(self) -> &'static [u8] {
        match self {
            Self::Chunked => b"0\r\n\r\n",
            Self::Length | Self::Close => b"",
        }
    }
}

/// Writes body data as `framing` delimits it: for `Chunked`, one chunk (size line, data,
/// CRLF), in one vectored write when possible. (One future for every framing: a connection's
/// task is as large as its largest await point, and every idle connection pays for it.)
async fn write_data<I: AsyncWrite + Unpin>(
    io: &mut I,
    framing: Framing,
    data: Bytes,
) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut digits = [0u8; 16];
    let chunked = framing == Framing::Chunked;
    let size: &[u8] = if chunked {
        crate::event_id::hex(data.len() as u64, &mut digits)
    } else {
        b""
    };
    let crlf: &[u8] = if chunked { b"\r\n" } else { b"" };
    let mut parts = [
        IoSlice::new(size),
        IoSlice::new(crlf),
        IoSlice::new(&data),
        IoSlice::new(crlf),
    ];
    let mut slices: &mut [IoSlice<'_>] = &mut parts;
    while !slices.is_empty() {
        let written = io.write_vectored(slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

/// The head of an SSE response, and how its body is delimited.
fn sse_head(mut response: Response, version: Version) -> (Vec<u8>, Framing) {
    let framing = Framing::unknown_length(version);
    if framing == Framing::Close {
        let close = HeaderValue::from_static("close");
        response.headers_mut().insert(header::CONNECTION, close);
    }
    (encode_head(&response, framing), framing)
}

/// Writes the SSE response head, then the stream's frames as they come, until the stream ends
/// or the client goes away.
///
/// It runs as a task of its own, which every open stream keeps for as long as it is open: it
/// takes the encoded head rather than the response, since whatever an async fn takes stays in
/// its future to the end.
async fn stream_sse<I: AsyncRead + AsyncWrite + Unpin>(
    mut io: I,
    head: Vec<u8>,
    mut stream: Pin<Box<SseStream>>,
    framing: Framing,
) -> io::Result<()> {
    io.write_all(&head).await?;
    drop(head);
    loop {
        enum Step {
            /// What the stream had was written in full.
            Wrote,
            /// What the socket did not take at once, to be written before anything else.
            Rest(Bytes),
            Failed(io::Error),
            End,
            Hangup,
        }
        let step = poll_fn(|cx| {
            // A readable socket during a stream means the client closed it, or sent something
            // nobody will read (an unread request body, a pipelined request): that is
            // discarded, and the stream is over once the socket reads as EOF. Reading until it
            // is pending registers the waker, so the EOF behind discarded bytes is seen at once;
            // a client that keeps sending gets 64 KiB discarded per turn, then yields.
            // Uninitialized: zeroing 4 KiB on every wake-up was most of a stream's user time.
            let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
            for turn in 0.. {
                let mut probe = ReadBuf::uninit(&mut probe);
                match Pin::new(&mut io).poll_read(cx, &mut probe) {
                    Poll::Ready(Ok(())) if probe.filled().is_empty() => {
                        return Poll::Ready(Step::Hangup);
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(Step::Hangup),
                    Poll::Ready(Ok(())) if turn == 15 => {
                        cx.waker().wake_by_ref();
                        break;
                    }
                    Poll::Ready(Ok(())) => {}
                    Poll::Pending => break,
                }
            }
            // The frames are copied into the worker thread's scratch buffer, framed as one
            // chunk, and written from there in the same poll: no allocation, however many
            // events the stream has. Only what the socket does not take at once is copied out
            // and kept, to be written before the next read.
            SCRATCH.with_borrow_mut(|scratch| {
                scratch.clear();
                scratch.resize(SIZE_LINE, 0);
                match stream.as_mut().poll_data(cx, Some(scratch)) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => return Poll::Ready(Step::End),
                    Poll::Ready(Some(_appended)) => {}
                }
                if scratch.len() == SIZE_LINE {
                    return Poll::Ready(Step::Wrote);
                }
                let start = frame_chunk(scratch, framing);
                let step = match Pin::new(&mut io).poll_write(cx, &scratch[start..]) {
                    Poll::Ready(Ok(n)) if start + n == scratch.len() => Step::Wrote,
                    Poll::Ready(Ok(0)) => Step::Failed(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => Step::Rest(Bytes::copy_from_slice(&scratch[start + n..])),
                    Poll::Pending => Step::Rest(Bytes::copy_from_slice(&scratch[start..])),
                    Poll::Ready(Err(error)) => Step::Failed(error),
                };
                if scratch.capacity() > MAX_SCRATCH {
                    *scratch = Vec::new();
                }
                Poll::Ready(step)
            })
        })
        .await;
        // Flushed: over TLS, the write encrypts into the session, and what of the record the
        // socket did not take waits there until flushed (on TCP, flushing is a no-op).
        let written = match step {
            Step::Wrote => io.flush().await,
            Step::Rest(rest) => match io.write_all(&rest).await {
                Ok(()) => io.flush().await,
                Err(error) => Err(error),
            },
            Step::Failed(error) => Err(error),
            Step::End => {
                io.write_all(framing.last_chunk()).await?;
                return io.shutdown().await;
            }
            Step::Hangup => return Ok(()),
        };
        if let Err(error) = written {
            stream.as_mut().write_failed(&error);
            return Err(error);
        }
    }
}

thread_local! {
    /// Where a worker thread assembles what a stream writes next (the chunk's size line, its
    /// frames, the closing CRLF): reused by every stream the thread runs.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Room kept at the front of the scratch buffer for a chunk's size line (hex digits, CRLF).
const SIZE_LINE: usize = 16 + 2;

/// A scratch buffer grown past this (by an event this large) is released after its write.
const MAX_SCRATCH: usize = 1024 * 1024;

/// Frames the data after the first [`SIZE_LINE`] bytes of `scratch` as `framing` delimits it
/// (for `Chunked`, one chunk: its size line goes right before the data, its CRLF after); where
/// the bytes to write start.
fn frame_chunk(scratch: &mut Vec<u8>, framing: Framing) -> usize {
    if framing != Framing::Chunked {
        return SIZE_LINE;
    }
    let mut digits = [0u8; 16];
    let size = crate::event_id::hex((scratch.len() - SIZE_LINE) as u64, &mut digits);
    let start = SIZE_LINE - 2 - size.len();
    scratch[start..SIZE_LINE - 2].copy_from_slice(size);
    scratch[SIZE_LINE - 2..SIZE_LINE].copy_from_slice(b"\r\n");
    scratch.extend_from_slice(b"\r\n");
    start
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

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

    /// Every open stream keeps its task for as long as it is open, so the task's size is a
    /// floor of the memory per connection: it must hold the stream's state alone, not the
    /// request's (the router's future, the head), which once made it 2.2 KiB.
    #[tokio::test]
    async fn an_open_streams_task_holds_the_stream_alone() {
        fn size<T>(_: &T) -> usize {
            std::mem::size_of::<T>()
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let io = crate::deadline::DeadlineIo::new(client.await.unwrap(), Duration::from_secs(1));
        let manager = crate::Manager::new();
        let stream = SseStream::from(manager.subscribe("t").unwrap());
        let (head, framing) = sse_head(stream.into_response(), Version::HTTP_11);
        let stream = Box::pin(SseStream::from(manager.subscribe("t").unwrap()));
        let task = stream_sse(io, head, stream, framing);
        assert!(
            size(&task) <= 512,
            "a stream's task is {} bytes",
            size(&task)
        );
    }
}
