//! Items the attribute macros' generated code refers to, by absolute path
//! (`::sse_runtime::__private::...`), so the expansion works whatever the user imported.

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use ::inventory;
pub use axum::routing::{MethodRouter, get};
pub use core::time::Duration;
pub use http::request::Parts;

pub use crate::registry::Route;
pub use crate::{
    CancellationToken, Manager, PollError, Polling, SseHandler, SseTopic, SubscribeOptions,
};

/// What an `#[sse_poll]` function may return.
#[diagnostic::on_unimplemented(
    message = "an `#[sse_poll]` function must return `Result<T, E>` with `T: Serialize` and `E: Into<PollError>`, not `{Self}`",
    label = "this return type is not `Result<impl Serialize, impl Into<PollError>>`"
)]
pub trait PollResult {
    /// The published type.
    type Ok: Serialize + Send + 'static;
    /// Converts into what [`Polling`] publishes.
    fn into_poll(self) -> Result<Self::Ok, PollError>;
}

impl<T, E> PollResult for Result<T, E>
where
    T: Serialize + Send + 'static,
    E: Into<PollError>,
{
    type Ok = T;

    fn into_poll(self) -> Result<T, PollError> {
        self.map_err(Into::into)
    }
}

/// Runs one extractor of an `#[sse_poll]` function's arguments; its rejection is the response.
pub async fn extract<T>(parts: &mut Parts) -> Result<T, Response>
where
    T: FromRequestParts<()> + Clone + Send + Sync + 'static,
{
    T::from_request_parts(parts, &())
        .await
        .map_err(IntoResponse::into_response)
}

/// Opens the stream of a polled route: the fixed `topic`, or the request's path + query.
pub fn serve_polled(
    manager: &Manager,
    parts: &Parts,
    topic: Option<&str>,
    change_detection: bool,
    polling: impl crate::PollingService,
) -> Response {
    let topic = topic.map_or_else(|| crate::topic_of(parts), str::to_owned);
    let options = SubscribeOptions::new()
        .polling(polling)
        .change_detection(change_detection);
    crate::handler::open(manager, &topic, parts, options)
}
