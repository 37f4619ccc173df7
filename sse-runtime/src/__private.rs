//! Items the attribute macros' generated code refers to, by absolute path
//! (`::sse_runtime::__private::...`), so the expansion works whatever the user imported.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use ::inventory;
pub use axum::routing::{MethodRouter, get};
pub use core::time::Duration;
pub use http::request::Parts;

pub use crate::handler::SseHandler;
pub use crate::manager::Manager;
pub use crate::polling::Polling;
pub use crate::producer::{PollError, PollingService};
pub use crate::routes::Route;
pub use crate::typed::SseTopic;
pub use tokio_util::sync::CancellationToken;

use crate::guard::{self, Guard};
use crate::handler::{mark_client, open, shared_view, topic_of};
pub use crate::subscription::SubscribeOptions;

/// What an `#[sse_poll]` function may return.
#[diagnostic::on_unimplemented(
    message = "an `#[sse_poll]` function must return `Result<T, E>` with `T: Serialize` and `E` a `PollError` or a `std::error::Error`, not `{Self}`",
    label = "this return type is not `Result<impl Serialize, PollError>` (or another error type)"
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
    E: PollErrorType,
{
    type Ok = T;

    fn into_poll(self) -> Result<T, PollError> {
        self.map_err(PollErrorType::into_poll_error)
    }
}

pub use crate::routes::Payload;

/// Which payload types have a schema, found by method resolution in the generated code
/// (`(&Probe::<T>::new()).payload()`): [`HasSchema`] applies to `Probe<T>` when `T:
/// JsonSchema` and the `schema` feature is on, [`NoSchema`] to `&Probe<T>` always, and the
/// first that applies wins. So the feature adds schemas where types have them and breaks no
/// build: a feature must not turn code that compiles into an error, and cargo enables it for
/// every crate of a build once one asks.
pub struct Probe<T: ?Sized>(std::marker::PhantomData<T>);

impl<T: ?Sized> Probe<T> {
    pub const fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T: ?Sized> Default for Probe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// See [`Probe`].
pub trait HasSchema {
    fn payload(&self) -> Option<Payload>;
}

#[cfg(feature = "schema")]
impl<T: schemars::JsonSchema + ?Sized> HasSchema for Probe<T> {
    fn payload(&self) -> Option<Payload> {
        Some(Payload::of::<T>())
    }
}

/// See [`Probe`].
pub trait NoSchema {
    fn payload(&self) -> Option<Payload>;
}

impl<T: ?Sized> NoSchema for &Probe<T> {
    fn payload(&self) -> Option<Payload> {
        None
    }
}

/// The value an `#[sse_poll]` function returns in `Ok`: what its subscribers are sent.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent to subscribers: an `#[sse_poll]` function's value must be `Serialize + Send + 'static`",
    label = "the value this poll function returns",
    note = "for a type of your own, add `#[derive(serde::Serialize)]`"
)]
pub trait PollValue: Serialize + Send + 'static {}

impl<T: Serialize + Send + 'static> PollValue for T {}

/// The error type of an `#[sse_poll]` function: `PollError`, or any `std::error::Error` (an
/// internal error, see `PollError::internal`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an error an `#[sse_poll]` function can return",
    label = "`{Self}` is neither `PollError` nor a `std::error::Error`",
    note = "to tell clients something, return `PollError::new(status, message)`; to report an internal error, convert it: `.map_err(PollError::internal)?` (for `String`, `&str` and `anyhow::Error`)"
)]
pub trait PollErrorType {
    fn into_poll_error(self) -> PollError;
}

impl PollErrorType for PollError {
    fn into_poll_error(self) -> PollError {
        self
    }
}

impl<E: std::error::Error + Send + Sync + 'static> PollErrorType for E {
    fn into_poll_error(self) -> PollError {
        self.into()
    }
}

/// Runs one extractor of an `#[sse_poll]` function's arguments on `shared`, what the shared
/// poller will see ([`RequestSnapshot::parts`]); its rejection is the response. An extractor
/// that fails there but succeeds on the whole `request` needs a subscriber's headers, cookies
/// or address: that is a `500` naming it and the function, never a poller that runs with one
/// subscriber's credentials on behalf of all.
pub async fn extract<T>(
    shared: &mut Parts,
    request: &mut Parts,
    function: &str,
) -> Result<T, Response>
where
    T: FromRequestParts<()> + Send + 'static,
{
    let rejection = match T::from_request_parts(shared, &()).await {
        Ok(value) => return Ok(value),
        Err(rejection) => rejection.into_response(),
    };
    if T::from_request_parts(request, &()).await.is_err() {
        return Err(rejection);
    }
    let extractor = std::any::type_name::<T>();
    tracing::error!(
        function,
        extractor,
        "an #[sse_poll] extractor reads the subscriber's headers, cookies or address"
    );
    Err((
        http::StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "the #[sse_poll] function `{function}` takes `{extractor}`, which reads the request's \
             headers, cookies or peer address; a poller is shared by every subscriber of its \
             topic and never sees those. Put what it needs in the path or query, and check the \
             caller with `guard = ...`."
        ),
    )
        .into_response())
}

