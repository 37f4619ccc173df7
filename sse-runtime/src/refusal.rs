//! Why a subscription is refused: the manager shut down, or a cap on what clients can create
//! was reached; and how a stream route answers it ([`RefusalAnswer`]). Re-exported from
//! [`subscription`](crate::subscription).
//!
//! A browser's `EventSource` gives up for good on any answer but a `200` event stream (WHATWG
//! HTML: it "fails the connection" and never retries), so a `503` over a cap, which no browser
//! reads the `Retry-After` of, would leave a refused page dead until it is reloaded. By default
//! the stream routes answer a refusal that passes with a `200` event stream that says so and
//! ends: the browser comes back after its `retry:`, as after any stream that ended.

use std::fmt;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::frame;

/// How a stream route ([`SseHandler`](crate::SseHandler), the macros' routes, a
/// [`MultiHandler`](crate::multi::MultiHandler)'s topics) answers a request whose subscription
/// is refused ([`SubscribeError`]: a cap, or a manager shutting down). Set with
/// [`ManagerBuilder::refusal_answer`](crate::manager::ManagerBuilder::refusal_answer).
///
/// Either way the refusal is a refusal where an operator looks: counted in
/// [`Stats::refused`](crate::stats::Stats::refused) and in the metrics, logged, and nothing is
/// created for it. Guards' `401`/`403` and malformed requests (`400`, `414`) keep their status
/// whatever the setting: those do not pass by waiting, and a browser must not come back with
/// the same bad credentials every few seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalAnswer {
    /// `200 text/event-stream` (with `Retry-After` too), holding a `retry:` of the refusal's
    /// delay plus up to half of it as jitter, so a refused crowd comes back spread out, and one
    /// `refused` event, `{"status": 503 or 429, "reason": "...", "retryAfterMs": ...}`; then
    /// the stream ends. A browser's `EventSource` dispatches the event, then reconnects after
    /// the `retry:` with its `Last-Event-ID` (the event has no id, so it keeps its own), and
    /// is served once there is room. The default: what browsers need.
    #[default]
    EventStream,
    /// `503 Service Unavailable` (server-wide) or `429 Too Many Requests` (per client) with
    /// `Retry-After` and the reason as text, for clients that read statuses (APIs, scripts,
    /// Node's `eventsource`, which retries on 5xx). A browser's `EventSource` gives up on it.
    Status,
}

/// How a refusal is answered: the style, and the delay it asks the client to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusals {
    pub(crate) answer: RefusalAnswer,
    pub(crate) retry_after: Duration,
}

impl Default for Refusals {
    fn default() -> Self {
        Self {
            answer: RefusalAnswer::default(),
            retry_after: SubscribeError::RETRY_AFTER,
        }
    }
}

/// A refusal a stream route answered, kept in the response's extensions so that a
/// multi-topic stream can answer it the same way, naming the topic.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Refused {
    pub(crate) error: SubscribeError,
    pub(crate) how: Refusals,
}

impl Refused {
    /// The answer, with `about` (a topic of a multi-topic stream) before the reason.
    pub(crate) fn answer(self, about: Option<&str>) -> Response {
        let reason = match about {
            Some(topic) => format!("topic {topic}: {}", self.error),
            None => self.error.to_string(),
        };
        let retry_after = self.how.retry_after;
        let mut response = match self.how.answer {
            RefusalAnswer::Status => (self.error.status(), reason).into_response(),
            RefusalAnswer::EventStream => {
                let retry_ms = frame::jittered_millis(retry_after, retry_after / 2);
                let mut response =
                    event_stream(self.error.status(), &reason, retry_ms).into_response();
                frame::set_headers(response.headers_mut());
                response
            }
        };
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        response.extensions_mut().insert(self);
        response
    }
}

/// The body of an event-stream refusal: the `retry:` hint and the `refused` event.
fn event_stream(status: StatusCode, reason: &str, retry_ms: u64) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct RefusedEvent<'a> {
        status: u16,
        reason: &'a str,
        retry_after_ms: u64,
    }
    let data = serde_json::to_vec(&RefusedEvent {
        status: status.as_u16(),
        reason,
        retry_after_ms: retry_ms,
    })
    .expect("plain struct serializes");
    let mut body = frame::retry(retry_ms).to_vec();
    body.extend_from_slice(&frame::event(None, Some("refused"), &data));
    body
}

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
    /// The client started
    /// [`max_pollers_per_client`](crate::manager::ManagerBuilder::max_pollers_per_client)
    /// of the pollers that run, and this topic would start one more.
    TooManyPollersFromClient,
}

impl SubscribeError {
    /// The default `Retry-After` of a refusal: long enough for a burst of clients to spread
    /// out (see [`refusal_retry`](crate::manager::ManagerBuilder::refusal_retry)).
    pub const RETRY_AFTER: Duration = Duration::from_secs(5);

    /// Whether the refusal is about this client alone (`429`), not the server (`503`).
    pub fn is_per_client(self) -> bool {
        matches!(
            self,
            Self::TooManyFromClient | Self::TooManyPollersFromClient
        )
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
    /// The [`RefusalAnswer::Status`] answer, with a `Retry-After` of
    /// [`RETRY_AFTER`](Self::RETRY_AFTER). (The stream routes answer as their manager's
    /// [`refusal_answer`](crate::manager::ManagerBuilder::refusal_answer) says.)
    fn into_response(self) -> Response {
        let how = Refusals {
            answer: RefusalAnswer::Status,
            retry_after: Self::RETRY_AFTER,
        };
        Refused { error: self, how }.answer(None)
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
            Self::TooManyPollersFromClient => "too many running SSE pollers started by this client",
        })
    }
}

impl std::error::Error for SubscribeError {}
