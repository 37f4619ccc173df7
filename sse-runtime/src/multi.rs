//! Several topics on one connection: [`MultiHandler`].
//!
//! Browsers open at most six HTTP/1.1 connections per host, so a page with seven live widgets,
//! each on an `EventSource` of its own, stalls. A multi-topic route serves them all on one:
//! `GET /sse?topic=/sse/system&topic=/sse/alarms` subscribes to what `GET /sse/system` and
//! `GET /sse/alarms` would, each through its own route, so every topic's guard, extractors,
//! poller and history settings apply exactly as they do on their own.
//!
//! On the wire each event says which topic it is from: its type (the `event:` field) is the
//! topic as the request named it, followed by `#` and the event's own name when it has one
//! (`/sse/alarms#alarm`; a resume that could not be served is `/sse/alarms#reset`). Its id is
//! a composite of every topic's position, so the browser's `Last-Event-ID` resumes each topic
//! where the client left it, as if it were a stream of its own.
//!
//! ```js
//! const source = new EventSource("/sse?topic=/sse/system&topic=/sse/alarms");
//! source.addEventListener("/sse/system", (e) => draw(JSON.parse(e.data)));
//! source.addEventListener("/sse/alarms#alarm", (e) => warn(JSON.parse(e.data)));
//! ```
//!
//! The composite id has one entry per topic, in the request's order, joined by `_`: the id of
//! the topic's event before its next one (`<epoch>-0` before its first event), whose epoch may
//! be written as `.<hex>`, a delta from the previous entry's. The stream starts with its
//! position, an `id:`-only frame (a browser keeps it as its last event id and dispatches
//! nothing), so a client cut before any event still resumes every topic; with
//! [`position=event`](POSITION_QUERY) in the query it is an event of type `position` instead,
//! for clients that keep the ids of dispatched events only. A `Last-Event-ID`
//! that is not a composite of as many topics (the page changed its list) resets every topic,
//! and an empty entry resets its topic: each gets its `reset` event, then goes on live. A
//! reset's `continueFrom` is the topic's own id of its next event: the topic's entry in the
//! composite id of that event.
//!
//! Each topic is one subscription: it counts against the manager's caps (streams per client
//! among them) like a stream of its own. When one topic's subscription ends (its subscriber
//! fell behind, its guard's credentials expired, its manager shut down) the whole stream ends,
//! and the client's reconnect resumes every topic.

use std::future::Future;
use std::pin::Pin;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, OriginalUri, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode, Uri, header};
use tower::ServiceExt;

use crate::handler::{Claim, Claimed, MAX_TOPIC_LEN, head_only, last_event_id};
use crate::multiplex::{self, Multiplex};
use crate::refusal::Refused;
use crate::stream::SseStream;

/// How many topics one multi-topic stream may name, unless
/// [`max_topics`](MultiHandler::max_topics) says otherwise.
pub const DEFAULT_MAX_TOPICS: usize = 16;

/// The query parameter that names a topic, once per topic: the URL of the topic's own route.
pub const TOPIC_QUERY: &str = "topic";

/// The query parameter that asks for the stream's position as an event: with
/// `position=event`, the `id:`-only frame a stream starts with is sent as an event of type
/// `position` instead (its data and its id the composite id), which every client dispatches.
///
/// A browser's `EventSource` keeps an `id:`-only frame's id for its own reconnects, but does
/// not show it to the page, and some SSE libraries (npm `eventsource` 3, `eventsource-stream`)
/// keep ids of dispatched events only. A client that opens a new stream itself (the typed
/// client of [`contract`](crate::contract), after the browser gave up, or when another tab
/// takes the stream over) must know the position to resume a topic that has sent nothing yet.
pub const POSITION_QUERY: &str = "position";