/// Runs the `guard = ...` of a generated route; `Err` is the response refusing the request.
pub async fn check_guard<G: Guard<Args>, Args>(
    manager: &Manager,
    guard: G,
    parts: &mut Parts,
) -> Result<Option<tokio::time::Instant>, Response> {
    mark_client(manager, parts);
    guard::admit(manager, guard.check(parts)).await
}

/// Runs an extractor again for a later poll. It succeeded on the same request already, so a
/// failure here is an internal error, reported as such.
pub async fn re_extract<T>(parts: &mut Parts) -> Result<T, PollError>
where
    T: FromRequestParts<()> + Send + 'static,
{
    T::from_request_parts(parts, &())
        .await
        .map_err(|rejection| {
            let response = rejection.into_response();
            PollError::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "request extractor failed on a later poll ({})",
                    response.status()
                ),
            )
        })
}

/// What a poller may see of the request it was created for ([`shared_view`]), kept so each
/// poll can run the function's extractors afresh (extractors need not be `Clone`).
#[derive(Clone)]
pub struct RequestSnapshot(Arc<Parts>);

impl RequestSnapshot {
    /// Keeps what makes the topic: method, URI, version and the server-side extensions.
    pub fn new(parts: &Parts) -> Self {
        Self(Arc::new(shared_view(parts)))
    }

    /// A fresh copy to extract from.
    pub fn parts(&self) -> Parts {
        shared_view(&self.0)
    }
}

/// What a generated `publish_*_to` helper does: `T`'s event on `topic`. The only place the
/// generated code asks for `T: Serialize`, so a topic type without it is one error.
pub fn publish_topic_event<T: SseTopic + Serialize>(manager: &Manager, topic: &str, value: &T) {
    manager.publish_event(topic, T::EVENT, value);
}

/// The manager a generated `publish_*` helper publishes into: the global one. A publish that
/// no route can deliver, because the macro routes were mounted on another manager, is
/// reported: an error log once per helper, [`Stats::unrouted`](crate::stats::Stats::unrouted)
/// every time.
pub fn global_for(helper: &'static str) -> &'static Manager {
    let manager = Manager::global();
    if manager.misses_macro_routes() {
        report_unrouted(manager, helper);
    }
    manager
}

#[cold]
fn report_unrouted(manager: &Manager, helper: &'static str) {
    use std::sync::atomic::Ordering;
    static REPORTED: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    manager.counters().unrouted.fetch_add(1, Ordering::Relaxed);
    let mut reported = REPORTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if reported.contains(&helper) {
        return;
    }
    reported.push(helper);
    tracing::error!(
        helper,
        "`{helper}` publishes into the global manager, but the SSE routes were mounted on \
         another one with `router_with(&manager)`: no subscriber can receive this event. Use \
         `{helper}_to(&manager, ..)`, or configure the global manager with \
         `Manager::builder()...install()` and mount the routes with `router()`"
    );
}

/// The query parameters a poll function reads, which its topic is made of: none to begin with,
/// then those of each `Query<T>` it takes; the whole query once any of them cannot be told, or
/// once the function takes an extractor that may read the query in a way of its own.
pub struct QueryKeys(Option<std::collections::BTreeSet<String>>);

impl QueryKeys {
    pub fn none() -> Self {
        Self(Some(std::collections::BTreeSet::new()))
    }

    pub fn all() -> Self {
        Self(None)
    }

    /// With the parameters `T` reads of the request's query.
    pub fn and<T: serde::de::DeserializeOwned>(self, parts: &Parts) -> Self {
        let Self(Some(mut keys)) = self else {
            return self;
        };
        let query = crate::handler::original_uri(parts).query().unwrap_or("");
        match crate::query_keys::read_keys::<T>(query) {
            Some(read) => {
                keys.extend(read);
                Self(Some(keys))
            }
            None => Self::all(),
        }
    }
}

/// Opens the stream of a polled route: the fixed `topic`, or the request's path plus the query
/// parameters its function reads (`keys`).
pub fn serve_polled(
    manager: &Manager,
    parts: &Parts,
    topic: Option<&str>,
    keys: QueryKeys,
    options: SubscribeOptions,
    polling: impl PollingService,
    expires: Option<tokio::time::Instant>,
) -> Response {
    let topic = match (topic, keys) {
        (Some(topic), _) => topic.to_owned(),
        (None, QueryKeys(Some(keys))) => crate::handler::topic_reading(parts, &keys),
        (None, QueryKeys(None)) => topic_of(parts),
    };
    open(manager, &topic, parts, options.polling(polling), expires)
}
