//! Request bodies, streamed to the handler as it reads them.
//!
//! Nothing of a body is read before a handler asks for it (hyper's rule): a 404, or an SSE
//! `GET` that declares a body, costs no memory for it. When the handler first polls the body,
//! the connection answers `Expect: 100-continue`, reserves the body's size from a budget shared
//! by every connection of the server, and then hands over the bytes one read at a time.
//! The budget bounds what all pending bodies hold together: when it is spent, the next body
//! waits for a reservation (at most the body timeout) instead of piling up in memory.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Most bytes handed to the handler in one chunk.
const CHUNK: usize = 16 * 1024;

/// The budget is counted in units of this many bytes (a semaphore has `u32` permits).
const UNIT: usize = 1024;

/// Why a body could not be delivered in full; the handler's read fails with it.
#[derive(Debug)]
pub(super) struct BodyError(&'static str);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BodyError {}

/// Bytes of request bodies that all connections of one server may hold at once.
#[derive(Clone)]
pub(super) struct Budget(Arc<Semaphore>);

impl Budget {
    pub(super) fn new(bytes: usize) -> Self {
        Self(Arc::new(Semaphore::new((bytes / UNIT).max(1))))
    }

    /// Reserves room for a body of `length` bytes, waiting at most `patience`.
    async fn reserve(&self, length: u64, patience: Duration) -> Option<OwnedSemaphorePermit> {
        let units = length.div_ceil(UNIT as u64).max(1);
        let units = u32::try_from(units).ok()?;
        tokio::time::timeout(patience, self.0.clone().acquire_many_owned(units))
            .await
            .ok()?
            .ok()
    }
}

/// The connection's side of one request body.
pub(super) struct Feed {
    remaining: u64,
    shared: Arc<Shared>,
    chunks: mpsc::Sender<Result<Bytes, BodyError>>,
    expect_continue: bool,
    /// Held from the handler's first read until the request is answered.
    pub(super) permit: Option<OwnedSemaphorePermit>,
}

struct Shared {
    /// Set when the handler first polls the body.
    wanted: AtomicBool,
    /// The connection, waiting for `wanted`.
    connection: AtomicWaker,
}

/// The handler's side: an [`http_body::Body`] fed by the connection.
pub(super) struct RequestBody {
    length: u64,
    shared: Arc<Shared>,
    chunks: mpsc::Receiver<Result<Bytes, BodyError>>,
}

/// A body of `length` bytes, and the feed that delivers it. `expect_continue`: answer
/// `100 Continue` before reading, if the bytes are not already here.
pub(super) fn channel(length: u64, expect_continue: bool) -> (Feed, RequestBody) {
    let shared = Arc::new(Shared {
        wanted: AtomicBool::new(false),
        connection: AtomicWaker::new(),
    });
    let (sender, receiver) = mpsc::channel(1);
    (
        Feed {
            remaining: length,
            shared: shared.clone(),
            chunks: sender,
            expect_continue,
            permit: None,
        },
        RequestBody {
            length,
            shared,
            chunks: receiver,
        },
    )
}

impl Feed {
    /// Delivers the body once the handler asks for it: waits for the first read, answers
    /// `Expect: 100-continue`, reserves the body's size from `budget`, then moves bytes from
    /// `buf` and `io` to the handler as it takes them. Returns once all is delivered; an error
    /// (timeout, early close, no budget) is also handed to the handler, and the connection
    /// must not be reused.
    pub(super) async fn deliver<I: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut I,
        buf: &mut BytesMut,
        budget: &Budget,
        patience: Duration,
    ) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            self.shared.connection.register(cx.waker());
            if self.shared.wanted.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        match budget.reserve(self.remaining, patience).await {
            Some(permit) => self.permit = Some(permit),
            None => {
                return self
                    .fail("the server is short of memory for request bodies")
                    .await;
            }
        }
        if self.expect_continue && (buf.len() as u64) < self.remaining {
            io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        while self.remaining > 0 {
            if buf.is_empty() {
                buf.reserve(CHUNK.min(self.remaining as usize));
                match tokio::time::timeout(patience, io.read_buf(buf)).await {
                    Ok(Ok(0)) => return self.fail("the client closed during the body").await,
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        self.fail("the connection failed during the body").await?;
                        return Err(error);
                    }
                    Err(_elapsed) => return self.fail("the body timed out").await,
                }
            }
            let take = buf.len().min(CHUNK).min(self.remaining as usize);
            let chunk = buf.split_to(take).freeze();
            self.remaining -= take as u64;
            if self.chunks.send(Ok(chunk)).await.is_err() {
                // The handler dropped the body; what is left is discarded or the connection closed.
                return Ok(());
            }
        }
        Ok(())
    }

    async fn fail(&mut self, why: &'static str) -> io::Result<()> {
        let _ = self.chunks.send(Err(BodyError(why))).await;
        Err(io::Error::other(why))
    }

    /// After the response: drops what is already buffered of an unread body. `true` when the
    /// body is then complete and the connection can take the next request.
    pub(super) fn discard_buffered(&mut self, buf: &mut BytesMut) -> bool {
        let here = (buf.len() as u64).min(self.remaining);
        buf.advance(here as usize);
        self.remaining -= here;
        self.remaining == 0
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.length == 0 {
            return Poll::Ready(None);
        }
        if !self.shared.wanted.swap(true, Ordering::AcqRel) {
            self.shared.connection.wake();
        }
        match self.chunks.poll_recv(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.length -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(error))) => {
                self.length = 0;
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => Poll::Ready(Some(Err(BodyError(
                "the request was answered before its body was read",
            )))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.length == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.length)
    }
}