/// An axum handler that serves several topics on one stream, each subscribed through its own
/// route in `routes` (see the [module documentation](self) for the wire format).
///
/// ```
/// use axum::routing::get;
/// use sse_runtime::{Manager, SseHandler, multi::MultiHandler};
///
/// let manager = Manager::new();
/// let topics = axum::Router::new()
///     .route("/sse/alarms", get(SseHandler::new(&manager).topic("alarms")))
///     .route("/sse/devices/{id}", get(SseHandler::new(&manager).topic_template("devices/{id}")));
/// // GET /sse?topic=/sse/alarms&topic=/sse/devices/7: both on one connection.
/// let app: axum::Router = topics
///     .clone()
///     .route("/sse", get(MultiHandler::new(topics).max_topics(8)));
/// ```
///
/// Requests it refuses, with the reason in the body: no topic, more than
/// [`max_topics`](Self::max_topics), a topic twice, a topic that is not a path (`400`), or
/// longer than [`MAX_TOPIC_LEN`] (`414`). A topic whose route refuses it (its guard, a cap, no
/// such route) refuses the whole request with that route's status and headers, the body naming
/// the topic; the topics subscribed before it are released at once. A route that answers
/// without a topic stream (a handler of your own) is a `400`.
#[derive(Clone)]
#[must_use]
pub struct MultiHandler {
    routes: Router,
    max_topics: usize,
}

impl MultiHandler {
    /// A handler that subscribes each topic through `routes` (mount it on a route without
    /// path parameters, outside `routes`).
    pub fn new(routes: Router) -> Self {
        Self {
            routes,
            max_topics: DEFAULT_MAX_TOPICS,
        }
    }

    /// The most topics one stream may name (default [`DEFAULT_MAX_TOPICS`]); more is a `400`.
    pub fn max_topics(mut self, topics: usize) -> Self {
        self.max_topics = topics;
        self
    }

    /// Opens the stream for a request; what [`axum::handler::Handler::call`] does. A `HEAD`
    /// request is checked, then gets the stream's headers only, and subscribes to nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # use sse_runtime::multi::MultiHandler;
    /// let handler = MultiHandler::new(axum::Router::new()).max_topics(2);
    /// let request = http::Request::get("/sse?topic=/a&topic=/b&topic=/c").body(()).unwrap();
    /// let (mut parts, ()) = request.into_parts();
    /// assert_eq!(handler.respond(&mut parts).await.status(), http::StatusCode::BAD_REQUEST);
    /// # }
    /// ```
    pub async fn respond(&self, parts: &mut Parts) -> Response {
        if parts.extensions.get::<Claim>().is_some() {
            return BadRequest::Nested.into_response();
        }
        let Named {
            topics,
            position_event,
        } = match self.topics(&parts.uri) {
            Ok(named) => named,
            Err(refusal) => return refusal.into_response(),
        };
        if let Ok(params) = RawPathParams::from_request_parts(parts, &()).await
            && params.iter().next().is_some()
        {
            tracing::error!("a multi-topic route must not capture path parameters");
            return BadRequest::CapturesPath.into_response();
        }
        if parts.method == Method::HEAD {
            return head_only();
        }
        // `None`: no Last-Event-ID; `Some(None)`: one that is not a composite of these topics.
        let resume = last_event_id(&parts.headers, &parts.uri)
            .map(|text| multiplex::parse_composite(&text, topics.len()));
        let mut opened = Vec::with_capacity(topics.len());
        let mut expires: Option<tokio::time::Instant> = None;
        for (index, (topic, uri)) in topics.into_iter().enumerate() {
            let last = match &resume {
                None => None,
                Some(None) => Some(HeaderValue::from_static("malformed")),
                // An empty entry says nothing of what the client has seen (no stream writes
                // one): its topic is reset rather than started live with a possible gap.
                Some(Some(positions)) => Some(positions[index].map_or_else(
                    || HeaderValue::from_static("malformed"),
                    |id| HeaderValue::from_str(&id.to_string()).expect("ascii id"),
                )),
            };
            let claim = Claim::default();
            let request = sub_request(parts, uri, last, claim.clone());
            let Ok(response) = self.routes.clone().oneshot(request).await;
            match claim.take() {
                Some(Claimed {
                    subscription,
                    expires: until,
                }) => {
                    expires = match (expires, until) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    opened.push((subscription, topic));
                }
                None => return refused_by_route(&topic, response).await,
            }
        }
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        SseStream::multiplexed(Multiplex::new(opened, position_event), route)
            .ending_at(expires)
            .into_response()
    }

