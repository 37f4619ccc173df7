//! Why a subscription is refused: the manager shut down, or a cap on what clients can create
//! was reached. Re-exported as [`subscription::SubscribeError`](crate::subscription::SubscribeError).

use std::fmt;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Why a subscription could not be made. Nothing was created for it: no topic, no poller, no
/// history.
///
/// As a response (`IntoResponse`), a cap on one client is `429 Too Many Requests`, every other
/// refusal `503 Service Unavailable`, each with `Retry-After` and the reason as text.
///
/// ```
/// use sse_runtime::{Manager, subscription::SubscribeError};
///
/// let manager = Manager::new();
/// manager.shutdown();
/// assert_eq!(manager.subscribe("t").unwrap_err(), SubscribeError::ShutDown);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The manager has been shut down.
    ShutDown,
    /// [`max_streams`](crate::manager::ManagerBuilder::max_streams) streams are open.
    TooManyStreams,
    /// The client has
    /// [`max_streams_per_client`](crate::manager::ManagerBuilder::max_streams_per_client)
    /// streams open.
    TooManyFromClient,
    /// The topic has
    /// [`max_subscribers_per_topic`](crate::manager::ManagerBuilder::max_subscribers_per_topic)
    /// subscribers.
    TooManySubscribers,
    /// [`max_topics`](crate::manager::ManagerBuilder::max_topics) topics are live, and this
    /// one is not.
    TooManyTopics,
    /// [`max_pollers`](crate::manager::ManagerBuilder::max_pollers) pollers run, and this
    /// topic would start one more.
    TooManyPollers,
}

impl SubscribeError {
    /// The `Retry-After` of a refusal: long enough for a burst of clients to spread out.
    pub const RETRY_AFTER: Duration = Duration::from_secs(5);

    /// Whether the refusal is about this client alone (`429`), not the server (`503`).
    pub fn is_per_client(self) -> bool {
        self == Self::TooManyFromClient
    }

    /// The status it answers with: `429` for a per-client cap, else `503`.
    ///
    /// ```
    /// use sse_runtime::subscription::SubscribeError;
    ///
    /// assert_eq!(SubscribeError::TooManyFromClient.status(), 429);
    /// assert_eq!(SubscribeError::TooManyTopics.status(), 503);
    /// ```
    pub fn status(self) -> StatusCode {
        if self.is_per_client() {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

impl IntoResponse for SubscribeError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.to_string()).into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(Self::RETRY_AFTER.as_secs()),
        );
        response
    }
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ShutDown => "the SSE manager has been shut down",
            Self::TooManyStreams => "too many open SSE streams on this server",
            Self::TooManyFromClient => "too many open SSE streams from this client",
            Self::TooManySubscribers => "too many subscribers of this SSE topic",
            Self::TooManyTopics => "too many live SSE topics on this server",
            Self::TooManyPollers => "too many running SSE pollers on this server",
        })
    }
}

impl std::error::Error for SubscribeError {}
