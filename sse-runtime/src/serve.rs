//! An HTTP/1.1 server for an axum [`Router`] that writes SSE streams straight to the socket.
//!
//! `axum::serve` (hyper) keeps a read buffer and a write buffer for every connection and writes
//! each body chunk through its dispatcher. For a server holding many long-lived SSE streams
//! that is most of the memory and CPU per connection. [`serve`] runs every request through the
//! same `Router`, but once a handler answers with an [`SseStream`](crate::SseStream) the
//! connection keeps no buffers at all: frames go from the topic's log to the socket in one
//! vectored write per wake-up.
//!
//! What it implements of HTTP/1.1: keep-alive, pipelined requests, `Content-Length` request
//! bodies (up to [`MAX_BODY`]), `Expect: 100-continue`, `HEAD`, chunked and fixed-length
//! responses, HTTP/1.0 clients. What it refuses with a clear status: chunked request bodies
//! (`501`), request heads over [`MAX_HEAD`] (`431`), malformed requests (`400`). Use
//! `axum::serve` for anything else (HTTP/2, upgrades, streaming uploads).

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::serve::Listener;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use http_body::Body as _;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::stream::SseStream;

/// Longest request head (request line and headers) accepted; longer gets `431`.
pub const MAX_HEAD: usize = 16 * 1024;

/// Largest request body accepted; larger gets `413`.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// Most headers in a request.
const MAX_HEADERS: usize = 64;

/// How long a connection may take to send a request head (slow-loris protection), and how long
/// an idle keep-alive connection is kept.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an [`SseStream`] waits for [`serve`] to take it over; under any other server its body
/// takes it on first poll. (Shared, because the stream must live in the body for those.)
#[derive(Clone)]
pub(crate) struct Takeover(Arc<Mutex<Option<Pin<Box<SseStream>>>>>);

impl Takeover {
    pub(crate) fn new(stream: SseStream) -> Self {
        Self(Arc::new(Mutex::new(Some(Box::pin(stream)))))
    }

    pub(crate) fn take(&self) -> Option<Pin<Box<SseStream>>> {
        self.0.lock().take()
    }
}

/// Serves `router` on `listener` until the process ends, writing SSE streams straight to the
/// socket.
///
/// Every request runs through the same axum `Router` as under `axum::serve`, but once a
/// handler answers with an [`SseStream`](crate::SseStream) the connection keeps no buffers: its
/// frames go from the topic's log to the socket in one vectored write per wake-up (a few KiB
/// per idle connection instead of hyper's ~17 KiB, and about half the CPU per event).
///
/// It speaks HTTP/1.1 with keep-alive and pipelining, `Content-Length` request bodies up to
/// [`MAX_BODY`], `Expect: 100-continue`, `HEAD`, and HTTP/1.0 clients. It answers chunked
/// request bodies with `501`, request heads over [`MAX_HEAD`] with `431`, malformed requests
/// with `400`. Use `axum::serve` where you need HTTP/2, upgrades or streaming uploads.
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
pub async fn serve<L: Listener>(listener: L, router: Router) {
    serve_with_shutdown(listener, router, std::future::pending()).await;
}

/// Like [`serve`], until `signal` completes: then it stops accepting, lets every request in
/// progress finish, closes idle connections and returns once all are closed. Open SSE streams
/// end when their manager is shut down; call [`Manager::shutdown`](crate::Manager::shutdown)
/// in `signal`.
pub async fn serve_with_shutdown<L: Listener>(
    mut listener: L,
    router: Router,
    signal: impl Future<Output = ()> + Send,
) {
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => break,
            (io, _addr) = listener.accept() => {
                let (router, stop) = (router.clone(), stop.clone());
                connections.spawn(async move {
                    if let Err(error) = connection(io, router, stop).await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
            }
        }
    }
    stop.cancel();
    connections.close();
    connections.wait().await;
}

/// A request head, parsed.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

