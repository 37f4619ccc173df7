//! The hyper engine of [`Server`](super::Server): hyper's HTTP/1.1 with its header read timeout
//! switched on (it needs a timer, which `axum::serve` never gives it).

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
                // A stream's manager, for the server's graceful shutdown.
                if let Some(manager) = response
                    .extensions()
                    .get::<Takeover>()
                    .and_then(Takeover::manager)
                {
                    served.note(manager);
                }
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
