//! The SSE writer: once a handler answers with an [`SseStream`], it owns the connection and
//! writes the stream's frames from the topic's log to the socket, through a buffer each worker
//! thread reuses. The response's body, which the stream left, is kept and ended with the
//! stream, so that body-level layers (tower-http's `TraceLayer`) see the stream's end.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::FutureExt;
use http::Version;
use http::header::{self, HeaderValue};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::response::{Framing, encode_head};
use crate::stream::SseStream;

/// The head of an SSE response, how its body is delimited, and the body the stream was taken
/// out of, as the layers left it.
pub(super) fn sse_head(mut response: Response, version: Version) -> (Vec<u8>, Framing, Body) {
    let framing = Framing::unknown_length(version);
    if framing == Framing::Close {
        let close = HeaderValue::from_static("close");
        response.headers_mut().insert(header::CONNECTION, close);
    }
    let body = std::mem::take(response.body_mut());
    (encode_head(&response, framing), framing, body)
}

/// The body an SSE stream was taken out of, ended when the stream's task ends (or is
/// dropped): it is polled until it ends. The stream's own body, whose stream is gone, ends at
/// once; a layer's body around it sees that end and does what it does at the end of a body
/// (tower-http's `TraceLayer` calls `on_eos` with the stream's duration). Whatever a layer
/// would still send is dropped, and a body that is not ready at once is not waited for: the
/// stream is over. (A guard rather than a wrapping future: the task is the size of its
/// largest state, and a second future around the writer would hold the socket twice.)
struct EndBody(Body);

impl Drop for EndBody {
    fn drop(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..16 {
            match Pin::new(&mut self.0).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(None | Some(Err(_))) | Poll::Pending => return,
            }
        }
    }
}

/// The task an open stream runs as: [`stream_sse`], its error logged. Not an `async` block
/// around it: a block keeps what it captured beside the future it awaits (the socket, body
/// and head twice). With that and `stream_sse`'s own copy of its arguments gone, the task is
/// 256 bytes and takes tokio's 384-byte task cell instead of the 640-byte one (the unit test
/// below holds it there).
pub(super) fn stream_task<I: AsyncRead + AsyncWrite + Unpin>(
    io: I,
    head: Vec<u8>,
    stream: Pin<Box<SseStream>>,
    framing: Framing,
    body: Body,
) -> impl Future<Output = ()> {
    stream_sse(io, head, stream, framing, body).map(|result| {
        if let Err(error) = result {
            tracing::debug!(%error, "stream ended with an error");
        }
    })
}

/// Writes the SSE response head, then the stream's frames as they come, until the stream ends
/// or the client goes away.
///
/// It runs as a task of its own, which every open stream keeps for as long as it is open: it
/// takes the encoded head rather than the response, since whatever an async fn takes stays in
/// its future to the end.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
pub(super) fn stream_sse<I: AsyncRead + AsyncWrite + Unpin>(
    mut io: I,
    head: Vec<u8>,
    mut stream: Pin<Box<SseStream>>,
    framing: Framing,
    body: Body,
) -> impl Future<Output = io::Result<()>> {
    // A block, not an `async fn`: an `async fn` keeps its arguments twice in its future, as
    // taken and as moved into its body (rust-lang/rust#62958), and every open stream keeps
    // this future: twice the socket (1 248 bytes over TLS), the body, the head.
    async move {
        let _end_body = EndBody(body);
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
                // discarded, and the stream is over once the socket reads as EOF. Reading until
                // it is pending registers the waker, so the EOF behind discarded bytes is seen
                // at once; a client that keeps sending gets 64 KiB discarded per turn, then
                // yields.
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
                        Poll::Ready(Ok(n)) => {
                            Step::Rest(Bytes::copy_from_slice(&scratch[start + n..]))
                        }
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
}

thread_local! {
    /// Where a worker thread assembles what a stream writes next (the chunk's size line, its
    /// frames, the closing CRLF): reused by every stream the thread runs.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Room kept at the front of the scratch buffer for a chunk's size line (hex digits, CRLF).
pub(super) const SIZE_LINE: usize = 16 + 2;

/// A scratch buffer grown past this (by an event this large) is released after its write.
pub(super) const MAX_SCRATCH: usize = 1024 * 1024;

/// Frames the data after the first [`SIZE_LINE`] bytes of `scratch` as `framing` delimits it
/// (for `Chunked`, one chunk: its size line goes right before the data, its CRLF after); where
/// the bytes to write start.
pub(super) fn frame_chunk(scratch: &mut Vec<u8>, framing: Framing) -> usize {
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
    use std::time::Duration;

    use axum::response::IntoResponse;

    use super::*;

    /// The scratch buffer as a stream leaves it: room for the size line, then its frames.
    fn scratch(frames: &[u8]) -> Vec<u8> {
        let mut scratch = vec![0; SIZE_LINE];
        scratch.extend_from_slice(frames);
        scratch
    }

    #[test]
    fn chunked_frames_become_one_chunk_with_its_size_line_right_before_them() {
        let mut buf = scratch(b"id: 7\ndata: x\n\n");
        let start = frame_chunk(&mut buf, Framing::Chunked);
        assert_eq!(&buf[start..], b"f\r\nid: 7\ndata: x\n\n\r\n");
        let mut large = scratch(&[b'a'; 0x1_2345]);
        let start = frame_chunk(&mut large, Framing::Chunked);
        assert!(large[start..].starts_with(b"12345\r\naaa"));
        assert!(large.ends_with(b"aaa\r\n"));
    }

    #[test]
    fn frames_delimited_by_the_close_are_written_as_they_are() {
        let mut buf = scratch(b"data: x\n\n");
        let start = frame_chunk(&mut buf, Framing::Close);
        assert_eq!(&buf[start..], b"data: x\n\n");
    }

    #[tokio::test]
    async fn an_http10_stream_says_it_ends_with_the_close_and_an_http11_one_is_chunked() {
        let manager = crate::Manager::new();
        let response = || SseStream::from(manager.subscribe("t").unwrap()).into_response();
        let (head, framing, _) = sse_head(response(), Version::HTTP_10);
        let head = String::from_utf8(head).unwrap();
        assert_eq!(framing, Framing::Close);
        assert!(
            head.contains("\r\nconnection: close\r\n") && !head.contains("chunked"),
            "{head}"
        );
        let (head, framing, _) = sse_head(response(), Version::HTTP_11);
        let head = String::from_utf8(head).unwrap();
        assert_eq!(framing, Framing::Chunked);
        assert!(
            head.contains("\r\ntransfer-encoding: chunked\r\n") && !head.contains("close"),
            "{head}"
        );
        assert!(
            head.contains("\r\ncontent-type: text/event-stream\r\n"),
            "{head}"
        );
    }

    /// Every open stream keeps its task for as long as it is open, so the task's size is a
    /// floor of the memory per connection: it must hold the stream's state alone, not the
    /// request's (the router's future, the head), which once made it 2.2 KiB. tokio allocates
    /// a task in a cell aligned to 128 bytes, with about 110 bytes of its own (header,
    /// scheduler, id, the tracker's token, trailer): a future of up to 272 bytes takes a
    /// 384-byte cell, up to 400 a 512-byte one, 424 a 640-byte one (measured with tokio 1.54).
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
        let (head, framing, body) = sse_head(stream.into_response(), Version::HTTP_11);
        let stream = Box::pin(SseStream::from(manager.subscribe("t").unwrap()));
        let task = stream_task(io, head, stream, framing, body);
        assert!(
            size(&task) <= 272,
            "a stream's task is {} bytes",
            size(&task)
        );
    }
}
