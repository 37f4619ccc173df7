//! The baseline for the benchmarks: the same protocol as `bench-server`, written the way a Rust
//! developer would without the framework: axum's `Sse` with `KeepAlive`, one
//! `tokio::sync::broadcast` channel per topic in a locked map, the payload serialized once per
//! publish.
//!
//! Its connections set `TCP_NODELAY` (axum's `tap_io`, as axum's documentation shows), as the
//! framework's and the ceiling's do: the comparison is not about one socket option.
//!
//! - `GET /sse/{topic}`, `POST /publish/{topic}` (JSON body, 204), `GET /stats`.
//! - `PORT` (default 8080, 127.0.0.1), `HEARTBEAT_MS` (default 30000), `BACKLOG` (the accept
//!   queue; default tokio's 128). Exits on SIGTERM/SIGINT.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

/// Capacity of each topic's channel; a receiver that falls further behind skips ahead.
const CAPACITY: usize = 1024;

#[derive(Clone, Default)]
struct Hub {
    topics: Arc<Mutex<HashMap<String, broadcast::Sender<Arc<str>>>>>,
    subscribers: Arc<AtomicUsize>,
    heartbeat: Duration,
}

/// Decrements the subscriber count and drops an empty topic when a stream ends.
struct Leave {
    hub: Hub,
    topic: String,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Ordering::Relaxed);
        let mut topics = self.hub.topics.lock();
        if topics
            .get(&self.topic)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            topics.remove(&self.topic);
        }
    }
}

async fn subscribe(
    State(hub): State<Hub>,
    Path(topic): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = hub
        .topics
        .lock()
        .entry(topic.clone())
        .or_insert_with(|| broadcast::channel(CAPACITY).0)
        .subscribe();
    hub.subscribers.fetch_add(1, Ordering::Relaxed);
    let leave = Leave {
        hub: hub.clone(),
        topic,
    };
    let stream = BroadcastStream::new(receiver).filter_map(move |message| {
        let _keep = &leave;
        std::future::ready(message.ok().map(|data| Ok(Event::default().data(&*data))))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(hub.heartbeat))
}

async fn publish(
    State(hub): State<Hub>,
    Path(topic): Path<String>,
    Json(value): Json<serde_json::Value>,
) -> StatusCode {
    if let Some(sender) = hub.topics.lock().get(&topic) {
        let data: Arc<str> = serde_json::to_string(&value).expect("JSON value").into();
        let _ = sender.send(data);
    }
    StatusCode::NO_CONTENT
}

async fn stats(State(hub): State<Hub>) -> Json<serde_json::Value> {
    let topics = hub.topics.lock().len();
    Json(
        serde_json::json!({ "topics": topics, "subscribers": hub.subscribers.load(Ordering::Relaxed) }),
    )
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().expect("a non-negative integer"))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let hub = Hub {
        heartbeat: Duration::from_millis(env_number("HEARTBEAT_MS", 30_000)),
        ..Hub::default()
    };
    let app = Router::new()
        .route("/sse/{topic}", get(subscribe))
        .route("/publish/{topic}", post(publish))
        .route("/stats", get(stats))
        .with_state(hub);
    let port = env_number("PORT", 8080) as u16;
    // As axum's examples bind (tokio's accept queue of 128); `BACKLOG` sets another, to see
    // what the queue alone changes in a reconnect wave.
    let listener = match std::env::var("BACKLOG") {
        Err(_) => tokio::net::TcpListener::bind(("127.0.0.1", port)).await?,
        Ok(backlog) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(([127, 0, 0, 1], port).into())?;
            socket.listen(backlog.parse().expect("BACKLOG: a number"))?
        }
    };
    println!(
        "baseline-server listening on http://{}",
        listener.local_addr()?
    );
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await
}
