//! A build-status service, as a first app is written: handlers with the application's own
//! `State`, a pushed topic, a polled one that ends when the build is done, every route of the
//! macros in [`sse_runtime::router`] with tower-http layers around it, and a clean stop on
//! SIGTERM (`main.rs`).
//!
//! - `POST /builds` starts a build; `POST /builds/{id}/log` adds a line to its log, which is
//!   pushed to `/sse/build-log` as a `line` event; `POST /builds/{id}/finish` ends it, and
//!   `POST /builds/{id}/rerun` runs it again.
//! - `GET /sse/builds/{id}` is polled while somebody watches: a `build` event whenever the
//!   build changes, until it is done; then the streams end with an `end` event (a browser's
//!   `EventSource` closes on it), so a finished build holds no connection.
//!
//! How state reaches each part: the handlers take `State<AppState>`, given once with
//! `with_state` on the router that [`sse_runtime::router`] returns (it is a `Router<S>` for any
//! `S`). The pollers are registered by the macros for the whole binary, so they take the same
//! data as an `Extension`, added by one layer.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let listener = sse_runtime::serve::bind("127.0.0.1:3002").await?;
//! sse_runtime::serve(listener, builds::app(builds::Builds::default())).await;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sse_runtime::{Manager, PollError, sse_poll, sse_topic};
use tower_http::cors::CorsLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnEos, DefaultOnResponse, TraceLayer};
use tracing::Level;

/// A build as its stream sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    pub id: u64,
    pub status: Status,
    /// Log lines so far.
    pub lines: u32,
}

/// Where a build is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Passed,
    Failed,
}

impl Build {
    /// Whether it is over: its poller stops, and its streams end.
    pub fn is_done(&self) -> bool {
        self.status != Status::Running
    }
}

/// Every build, shared by the handlers (as `State`) and the pollers (as `Extension`).
#[derive(Clone, Default)]
pub struct Builds(Arc<Mutex<HashMap<u64, Build>>>);

impl Builds {
    fn get(&self, id: u64) -> Option<Build> {
        self.0.lock().get(&id).cloned()
    }

    /// Applies `change` to build `id`; the build as it is then, or `None` if there is none.
    fn change(&self, id: u64, change: impl FnOnce(&mut Build)) -> Option<Build> {
        let mut builds = self.0.lock();
        let build = builds.get_mut(&id)?;
        change(build);
        Some(build.clone())
    }
}

/// The state of the service's own handlers.
#[derive(Clone)]
pub struct AppState {
    pub builds: Builds,
}

/// A line of a build's log, pushed to every subscriber of `/sse/build-log` as a `line` event.
#[sse_topic("build-log", event = "line")]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub build: u64,
    pub text: String,
}

/// Build `id`, polled every 200 ms while `/sse/builds/{id}` has subscribers, sent as a `build`
/// event when it changed. Once it is done the poller stops, and every stream of it gets the
/// final build, then an `end` event, then its end. An unknown build is a `poll-error` event
/// with status 404.
#[sse_poll(
    interval = "200ms",
    path = "/sse/builds/{id}",
    event = "build",
    stop_when = Build::is_done,
    end_on_stop = true
)]
pub async fn build(
    Extension(builds): Extension<Builds>,
    Path(id): Path<u64>,
) -> Result<Build, PollError> {
    builds
        .get(id)
        .ok_or_else(|| PollError::new(StatusCode::NOT_FOUND, format!("no build {id}")))
}

/// The topic of build `id`'s stream: a polled route's topic is its request path.
pub fn build_topic(id: u64) -> String {
    format!("/sse/builds/{id}")
}

/// `POST /builds`: starts a build.
async fn start(State(state): State<AppState>) -> (StatusCode, Json<Build>) {
    let mut builds = state.builds.0.lock();
    let id = builds.len() as u64 + 1;
    let build = Build {
        id,
        status: Status::Running,
        lines: 0,
    };
    builds.insert(id, build.clone());
    (StatusCode::CREATED, Json(build))
}

/// What `POST /builds/{id}/log` takes.
#[derive(Debug, Deserialize, Serialize)]
pub struct NewLine {
    pub text: String,
}

/// `POST /builds/{id}/log`: a line of build `id`'s log, pushed to `/sse/build-log`.
async fn log(
    State(state): State<AppState>,
    Path(id): Path<u64>,
    Json(line): Json<NewLine>,
) -> Result<StatusCode, StatusCode> {
    state
        .builds
        .change(id, |build| build.lines += 1)
        .ok_or(StatusCode::NOT_FOUND)?;
    publish_log_line(&LogLine {
        build: id,
        text: line.text,
    });
    Ok(StatusCode::NO_CONTENT)
}

/// What `POST /builds/{id}/finish` takes.
#[derive(Debug, Deserialize, Serialize)]
pub struct Outcome {
    pub passed: bool,
}

/// `POST /builds/{id}/finish`: the build is done; its poller sees it at its next poll.
async fn finish(
    State(state): State<AppState>,
    Path(id): Path<u64>,
    Json(outcome): Json<Outcome>,
) -> Result<Json<Build>, StatusCode> {
    let status = if outcome.passed {
        Status::Passed
    } else {
        Status::Failed
    };
    let build = state.builds.change(id, |build| build.status = status);
    build.map(Json).ok_or(StatusCode::NOT_FOUND)
}

/// `POST /builds/{id}/rerun`: the build runs again. Whoever still watches it (its streams
/// ended, but a client that subscribed since, or one without `end` handling, may) sees it run:
/// its stopped poller is restarted. With nobody watching, the next subscriber starts one.
async fn rerun(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<Build>, StatusCode> {
    let build = state
        .builds
        .change(id, |build| {
            build.status = Status::Running;
            build.lines = 0;
        })
        .ok_or(StatusCode::NOT_FOUND)?;
    Manager::global().restart_poller(&build_topic(id)).await;
    Ok(Json(build))
}

/// The whole service: the macros' routes and the handlers, with the state, the pollers'
/// extension, request tracing (a stream's end is logged with its duration: `end of stream`)
/// and CORS for a page on another origin.
pub fn app(builds: Builds) -> Router {
    sse_runtime::router()
        .route("/builds", post(start))
        .route("/builds/{id}/log", post(log))
        .route("/builds/{id}/finish", post(finish))
        .route("/builds/{id}/rerun", post(rerun))
        .with_state(AppState {
            builds: builds.clone(),
        })
        .layer(Extension(builds))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                .on_eos(DefaultOnEos::new().level(Level::INFO)),
        )
        .layer(CorsLayer::permissive())
}
