//! Guards: an async function, run on every request to an SSE route (reconnects included),
//! that decides whether it may subscribe, and until when.
//!
//! A guard takes axum extractors, like a handler, and returns `Result<(), E>` (admitted, no
//! end) or `Result<SystemTime, E>` (admitted until then: a session's or a token's `exp`),
//! with `E: IntoResponse` as the refusal. It runs before anything is created: no topic, no
//! poller, no history replayed for a refused request. An expiry in the past is refused with
//! `403`; one in the future ends the stream at that time, and the browser's reconnect meets
//! the guard again.
//!
//! Browsers' `EventSource` cannot set headers: cookies (sent with the request, `withCredentials`
//! for another origin) or the URL carry the credentials. After a non-200 answer it stops
//! reconnecting for good (`readyState` becomes `CLOSED`), so a page that sees that in its
//! `onerror` renews the session and opens a new `EventSource`.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use axum::{Router, routing::get};
//! use http::{HeaderMap, StatusCode};
//! use sse_runtime::{Manager, SseHandler};
//!
//! /// Admits requests with the cookie `session=open`, for an hour.
//! async fn session(headers: HeaderMap) -> Result<SystemTime, (StatusCode, &'static str)> {
//!     let cookie = headers.get("cookie").and_then(|v| v.to_str().ok()).unwrap_or("");
//!     if cookie.split("; ").any(|c| c == "session=open") {
//!         Ok(SystemTime::now() + Duration::from_secs(3600))
//!     } else {
//!         Err((StatusCode::UNAUTHORIZED, "log in first"))
//!     }
//! }
//!
//! let manager = Manager::new();
//! let app: Router = Router::new()
//!     .route("/sse/alarms", get(SseHandler::new(&manager).topic("alarms").guard(session)));
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use tokio::time::Instant;

use crate::manager::Manager;

/// What a guard's future resolves to: admitted (until an expiry, if any), or the refusal.
pub type Access = Result<Option<SystemTime>, Response>;

/// What a guard function may return: `Result<(), E>`, `Result<SystemTime, E>` or
/// `Result<Option<SystemTime>, E>`, with `E: IntoResponse`.
#[diagnostic::on_unimplemented(
    message = "a guard must return `Result<(), E>` or `Result<SystemTime, E>` with `E: IntoResponse`, not `{Self}`",
    label = "not a guard's result"
)]
pub trait GuardResult {
    /// The admission, or the response refusing it.
    #[expect(
        clippy::result_large_err,
        reason = "a refusal is the response itself, as with axum's rejections; made once per refused request"
    )]
    fn into_access(self) -> Access;
}

impl<E: IntoResponse> GuardResult for Result<(), E> {
    fn into_access(self) -> Access {
        self.map(|()| None).map_err(IntoResponse::into_response)
    }
}

impl<E: IntoResponse> GuardResult for Result<SystemTime, E> {
    fn into_access(self) -> Access {
        self.map(Some).map_err(IntoResponse::into_response)
    }
}

impl<E: IntoResponse> GuardResult for Result<Option<SystemTime>, E> {
    fn into_access(self) -> Access {
        self.map_err(IntoResponse::into_response)
    }
}

/// An async fn usable as a guard: up to eight arguments that are axum extractors
/// (`FromRequestParts<()>`), returning a [`GuardResult`]. Implemented for every such
/// function; see the [module](self) for an example.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a guard",
    label = "not an async fn taking axum extractors and returning `Result<(), impl IntoResponse>` or `Result<SystemTime, impl IntoResponse>`",
    note = "a guard's arguments must implement `FromRequestParts<()>` (app state is reached through `Extension`), and it must be `Clone + Send + Sync + 'static`"
)]
pub trait Guard<Args>: Clone + Send + Sync + 'static {
    /// Runs the extractors on `parts`, then the function.
    fn check(self, parts: &mut Parts) -> Pin<Box<dyn Future<Output = Access> + Send + '_>>;
}

macro_rules! impl_guard {
    ($($arg:ident),*) => {
        #[allow(non_snake_case, unused_variables)]
        impl<F, Fut, R, $($arg,)*> Guard<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send,
            R: GuardResult,
            $($arg: FromRequestParts<()> + Send,)*
        {
            fn check(self, parts: &mut Parts) -> Pin<Box<dyn Future<Output = Access> + Send + '_>> {
                Box::pin(async move {
                    $(
                        let $arg = match $arg::from_request_parts(parts, &()).await {
                            Ok(value) => value,
                            Err(rejection) => return Err(rejection.into_response()),
                        };
                    )*
                    (self)($($arg),*).await.into_access()
                })
            }
        }
    };
}

impl_guard!();
impl_guard!(T1);
impl_guard!(T1, T2);
impl_guard!(T1, T2, T3);
impl_guard!(T1, T2, T3, T4);
impl_guard!(T1, T2, T3, T4, T5);
impl_guard!(T1, T2, T3, T4, T5, T6);
impl_guard!(T1, T2, T3, T4, T5, T6, T7);
impl_guard!(T1, T2, T3, T4, T5, T6, T7, T8);

/// A guard with its argument types erased, as a handler stores it.
pub(crate) type ErasedGuard = std::sync::Arc<
    dyn Fn(&mut Parts) -> Pin<Box<dyn Future<Output = Access> + Send + '_>> + Send + Sync,
>;

pub(crate) fn erase<G: Guard<Args>, Args>(guard: G) -> ErasedGuard {
    std::sync::Arc::new(move |parts| guard.clone().check(parts))
}

/// Runs a guard's verdict through the expiry rule: an expiry already past is a `403`; a
/// refusal is counted in `Stats::refused.guard`. Returns when the stream must end.
pub(crate) async fn admit(
    manager: &Manager,
    access: impl Future<Output = Access>,
) -> Result<Option<Instant>, Response> {
    let refusal = match access.await {
        Ok(None) => return Ok(None),
        Ok(Some(expiry)) => match expiry.duration_since(SystemTime::now()) {
            Ok(left) if !left.is_zero() => return Ok(Some(Instant::now() + left)),
            _ => (
                StatusCode::FORBIDDEN,
                "credentials expired: renew them and reconnect",
            )
                .into_response(),
        },
        Err(response) => response,
    };
    manager.counters().refused_by_guard();
    Err(refusal)
}
