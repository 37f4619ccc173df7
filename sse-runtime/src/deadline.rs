//! Write deadlines: a connection whose writes make no progress for too long is closed.
//!
//! hyper has no write timeout: a response write to a client that stopped reading waits until the
//! kernel gives up on the TCP connection, which takes many minutes. The broadcaster never waits
//! for such a client (it only falls behind and is ended when next polled), but its socket, its
//! buffers and its place in the subscriber count linger. Wrapping the listener closes it after
//! the deadline instead.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A [`Listener`] whose connections fail a write that makes no progress within `deadline`.
///
/// Give it the manager's heartbeat interval: a healthy idle stream writes a heartbeat at
/// least that often, so only a stalled client trips it.
///
/// ```no_run
/// use sse_runtime::{Manager, WriteDeadline};
///
/// # async fn run() -> std::io::Result<()> {
/// let manager = Manager::new();
/// let app = axum::Router::new();
/// let listener = sse_runtime::serve::bind("127.0.0.1:8080").await?;
/// sse_runtime::serve(WriteDeadline::new(listener, manager.heartbeat()), app).await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct WriteDeadline<L> {
    listener: L,
    deadline: Duration,
}

impl<L> WriteDeadline<L> {
    /// Wraps `listener`.
    pub fn new(listener: L, deadline: Duration) -> Self {
        Self { listener, deadline }
    }
}

impl<L: Listener> Listener for WriteDeadline<L> {
    type Io = DeadlineIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.listener.accept().await;
        (DeadlineIo::new(io, self.deadline), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

pin_project! {
    /// An I/O object whose pending writes fail with [`io::ErrorKind::TimedOut`] after making no
    /// progress for the deadline.
    #[derive(Debug)]
    pub struct DeadlineIo<I> {
        #[pin]
        io: I,
        deadline: Duration,
        // Allocated on the first write that has to wait; most connections never need it.
        timer: Option<Pin<Box<Sleep>>>,
        armed: bool,
    }
}

impl<I> DeadlineIo<I> {
    /// Wraps `io`.
    pub fn new(io: I, deadline: Duration) -> Self {
        Self {
            io,
            deadline,
            timer: None,
            armed: false,
        }
    }

    /// The wrapped I/O object.
    pub fn get_ref(&self) -> &I {
        &self.io
    }
}

/// Runs one write-side operation under the deadline.
fn guarded<T>(
    deadline: Duration,
    timer: &mut Option<Pin<Box<Sleep>>>,
    armed: &mut bool,
    cx: &mut Context<'_>,
    result: Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    if result.is_ready() {
        *armed = false;
        return result;
    }
    if !*armed {
        *armed = true;
        let until = Instant::now() + deadline;
        match timer {
            Some(timer) => timer.as_mut().reset(until),
            None => *timer = Some(Box::pin(tokio::time::sleep_until(until))),
        }
    }
    let timer = timer.as_mut().expect("armed above");
    match timer.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("write made no progress for {deadline:?}"),
        ))),
        Poll::Pending => Poll::Pending,
    }
}

impl<I: AsyncRead> AsyncRead for DeadlineIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for DeadlineIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.io.poll_write(cx, buf);
        guarded(*this.deadline, this.timer, this.armed, cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.io.poll_write_vectored(cx, bufs);
        guarded(*this.deadline, this.timer, this.armed, cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let result = this.io.poll_flush(cx);
        guarded(*this.deadline, this.timer, this.armed, cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let result = this.io.poll_shutdown(cx);
        guarded(*this.deadline, this.timer, this.armed, cx, result)
    }
}
