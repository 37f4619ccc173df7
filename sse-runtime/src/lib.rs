//! Typed Server-Sent Events topic fan-out for axum/tokio.
//!
//! A [`Manager`] holds one broadcaster per topic. Clients subscribe over HTTP through
//! [`SseHandler`] (or [`Manager::subscribe`] plus [`SseStream`] in a handler of your own);
//! publishers push with [`Manager::publish`], or a [`Polling`](polling::Polling) service
//! fetches data on an interval while the topic has subscribers. The attribute macros
//! [`sse_topic`] and [`sse_poll`] generate all of that from a type or an async fn, and
//! [`router`] mounts what they registered.
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
//! let listener = sse_runtime::serve::bind("127.0.0.1:8080").await?;
//! sse_runtime::serve(WriteDeadline::new(listener, manager.heartbeat()), app).await;
//! # Ok(())
//! # }
//! ```
//!
//! [`serve()`] runs the `Router` on the framework's own HTTP/1.1 engine, which writes SSE
//! streams straight to the socket (a few KiB per idle connection instead of hyper's buffers)
//! and times out slow request heads; [`Server`] configures it, or runs the same `Router` on
//! hyper.
//!
//! # Where things are
//!
//! The root has what every user touches. The modules group the rest: [`config`] (defaults and
//! [`ConfigError`](config::ConfigError)), [`manager`] ([`ManagerBuilder`](manager::ManagerBuilder)),
//! [`subscription`] (options, how a subscription joined, why it ended), [`polling`] (pollers
//! and the producer contract), [`handler`] (topics derived from requests), [`multi`] (several
//! topics on one connection), [`client_addr`] (the client's address behind reverse proxies),
//! [`routes`] (the
//! registry the macros fill), [`serve`](mod@serve) (limits of the HTTP engine), [`frame`]
//! (the wire encoding, for handlers of your own), [`event_id`] and [`stats`].
//!
//! # How an event travels
//!
//! `publish` looks the topic up under a read lock (no subscribers and no retained history:
//! nothing else happens), serializes the value once, and appends one encoded frame (`id:`,
//! `event:`, `data:`) to the topic's bounded log. Every subscriber is a cursor into that log;
//! its connection copies out, in one write, whatever it has not sent yet. A subscriber that
//! falls too far behind is ended and its browser resumes with `Last-Event-ID`; nobody else
//! ever waits for it. `docs/ARCHITECTURE.md` in the repository draws the layers and states
//! the locking invariants.

// On docs.rs, items behind a cargo feature carry a badge naming it.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod backplane;
mod broker_error;
pub mod client_addr;
pub mod config;
#[cfg(feature = "schema")]
#[cfg_attr(docsrs, doc(cfg(feature = "schema")))]
pub mod contract;
pub mod deadline;
pub mod event_id;
pub mod frame;
pub mod guard;
pub mod handler;
mod hub;
mod log;
pub mod manager;
pub mod multi;
mod multiplex;
pub mod polling;
mod producer;
pub mod publish;
mod query_keys;
mod refusal;
mod remote;
pub mod routes;
pub mod serve;
pub mod stats;
mod stream;
pub mod subscription;
pub mod telemetry;
mod topic;
mod typed;

pub use client_addr::ClientAddr;
pub use deadline::WriteDeadline;
pub use handler::SseHandler;
pub use manager::Manager;
pub use producer::PollError;
pub use routes::router;
pub use serve::{Server, serve, serve_with_shutdown};
pub use sse_macros::{sse_poll, sse_topic};
pub use stream::SseStream;
pub use tokio_util::sync::CancellationToken;
pub use typed::SseTopic;

/// The `schemars` the `schema` feature uses, for `#[schemars(crate = "sse_runtime::schemars")]`
/// in a crate that does not depend on it.
#[cfg(feature = "schema")]
#[cfg_attr(docsrs, doc(cfg(feature = "schema")))]
pub use schemars;

/// What generated code needs, and nothing else. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private;
