//! The JSON API next to the streams: thresholds, and the runtime's counts.

use std::time::Duration;

use axum::Json;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sse_runtime::{Manager, stats::Stats, stats::TopicStats};

use crate::events::{self, Thresholds};

/// The thresholds store (Redis, with `--redis`) did not answer.
fn unavailable(error: sse_runtime::PollError) -> Response {
    (error.status(), error.message().to_owned()).into_response()
}

pub async fn get_thresholds() -> Response {
    match events::thresholds().await {
        Ok(thresholds) => Json(thresholds).into_response(),
        Err(error) => unavailable(error),
    }
}

pub async fn set_thresholds(Json(thresholds): Json<Thresholds>) -> Response {
    let valid = [thresholds.cpu, thresholds.memory, thresholds.load]
        .iter()
        .all(|v| v.is_finite() && *v >= 0.0);
    if !valid {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "thresholds must be finite and non-negative",
        )
            .into_response();
    }
    match events::set_thresholds(thresholds).await {
        Ok(()) => Json(thresholds).into_response(),
        Err(error) => unavailable(error),
    }
}

/// This server's own pid: the process view's default.
pub async fn info() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "pid": std::process::id() }))
}

pub async fn stats() -> Json<Stats> {
    Json(Manager::global().stats())
}

pub async fn topics() -> Json<Vec<TopicStats>> {
    Json(Manager::global().topics())
}

#[derive(Deserialize)]
pub struct WaitFor {
    pollers: Option<usize>,
    subscribers: Option<usize>,
}

/// Answers once the counts match (or `408` after 10 s): lets scripts and tests wait for an
/// event instead of polling.
pub async fn wait_for_stats(Query(wanted): Query<WaitFor>) -> Response {
    let condition = |s: &Stats| {
        wanted.pollers.is_none_or(|n| s.pollers == n)
            && wanted.subscribers.is_none_or(|n| s.subscribers == n)
    };
    match tokio::time::timeout(
        Duration::from_secs(10),
        Manager::global().wait_until(condition),
    )
    .await
    {
        Ok(stats) => Json(stats).into_response(),
        Err(_) => (StatusCode::REQUEST_TIMEOUT, Json(Manager::global().stats())).into_response(),
    }
}