    /// The topics the request names, checked, each with its URI, and how it wants its
    /// position.
    fn topics(&self, uri: &Uri) -> Result<Named, BadRequest> {
        let query = uri.query().unwrap_or("");
        let mut topics: Vec<(String, Uri)> = Vec::new();
        let mut position_event = false;
        for (name, topic) in form_urlencoded::parse(query.as_bytes()) {
            if name == POSITION_QUERY {
                if topic != "event" {
                    return Err(BadRequest::Position(topic.into_owned()));
                }
                position_event = true;
                continue;
            }
            if name != TOPIC_QUERY {
                continue;
            }
            if topic.len() > MAX_TOPIC_LEN {
                return Err(BadRequest::TooLong);
            }
            let parsed = (topic.starts_with('/')
                && !topic.starts_with("//")
                && !topic.contains(|c: char| c.is_control() || c == '#'))
            .then(|| topic.parse::<Uri>().ok())
            .flatten()
            .filter(|uri| uri.scheme().is_none());
            let Some(parsed) = parsed else {
                return Err(BadRequest::NotAPath(topic.into_owned()));
            };
            if topics.iter().any(|(seen, _)| *seen == topic) {
                return Err(BadRequest::NamedTwice(topic.into_owned()));
            }
            topics.push((topic.into_owned(), parsed));
        }
        if topics.is_empty() {
            return Err(BadRequest::NoTopic);
        }
        if topics.len() > self.max_topics {
            return Err(BadRequest::TooMany {
                limit: self.max_topics,
                named: topics.len(),
            });
        }
        Ok(Named {
            topics,
            position_event,
        })
    }
}

/// What a multi-topic request asks for.
struct Named {
    /// Each topic as the request names it, with its URI.
    topics: Vec<(String, Uri)>,
    /// `position=event`: the stream's first position as an event (see [`POSITION_QUERY`]).
    position_event: bool,
}

/// Why a multi-topic request is refused before any topic is opened; each answer names its
/// reason.
#[derive(Debug, PartialEq, Eq)]
enum BadRequest {
    /// A topic that is itself a multi-topic route.
    Nested,
    /// The multi-topic route was mounted on a path with parameters (the application's mistake).
    CapturesPath,
    /// No `topic` parameter.
    NoTopic,
    /// A topic over [`MAX_TOPIC_LEN`].
    TooLong,
    /// A topic that is not a plain path.
    NotAPath(String),
    NamedTwice(String),
    /// A `position` parameter other than `event`.
    Position(String),
    /// More topics than [`MultiHandler::max_topics`].
    TooMany {
        limit: usize,
        named: usize,
    },
}

impl BadRequest {
    fn status(&self) -> StatusCode {
        match self {
            Self::CapturesPath => StatusCode::INTERNAL_SERVER_ERROR,
            Self::TooLong => StatusCode::URI_TOO_LONG,
            Self::Nested
            | Self::NoTopic
            | Self::NotAPath(_)
            | Self::NamedTwice(_)
            | Self::Position(_)
            | Self::TooMany { .. } => StatusCode::BAD_REQUEST,
        }
    }

    fn reason(&self) -> String {
        match self {
            Self::Nested => "a multi-topic stream cannot name another multi-topic route".into(),
            Self::CapturesPath => {
                "the multi-topic route captures path parameters; mount it on a plain path".into()
            }
            Self::NoTopic => format!(
                "name the topics to stream, each by the URL of its route: \
                 ?{TOPIC_QUERY}=/sse/a&{TOPIC_QUERY}=/sse/b"
            ),
            Self::TooLong => format!("a topic is longer than {MAX_TOPIC_LEN} bytes"),
            Self::NotAPath(topic) => format!(
                "topic {topic:?} is not a path: name each topic by the URL of its own \
                 route, like {TOPIC_QUERY}=/sse/alarms"
            ),
            Self::NamedTwice(topic) => format!("topic {topic} is named twice"),
            Self::Position(value) => format!(
                "{POSITION_QUERY}={value:?} is not understood: {POSITION_QUERY}=event sends \
                 the stream's position as an event, and without it the position is an \
                 id-only frame"
            ),
            Self::TooMany { limit, named } => {
                format!("at most {limit} topics per stream; this request names {named}")
            }
        }
    }
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        refuse(self.status(), self.reason())
    }
}

/// The request for one topic: a `GET` of its URL with the original request's headers and
/// extensions (cookies and credentials for its guard, the client's address for its caps), its
/// own `Last-Event-ID`, and the claim its route leaves the subscription in.
fn sub_request(parts: &Parts, uri: Uri, last: Option<HeaderValue>, claim: Claim) -> Request {
    let mut request = Request::new(Body::empty());
    *request.uri_mut() = uri;
    *request.version_mut() = parts.version;
    let headers = request.headers_mut();
    *headers = parts.headers.clone();
    for stale in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONTENT_TYPE,
    ] {
        headers.remove(stale);
    }
    headers.remove("last-event-id");
    if let Some(last) = last {
        headers.insert("last-event-id", last);
    }
    let extensions = request.extensions_mut();
    *extensions = parts.extensions.clone();
    // The inner router sets them for the topic's own route.
    extensions.remove::<OriginalUri>();
    extensions.remove::<MatchedPath>();
    extensions.insert(claim);
    request
}