async fn connection<I>(mut io: I, router: Router, stop: CancellationToken) -> io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::new();
    loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled(), if buf.is_empty() => return Ok(()),
            next = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut io, &mut buf)) => next,
        };
        let (head, head_len) = match next {
            Err(_elapsed) => return Ok(()),
            Ok(result) => match result? {
                Ok(None) => return Ok(()),
                Ok(Some((head, len))) => (head, len),
                Err(status) => return refuse(&mut io, status).await,
            },
        };
        buf.advance(head_len);
        let body =
            match tokio::time::timeout(HEAD_TIMEOUT, read_body(&mut io, &mut buf, &head)).await {
                Err(_elapsed) => return Ok(()),
                Ok(result) => match result? {
                    Ok(body) => body,
                    Err(status) => return refuse(&mut io, status).await,
                },
            };
        let keep_alive = wants_keep_alive(&head);
        let is_head = head.method == Method::HEAD;
        let version = head.version;
        let mut request = Request::new(Body::from(body));
        *request.method_mut() = head.method;
        *request.uri_mut() = head.uri;
        *request.version_mut() = head.version;
        *request.headers_mut() = head.headers;
        let Ok::<_, Infallible>(mut response) = router.clone().oneshot(request).await;

        if let Some(stream) = response
            .extensions_mut()
            .remove::<Takeover>()
            .and_then(|t| t.take())
        {
            // From here on the connection belongs to the stream; buffers are released.
            drop(buf);
            return stream_sse(io, response, stream, version).await;
        }
        let close = !keep_alive || version == Version::HTTP_10 || closes(response.headers());
        write_response(&mut io, response, is_head, close, version).await?;
        if close {
            return io.shutdown().await;
        }
    }
}

/// Reads until `buf` holds a complete request head: the head and its length, `None` when the
/// client closed the connection between requests, `Err(status)` for a head to refuse.
async fn read_head<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
) -> io::Result<Result<Option<(Head, usize)>, StatusCode>> {
    loop {
        // Leading empty lines between pipelined requests are allowed (RFC 9112 2.2).
        while buf.starts_with(b"\r\n") {
            buf.advance(2);
        }
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    return Ok(parse_head(&request).map(|head| Some((head, len))));
                }
                Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                    return Ok(Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Ok(Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
                }
                Err(httparse::Error::Version) => {
                    return Ok(Err(StatusCode::HTTP_VERSION_NOT_SUPPORTED));
                }
                Err(_) => return Ok(Err(StatusCode::BAD_REQUEST)),
            }
        }
        buf.reserve(1024);
        if io.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(Ok(None))
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

fn parse_head(request: &httparse::Request<'_, '_>) -> Result<Head, StatusCode> {
    fn bad<E>(_: E) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
    let method = Method::from_bytes(request.method.ok_or(StatusCode::BAD_REQUEST)?.as_bytes())
        .map_err(bad)?;
    let uri: Uri = request
        .path
        .ok_or(StatusCode::BAD_REQUEST)?
        .parse()
        .map_err(bad)?;
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(StatusCode::HTTP_VERSION_NOT_SUPPORTED),
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

/// Reads the request body (Content-Length only). `Ok(Err(status))` for a body to refuse.
async fn read_body<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    head: &Head,
) -> io::Result<Result<Bytes, StatusCode>> {
    if head.headers.contains_key(header::TRANSFER_ENCODING) {
        return Ok(Err(StatusCode::NOT_IMPLEMENTED));
    }
    let mut lengths = head.headers.get_all(header::CONTENT_LENGTH).iter();
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => 0,
        (Some(value), None) => match value.to_str().ok().and_then(|v| v.parse::<usize>().ok()) {
            Some(length) => length,
            None => return Ok(Err(StatusCode::BAD_REQUEST)),
        },
        (Some(_), Some(_)) => return Ok(Err(StatusCode::BAD_REQUEST)),
    };
    if length > MAX_BODY {
        return Ok(Err(StatusCode::PAYLOAD_TOO_LARGE));
    }
    if length > buf.len()
        && head
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    while buf.len() < length {
        buf.reserve(length - buf.len());
        if io.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(Ok(buf.split_to(length).freeze()))
}

