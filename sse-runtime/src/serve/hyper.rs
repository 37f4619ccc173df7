//! The hyper engine of [`Server`](super::Server): hyper's HTTP/1.1 with its header read timeout
//! switched on (it needs a timer, which `axum::serve` never gives it), and, over TLS, hyper's
//! HTTP/2 for every connection that negotiated `h2`.

use std::io;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::stream::{Served, Takeover};

pub(super) async fn connection<I, A>(
    io: I,
    peer: A,
    router: Router,
    stop: CancellationToken,
    head_timeout: Duration,
    served: Served,
) -> io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Clone + Send + Sync + 'static,
{
    let service = TowerToHyperService::new(
        router
            .map_request(move |request: http::Request<Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(peer.clone()));
                request
            })
            .map_response(move |response: axum::response::Response| {
                note_stream(&served, &response);
                response
            }),
    );
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    result.map_err(io::Error::other)
}

/// Notes the manager of a stream the response carries, for the server's graceful shutdown.
fn note_stream(served: &Served, response: &axum::response::Response) {
    if let Some(manager) = response
        .extensions()
        .get::<Takeover>()
        .and_then(Takeover::manager)
    {
        served.note(manager);
    }
}

#[cfg(feature = "tls")]
pub(super) use h2::connection as h2_connection;

#[cfg(feature = "tls")]
mod h2 {
    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use bytes::Bytes;
    use http_body::{Frame, SizeHint};
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use pin_project_lite::pin_project;
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio::sync::Notify;
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    use crate::stream::Served;

    /// An HTTP/2 connection: every request a stream of its own, all through `router`.
    ///
    /// HTTP/2 has no request head to time out; what the head timeout guards against on
    /// HTTP/1.1 (a connection held open doing nothing) is a connection with no request open
    /// here: one that has had none for the head timeout, its first included, is closed
    /// (gracefully: a `GOAWAY`, then the close).
    pub(crate) async fn connection<I, A>(
        io: I,
        peer: A,
        router: Router,
        stop: CancellationToken,
        head_timeout: Duration,
        served: Served,
    ) -> io::Result<()>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        A: Clone + Send + Sync + 'static,
    {
        let activity = Arc::new(Activity::default());
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            // Counted from the moment the request arrives to the moment its response body is
            // dropped (sent in full, or the stream reset), the handler's time included.
            let open = Open::new(requests.clone());
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer.clone()));
            let (router, served) = (router.clone(), served.clone());
            async move {
                let response = router.oneshot(request).await?;
                super::note_stream(&served, &response);
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| Body::new(Counted { body, _open: open })),
                )
            }
        });
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => return result.map_err(io::Error::other),
            () = stop.cancelled() => {}
            () = activity.idle_for(head_timeout) => {}
        }
        // `GOAWAY`, then the requests in progress finish. hyper closes once the client has
        // answered the `PING` that follows the `GOAWAY`: a client that does not answer (gone,
        // or never an HTTP/2 client) is dropped once no request of its is open.
        connection.as_mut().graceful_shutdown();
        tokio::select! {
            result = connection.as_mut() => result.map_err(io::Error::other),
            () = activity.idle_for(GOAWAY_GRACE) => Ok(()),
        }
    }

    /// How long a connection told to go away, with no request open, has to close by itself.
    const GOAWAY_GRACE: Duration = Duration::from_secs(1);

    /// The requests open on one connection.
    #[derive(Default)]
    struct Activity {
        open: AtomicUsize,
        /// Requests ever opened: tells an idle spell from two with a request in between.
        opened: AtomicU64,
        changed: Notify,
    }

    impl Activity {
        /// Completes once no request has been open for `timeout` in a row.
        async fn idle_for(&self, timeout: Duration) {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                // Registered before the counts are read: a change after the read wakes it.
                changed.as_mut().enable();
                if self.open.load(Ordering::Acquire) > 0 {
                    changed.await;
                    continue;
                }
                let opened = self.opened.load(Ordering::Acquire);
                tokio::select! {
                    () = tokio::time::sleep(timeout) => {
                        if self.open.load(Ordering::Acquire) == 0
                            && self.opened.load(Ordering::Acquire) == opened
                        {
                            return;
                        }
                    }
                    () = changed => {}
                }
            }
        }
    }

    /// One open request; dropping it closes it.
    struct Open(Arc<Activity>);

    impl Open {
        fn new(activity: Arc<Activity>) -> Self {
            activity.opened.fetch_add(1, Ordering::AcqRel);
            activity.open.fetch_add(1, Ordering::AcqRel);
            activity.changed.notify_waiters();
            Self(activity)
        }
    }

    impl Drop for Open {
        fn drop(&mut self) {
            self.0.open.fetch_sub(1, Ordering::AcqRel);
            self.0.changed.notify_waiters();
        }
    }

    pin_project! {
        /// A response body that keeps its request open until it is dropped.
        struct Counted {
            #[pin]
            body: Body,
            _open: Open,
        }
    }

    impl http_body::Body for Counted {
        type Data = Bytes;
        type Error = axum::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
            self.project().body.poll_frame(cx)
        }

        fn is_end_stream(&self) -> bool {
            self.body.is_end_stream()
        }

        fn size_hint(&self) -> SizeHint {
            self.body.size_hint()
        }
    }
}
