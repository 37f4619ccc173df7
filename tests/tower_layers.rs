//! Body-level tower layers on SSE routes served by `sse_runtime::serve`.
//!
//! Spec: `serve` writes an SSE stream to the socket itself, not through the response body the
//! layers wrapped; but it keeps that body and ends it when the stream ends, so a body layer
//! sees the end: tower-http's `TraceLayer` calls `on_eos` once per stream, however the stream
//! ended (the server ended it, the client went away, the server shut down), and never
//! `on_failure`. A layer that encodes the body (it sets `Content-Encoding`) gets the stream
//! through its body: the client receives what the layer made of it.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::get;
use futures_util::StreamExt;
use sse_integration_tests::{PATIENCE, RawClient, SseClient, TestServer};
use sse_runtime::polling::Polling;
use sse_runtime::{Manager, PollError, SseHandler};
use tokio::sync::watch;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::TraceLayer;

/// How many streams `TraceLayer` saw end, and fail.
struct Seen {
    ends: watch::Receiver<usize>,
    failures: watch::Receiver<usize>,
}

impl Seen {
    async fn ends(&mut self, count: usize) {
        tokio::time::timeout(PATIENCE, self.ends.wait_for(|n| *n >= count))
            .await
            .expect("TraceLayer sees the stream end in time")
            .expect("the layer lives");
    }
}

/// `/sse/alarms` (a topic), `/sse/build` (a poller that stops after its first value and ends
/// its streams), both under one `TraceLayer` that counts ends and failures.
fn traced(manager: &Manager) -> (Router, Seen) {
    let (ends, ends_rx) = watch::channel(0usize);
    let (failures, failures_rx) = watch::channel(0usize);
    let build = SseHandler::new(manager).topic("build").polling(|_| {
        Polling::new(|_| async { Ok::<_, PollError>("done") })
            .stop_when(|_| true)
            .end_on_stop(true)
    });
    let app = Router::new()
        .route("/sse/alarms", get(SseHandler::new(manager).topic("alarms")))
        .route("/sse/build", get(build))
        .layer(
            TraceLayer::new_for_http()
                .on_eos(
                    move |_: Option<&http::HeaderMap>, _: Duration, _: &tracing::Span| {
                        ends.send_modify(|n| *n += 1);
                    },
                )
                .on_failure(
                    move |_: ServerErrorsFailureClass, _: Duration, _: &tracing::Span| {
                        failures.send_modify(|n| *n += 1);
                    },
                ),
        );
    let seen = Seen {
        ends: ends_rx,
        failures: failures_rx,
    };
    (app, seen)
}

#[tokio::test]
async fn trace_layer_sees_a_stream_the_server_ends() {
    let manager = Manager::new();
    let (app, mut seen) = traced(&manager);
    let server = TestServer::start_direct(app, Duration::from_secs(5)).await;
    let mut client = SseClient::connect(&server.url("/sse/build")).await;
    assert_eq!(client.event().await.data, "\"done\"");
    assert_eq!(client.event().await.event, "end");
    client.until_end().await;
    seen.ends(1).await;
    assert_eq!(*seen.failures.borrow(), 0);
}

#[tokio::test]
async fn trace_layer_sees_a_stream_whose_client_went_away() {
    let manager = Manager::new();
    let (app, mut seen) = traced(&manager);
    let server = TestServer::start_direct(app, Duration::from_secs(5)).await;
    let mut client = SseClient::connect(&server.url("/sse/alarms")).await;
    client.position().await;
    assert_eq!(*seen.ends.borrow(), 0, "the stream is open");
    drop(client);
    seen.ends(1).await;
    manager.wait_until(|s| s.subscribers == 0).await;
    assert_eq!(*seen.failures.borrow(), 0);
}

#[tokio::test]
async fn trace_layer_sees_every_stream_a_shutdown_ends() {
    let manager = Manager::new();
    let (app, mut seen) = traced(&manager);
    let server = TestServer::start_direct(app, Duration::from_secs(5)).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = SseClient::connect(&server.url("/sse/alarms")).await;
        client.position().await;
        clients.push(client);
    }
    server.stop().await;
    for client in &mut clients {
        client.until_end().await;
    }
    seen.ends(3).await;
    assert_eq!(*seen.ends.borrow(), 3, "once per stream");
    assert_eq!(*seen.failures.borrow(), 0);
}

/// A layer that encodes the body: upper-cases its bytes and says so in `Content-Encoding`.
async fn shout(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    parts.headers.insert(
        "content-encoding",
        http::HeaderValue::from_static("x-shout"),
    );
    let shouted = body
        .into_data_stream()
        .map(|chunk| chunk.map(|bytes| bytes.to_ascii_uppercase()));
    Response::from_parts(parts, Body::from_stream(shouted))
}

#[tokio::test]
async fn a_layer_that_encodes_the_body_encodes_the_stream() {
    let manager = Manager::new();
    let app = Router::new()
        .route(
            "/sse/alarms",
            get(SseHandler::new(&manager).topic("alarms")),
        )
        .layer(axum::middleware::map_response(shout));
    let server = TestServer::start_direct(app, Duration::from_secs(5)).await;
    let mut client = RawClient::get(server.addr, "/sse/alarms").await;
    assert_eq!(client.status(), 200);
    assert_eq!(client.header("content-encoding"), Some("x-shout"));
    manager.wait_until(|s| s.subscribers == 1).await;
    manager.publish("alarms", &"pump");
    let seen = client.read_until_contains(b"DATA: \"PUMP\"").await;
    assert!(
        !String::from_utf8_lossy(&seen).contains("data:"),
        "{seen:?}"
    );
    // The stream ends with the server, as any other: the shutdown reaches its manager.
    server.stop().await;
    assert!(manager.is_shut_down());
}