/// The answer to a request one of whose topics its route refused: that route's status and
/// headers, and its reason prefixed with the topic.
async fn refused_by_route(topic: &str, response: Response) -> Response {
    // A refusal of the topic's manager (a cap, a shutdown) is answered as that manager answers
    // refusals (a browser must be able to come back from it), naming the topic.
    if let Some(refused) = response.extensions().get::<Refused>() {
        return refused.answer(Some(topic));
    }
    let (mut head, body) = response.into_parts();
    if head.status.is_success() {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "topic {topic}: its route does not serve a topic stream that can share a \
                 connection (SseHandler and the macros' routes do)"
            ),
        );
    }
    let reason = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    head.headers.remove(header::CONTENT_LENGTH);
    head.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let text = format!("topic {topic}: {}", String::from_utf8_lossy(&reason));
    Response::from_parts(head, Body::from(text))
}

fn refuse(status: StatusCode, reason: String) -> Response {
    (status, reason).into_response()
}

impl<S: Send + Sync + 'static> axum::handler::Handler<(), S> for MultiHandler {
    type Future = Pin<Box<dyn Future<Output = Response> + Send>>;

    fn call(self, request: Request, _state: S) -> Self::Future {
        let (mut parts, _body) = request.into_parts();
        Box::pin(async move { self.respond(&mut parts).await })
    }
}

impl std::fmt::Debug for MultiHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiHandler")
            .field("max_topics", &self.max_topics)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(query: &str, max: usize) -> Result<Vec<String>, BadRequest> {
        let handler = MultiHandler::new(axum::Router::new()).max_topics(max);
        let uri: Uri = format!("/sse?{query}").parse().unwrap();
        let named = handler.topics(&uri)?;
        assert!(!named.position_event, "{query}");
        Ok(named
            .topics
            .into_iter()
            .map(|(name, uri)| {
                assert_eq!(uri.to_string(), name, "the URI is the topic, parsed once");
                name
            })
            .collect())
    }

    #[test]
    fn the_topics_are_the_topic_parameters_in_order_with_their_queries() {
        let named = topics("topic=/sse/b&x=1&topic=%2Fsse%2Fbuilds%2F42%3Fv%3D2", 8);
        assert_eq!(
            named,
            Ok(vec!["/sse/b".to_owned(), "/sse/builds/42?v=2".to_owned()])
        );
    }

    #[test]
    fn each_mistake_gets_its_own_refusal() {
        let long = format!("topic=/{}", "a".repeat(MAX_TOPIC_LEN));
        for (query, refusal) in [
            ("x=1", BadRequest::NoTopic),
            (&long[..], BadRequest::TooLong),
            ("topic=alarms", BadRequest::NotAPath("alarms".into())),
            (
                "topic=//evil.example/x",
                BadRequest::NotAPath("//evil.example/x".into()),
            ),
            ("topic=/a%23b", BadRequest::NotAPath("/a#b".into())),
            ("topic=/a%0Ab", BadRequest::NotAPath("/a\nb".into())),
            ("topic=/a&topic=/a", BadRequest::NamedTwice("/a".into())),
            ("topic=/a&position=id", BadRequest::Position("id".into())),
            (
                "topic=/a&topic=/b&topic=/c",
                BadRequest::TooMany { limit: 2, named: 3 },
            ),
        ] {
            assert_eq!(topics(query, 2), Err(refusal), "{query}");
        }
        assert_eq!(BadRequest::TooLong.status(), StatusCode::URI_TOO_LONG);
        assert_eq!(
            BadRequest::CapturesPath.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            BadRequest::NamedTwice("/a".into()).reason(),
            "topic /a is named twice"
        );
    }

    #[test]
    fn position_event_asks_for_the_position_as_an_event() {
        let handler = MultiHandler::new(axum::Router::new());
        let uri: Uri = "/sse?position=event&topic=/a".parse().unwrap();
        let named = handler.topics(&uri).unwrap();
        assert!(named.position_event);
        assert_eq!(named.topics.len(), 1);
    }
}