fn wants_keep_alive(head: &Head) -> bool {
    let connection = head
        .headers
        .get(header::CONNECTION)
        .map(HeaderValue::as_bytes);
    match head.version {
        Version::HTTP_10 => false,
        _ => !connection.is_some_and(|v| v.eq_ignore_ascii_case(b"close")),
    }
}

fn closes(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// Answers a request that cannot be served, and closes.
async fn refuse<I: AsyncWrite + Unpin>(io: &mut I, status: StatusCode) -> io::Result<()> {
    let reason = status.canonical_reason().unwrap_or("");
    let body = format!("{} {reason}\n", status.as_u16());
    let response = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        body.len()
    );
    io.write_all(response.as_bytes()).await?;
    io.shutdown().await
}

fn encode_head(response: &Response, framing: &[u8]) -> Vec<u8> {
    let status = response.status();
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in response.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(framing);
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
    let bodiless = is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let exact = response.body().size_hint().exact();
    let headers = response.headers_mut();
    headers.remove(header::TRANSFER_ENCODING);
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let chunked = match exact {
        _ if bodiless => false,
        Some(length) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            false
        }
        None => {
            headers.remove(header::CONTENT_LENGTH);
            version != Version::HTTP_10
        }
    };
    let framing: &[u8] = if chunked {
        b"transfer-encoding: chunked\r\n"
    } else {
        b""
    };
    io.write_all(&encode_head(&response, framing)).await?;
    if bodiless {
        return io.flush().await;
    }
    let mut body = response.into_body();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(data) = frame.map_err(io::Error::other)?.into_data() else {
            continue;
        };
        if chunked {
            write_chunk(io, data).await?;
        } else {
            io.write_all(&data).await?;
        }
    }
    if chunked {
        io.write_all(b"0\r\n\r\n").await?;
    }
    io.flush().await
}

/// One chunk of a chunked body: size line, data, CRLF, in one vectored write when possible.
async fn write_chunk<I: AsyncWrite + Unpin>(io: &mut I, data: Bytes) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut digits = [0u8; 16];
    let size = crate::event_id::hex(data.len() as u64, &mut digits);
    let mut parts = [
        IoSlice::new(size),
        IoSlice::new(b"\r\n"),
        IoSlice::new(&data),
        IoSlice::new(b"\r\n"),
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

/// Writes the SSE response head, then the stream's frames as they come, until the stream ends
/// or the client goes away.
async fn stream_sse<I: AsyncRead + AsyncWrite + Unpin>(
    mut io: I,
    response: Response,
    mut stream: Pin<Box<SseStream>>,
    version: Version,
) -> io::Result<()> {
    // HTTP/1.0 clients cannot decode chunks: their stream is delimited by the close.
    let chunked = version != Version::HTTP_10;
    let framing: &[u8] = if chunked {
        b"transfer-encoding: chunked\r\n"
    } else {
        b"connection: close\r\n"
    };
    io.write_all(&encode_head(&response, framing)).await?;
    drop(response);
    loop {
        enum Step {
            Data(Bytes),
            End,
            Hangup,
        }
        let step = poll_fn(|cx| {
            // A readable socket during a stream means the client closed it (or sent something
            // we do not expect); either way the stream is over once it reads as EOF.
            let mut probe = [0u8; 32];
            let mut probe = ReadBuf::new(&mut probe);
            match Pin::new(&mut io).poll_read(cx, &mut probe) {
                Poll::Ready(Ok(())) if probe.filled().is_empty() => {
                    return Poll::Ready(Step::Hangup);
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Step::Hangup),
                _ => {}
            }
            match stream.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(
                    frame
                        .into_data()
                        .map_or(Step::Data(Bytes::new()), Step::Data),
                ),
                Poll::Ready(None) => Poll::Ready(Step::End),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match step {
            Step::Data(data) if chunked => write_chunk(&mut io, data).await?,
            Step::Data(data) => io.write_all(&data).await?,
            Step::End => {
                if chunked {
                    io.write_all(b"0\r\n\r\n").await?;
                }
                return io.shutdown().await;
            }
            Step::Hangup => return Ok(()),
        }
    }
}
