//! Typed Server-Sent Events topic fan-out for axum/tokio.
//!
//! A [`Manager`] holds one broadcaster per topic. Clients subscribe over HTTP through
//! [`SseHandler`] (or [`Manager::subscribe`] plus [`SseStream`] in a handler of your own);
//! publishers push with [`Manager::publish`], or a [`Polling`] service fetches data on an
//! interval while the topic has subscribers.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use serde::Serialize;
//! use sse_runtime::{Manager, SseHandler, WriteDeadline};
//!
//! #[derive(Serialize)]
//! struct Alarm { device: String, level: u8 }
//!
//! # async fn run() -> std::io::Result<()> {
//! let manager = Manager::new();
//! let app = Router::new().route("/alarms", get(SseHandler::new(&manager).topic("alarms")));
//!
//! // Wherever an alarm fires: serialized once, shared by every subscriber, never blocks.
//! manager.publish("alarms", &Alarm { device: "pump-1".into(), level: 3 });
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! sse_runtime::serve(WriteDeadline::new(listener, manager.heartbeat()), app).await;
//! # Ok(())
//! # }
//! ```
//!
//! [`serve`] runs the `Router` on the framework's own HTTP/1.1 engine, which writes SSE streams
//! straight to the socket (a few KiB per idle connection instead of hyper's buffers) and times
//! out slow request heads; [`Server`] configures it, or runs the same `Router` on hyper.
//!
//! # How an event travels
//!
//! `publish` looks the topic up under a read lock (no subscribers: nothing else happens),
//! serializes the value once, and appends one encoded frame (`id:`, `event:`, `data:`) to the
//! topic's bounded log. Every subscriber is a cursor into that log; its connection copies out,
//! in one write, whatever it has not sent yet. A subscriber that falls too far behind is ended
//! and its browser resumes with `Last-Event-ID`; nobody else ever waits for it.

#![warn(missing_docs)]

mod config;
mod deadline;
mod event_id;
pub mod frame;
mod handler;
mod manager;
mod polling;
mod registry;
mod serve;
mod stats;
mod stream;
mod subscription;
mod topic;
mod typed;

pub use config::{
    ConfigError, DEFAULT_HEARTBEAT, DEFAULT_HISTORY_BYTES, DEFAULT_HISTORY_EVENTS,
    DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_LAG_BYTES, DEFAULT_MAX_LAG_EVENTS, DEFAULT_RETENTION,
    DEFAULT_RETRY, ManagerBuilder,
};
pub use deadline::{DeadlineIo, WriteDeadline};
pub use event_id::{EventId, MalformedEventId};
pub use handler::{
    LAST_EVENT_ID_QUERY, MAX_TOPIC_LEN, RequestTopic, SseHandler, topic_of, topic_of_uri,
};
pub use manager::Manager;
pub use polling::{
    DEFAULT_API_VERSION, DEFAULT_INTERVAL, PollError, Polling, PollingService, Publisher,
    StopFuture, TopicPublisher,
};
pub use registry::{
    RegistrationError, RouteInfo, registered_routes, router, router_with, try_router_with,
};
pub use serve::{
    DEFAULT_HEAD_TIMEOUT, MAX_BODY, MAX_HEAD, MAX_PENDING_BODIES, Server, serve,
    serve_with_shutdown,
};
pub use sse_macros::{sse_poll, sse_topic};
pub use stats::{Stats, TopicStats};
pub use stream::SseStream;
pub use subscription::{EndReason, SubscribeError, SubscribeOptions, Subscription};
pub use tokio_util::sync::CancellationToken;
pub use typed::SseTopic;

/// What generated code needs, and nothing else. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private;
