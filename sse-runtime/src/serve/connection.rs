//! One HTTP/1.1 connection on the framework's engine: read a head, run the router while the
//! body is delivered on demand, write the response; until the client closes, a refusal, or an
//! SSE stream, which then owns the connection in a task of its own.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use bytes::{Buf, BytesMut};
use http::header;
use http::{Method, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::body::{self, Budget};
use super::head::{Head, Incoming, body_length, has_token, read_head, refuse, wants_keep_alive};
use super::response::write_response;
use super::writer::{sse_head, stream_task};
use crate::stream::{Served, SseStream, Takeover};
use crate::subscription::ManagerHandle;

/// What a connection does after answering a request.
pub(super) enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close: the answer said so, or the request's end cannot be trusted.
    Close,
    /// The handler answered with an SSE stream: the connection is the stream's from now on.
    Stream(Response, Pin<Box<SseStream>>),
    /// An SSE stream whose body a layer encodes (`Content-Encoding`): written through its
    /// body, as any server would, then closed. The stream's manager, if it is still there.
    Encoded(Response, Option<ManagerHandle>),
}

/// Where a connection's SSE streams go: a task of their own, tracked so that the server's
/// shutdown waits for it, and their manager noted, so that the shutdown ends them.
pub(super) struct Streams {
    pub(super) tasks: TaskTracker,
    pub(super) served: Served,
}

#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
pub(super) fn connection<I, A>(
    mut io: I,
    peer: A,
    router: Router,
    stop: CancellationToken,
    budget: Budget,
    head_timeout: Duration,
    streams: Streams,
) -> impl Future<Output = io::Result<()>> + Send
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Clone + Send + Sync + 'static,
{
    // A block, not an `async fn`, which would keep its arguments twice (rust-lang/rust#62958).
    async move {
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
                    let (head, framing, body) = sse_head(response, version);
                    // From here on the connection belongs to the stream, in a task of its own sized
                    // for the stream alone (this one, sized for requests, ends: 1.4 KiB less for
                    // every open stream). Tracked like the connection, so shutdown waits for it.
                    streams
                        .tasks
                        .spawn(stream_task(io, head, stream, framing, body));
                    return Ok(());
                }
                Next::Encoded(response, manager) => {
                    if let Some(manager) = manager {
                        streams.served.note(manager);
                    }
                    write_response(&mut io, response, false, true, version).await?;
                    return io.shutdown().await;
                }
            }
        }
    }
}

/// Answers one request whose head was read (and taken out of `buf`): runs the router while
/// the body is delivered on demand, then writes the response, or hands an SSE stream back.
pub(super) async fn answer<I, A>(
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

    if let Some(takeover) = response.extensions_mut().remove::<Takeover>()
        && !is_head
    {
        // A layer that encodes the body (a compression layer whose predicate takes event
        // streams) must see the bytes it encodes: the stream is left in its body.
        if response.headers().contains_key(header::CONTENT_ENCODING) {
            return Ok(Next::Encoded(response, takeover.manager()));
        }
        if let Some(stream) = takeover.take() {
            return Ok(Next::Stream(response, stream));
        }
    }
    // `keep_alive` is already false for HTTP/1.0 requests.
    let close = !keep_alive || !body_done || has_token(response.headers(), "close");
    write_response(io, response, is_head, close, version).await?;
    drop(feed); // releases the body's share of the budget
    Ok(if close { Next::Close } else { Next::KeepAlive })
}
