//! The ready-made axum handler, [`SseHandler`], and the topics derived from requests.
//!
//! ```
//! let uri: http::Uri = "/sse/devices?site=3".parse().unwrap();
//! assert_eq!(sse_runtime::handler::topic_of_uri(&uri), "/sse/devices?site=3");
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{
    ConnectInfo, FromRequestParts, MatchedPath, OriginalUri, RawPathParams, Request,
};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode, Uri};

use crate::client_addr::ClientAddr;
use crate::frame;
use crate::guard::{self, ErasedGuard, Guard};
use crate::manager::Manager;
use crate::producer::PollingService;
use crate::refusal::Refused;
use crate::stream::SseStream;
use crate::subscription::{SubscribeOptions, Subscription};

/// Longest topic (path plus query) a request may derive; longer gets `414 URI Too Long`.
pub const MAX_TOPIC_LEN: usize = 2048;

/// Query parameter read as `Last-Event-ID` when the header is absent, for clients that cannot
/// set headers.
pub const LAST_EVENT_ID_QUERY: &str = "last_event_id";

type PollingFactory = Arc<dyn Fn(&Parts) -> Arc<dyn PollingService> + Send + Sync>;

#[derive(Clone, Debug)]
enum TopicSource {
    Fixed(Arc<str>),
    Template(Arc<str>),
}

/// An axum handler that opens an SSE stream on a topic of a [`Manager`].
///
/// The topic is the request's decoded path, plus `?` and its canonical query when there is one
/// (see [`topic_of`]), unless [`topic`](Self::topic) fixes it. With [`polling`](Self::polling), the
/// request that creates the topic's broadcaster also starts a poller built from that request.
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use sse_runtime::{Manager, PollError, SseHandler, polling::Polling};
///
/// let manager = Manager::new();
/// let app: Router = Router::new()
///     // Event-driven: publish with manager.publish("alarms", &alarm).
///     .route("/api/v1/alarms/sse", get(SseHandler::new(&manager).topic("alarms")))
///     // Polled: one poller per distinct path + query, while someone is subscribed.
///     .route(
///         "/api/v1/devices/sse",
///         get(SseHandler::new(&manager).polling(|_request| {
///             Polling::new(|_cancel| async { Ok::<_, PollError>(vec!["dev-1", "dev-2"]) })
///                 .interval(Duration::from_secs(5))
///         })),
///     );
/// ```
#[derive(Clone)]
#[must_use]
pub struct SseHandler {
    manager: Manager,
    topic: Option<TopicSource>,
    polling: Option<PollingFactory>,
    /// Change detection and history overrides; each request adds its poller and resume point.
    options: SubscribeOptions,
    guard: Option<ErasedGuard>,
}

impl SseHandler {
    /// A handler on `manager`, with the topic taken from each request's URL.
    pub fn new(manager: &Manager) -> Self {
        Self {
            manager: manager.clone(),
            topic: None,
            polling: None,
            options: SubscribeOptions::new(),
            guard: None,
        }
    }

    /// Serve this fixed topic instead of the URL-derived one.
    pub fn topic(mut self, topic: impl Into<Arc<str>>) -> Self {
        self.topic = Some(TopicSource::Fixed(topic.into()));
        self
    }

    /// Serve the topic made by filling `{name}` placeholders of `template` with the route's
    /// path parameters of the same names, so `devices/{id}` on the route `/sse/devices/{id}`
    /// gives each device its own topic (`devices/7`, ...). A placeholder the route does not
    /// capture is a `500` naming it.
    ///
    /// ```
    /// # use sse_runtime::{Manager, SseHandler};
    /// let manager = Manager::new();
    /// let app: axum::Router = axum::Router::new().route(
    ///     "/sse/devices/{id}",
    ///     axum::routing::get(SseHandler::new(&manager).topic_template("devices/{id}")),
    /// );
    /// ```
    pub fn topic_template(mut self, template: impl Into<Arc<str>>) -> Self {
        self.topic = Some(TopicSource::Template(template.into()));
        self
    }

    /// Build a poller from the request; it is started only if this request creates the topic's
    /// broadcaster, so concurrent requests for one topic share one poller.
    ///
    /// The poller runs for every subscriber of its topic, so `factory` sees only what makes
    /// the topic: the method, URI and version, and the server-side extensions (those a layer
    /// such as `Extension` adds), never a subscriber's headers, cookies or address (see
    /// [`shared_view`]). For per-user data, make the topic per user and [guard](Self::guard)
    /// it.
    pub fn polling<P: PollingService>(
        mut self,
        factory: impl Fn(&Parts) -> P + Send + Sync + 'static,
    ) -> Self {
        self.polling = Some(Arc::new(move |parts| Arc::new(factory(parts))));
        self
    }

    /// Run `guard` on every request (reconnects included) before anything else: before any
    /// history is replayed and before a poller is started or joined. A refused request
    /// creates nothing and gets the guard's response; a guard that returns an expiry ends the
    /// stream then. See the [`guard` module](crate::guard) for the contract and an example.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use axum::extract::Query;
    /// use http::StatusCode;
    /// use sse_runtime::{Manager, SseHandler};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Key { key: String }
    ///
    /// async fn has_key(Query(q): Query<Key>) -> Result<(), StatusCode> {
    ///     if q.key == "sesame" { Ok(()) } else { Err(StatusCode::FORBIDDEN) }
    /// }
    ///
    /// let manager = Manager::new();
    /// let handler = SseHandler::new(&manager).topic("vault").guard(has_key);
    /// let (mut parts, ()) = http::Request::get("/vault?key=guess").body(()).unwrap().into_parts();
    /// assert_eq!(handler.respond(&mut parts).await.status(), StatusCode::FORBIDDEN);
    /// assert_eq!(manager.stats().topics, 0);
    /// assert_eq!(manager.stats().refused.guard, 1);
    /// # }
    /// ```
    pub fn guard<G: Guard<Args>, Args>(mut self, guard: G) -> Self {
        self.guard = Some(guard::erase(guard));
        self
    }

    /// Change detection for the topic (default: on when polled, off otherwise).
    pub fn change_detection(mut self, on: bool) -> Self {
        self.options = self.options.change_detection(on);
        self
    }

    /// How many events the topic keeps for resume, instead of the manager's
    /// [`history`](crate::manager::ManagerBuilder::history); applies to the topics this
    /// handler creates. The macros' `history = N` option.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use sse_runtime::{Manager, SseHandler};
    /// let manager = Manager::new();
    /// let ticker = SseHandler::new(&manager)
    ///     .topic("ticker")
    ///     .history(10_000)                        // a busy topic: keep more to resume from
    ///     .history_bytes(16 << 20)
    ///     .retention(Duration::from_secs(120));   // and for longer after its last subscriber
    /// let app: axum::Router = axum::Router::new().route("/sse/ticker", axum::routing::get(ticker));
    /// ```
    pub fn history(mut self, events: usize) -> Self {
        self.options = self.options.history(events);
        self
    }

    /// The most bytes of encoded events the topic keeps for resume, instead of the manager's
    /// [`history_bytes`](crate::manager::ManagerBuilder::history_bytes). The macros'
    /// `history_bytes = N` option.
    pub fn history_bytes(mut self, bytes: usize) -> Self {
        self.options = self.options.history_bytes(bytes);
        self
    }

    /// How long the topic's history outlives its last subscriber, instead of the manager's
    /// [`retention`](crate::manager::ManagerBuilder::retention). The macros'
    /// `retention = "60s"` option.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.options = self.options.retention(retention);
        self
    }

    /// Opens the stream for a request; what [`axum::handler::Handler::call`] does. A `HEAD`
    /// request gets the stream's headers only, and subscribes to nothing (see `open`).
    pub async fn respond(&self, parts: &mut Parts) -> Response {
        mark_client(&self.manager, parts);
        let expires = match &self.guard {
            Some(guard) => match guard::admit(&self.manager, guard(parts)).await {
                Ok(expires) => expires,
                Err(refused) => return refused,
            },
            None => None,
        };
        let topic = match &self.topic {
            Some(TopicSource::Fixed(topic)) => topic.to_string(),
            Some(TopicSource::Template(template)) => {
                let params = match RawPathParams::from_request_parts(parts, &()).await {
                    Ok(params) => params,
                    Err(rejection) => return rejection.into_response(),
                };
                match fill_template(template, &params) {
                    Ok(topic) => topic,
                    Err(missing) => {
                        tracing::error!(%template, %missing, "topic template placeholder not captured by the route");
                        return (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("topic template placeholder {{{missing}}} is not a path parameter of this route"),
                        )
                            .into_response();
                    }
                }
            }
            None => topic_of(parts),
        };
        let mut options = self.options.clone();
        if let Some(factory) = &self.polling {
            options = options.shared_polling(factory(&shared_view(parts)));
        }
        open(&self.manager, &topic, parts, options, expires)
    }
}

/// Sets the request's [`ClientAddr`] (from its `ConnectInfo<SocketAddr>` and the manager's
/// trusted proxies), for the guard and everything after it; once per request.
pub(crate) fn mark_client(manager: &Manager, parts: &mut Parts) {
    if parts.extensions.get::<ClientAddr>().is_none()
        && let Some(client) = client_of(manager, parts)
    {
        parts.extensions.insert(client);
    }
}

/// The request's [`ClientAddr`]: as marked, or worked out now; `None` without `ConnectInfo`.
fn client_of(manager: &Manager, parts: &Parts) -> Option<ClientAddr> {
    if let Some(client) = parts.extensions.get::<ClientAddr>() {
        return Some(*client);
    }
    let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
    Some(ClientAddr(manager.client_addr(peer.ip(), &parts.headers)))
}

/// Subscribes the request to `topic` and answers with the stream: `414` for an oversized topic,
/// `503` after shutdown or over a server-wide cap, `429` over the per-client cap (counted by
/// the request's [`ClientAddr`]). Resumes from the request's `Last-Event-ID`. A `HEAD` request gets the
/// headers only: it subscribes to nothing and starts no poller.
pub(crate) fn open(
    manager: &Manager,
    topic: &str,
    parts: &Parts,
    mut options: SubscribeOptions,
    expires: Option<tokio::time::Instant>,
) -> Response {
    if parts.method == Method::HEAD {
        return head_only();
    }
    if topic.len() > MAX_TOPIC_LEN {
        return (
            StatusCode::URI_TOO_LONG,
            format!("SSE topic longer than {MAX_TOPIC_LEN} bytes"),
        )
            .into_response();
    }
    if let Some(id) = last_event_id(&parts.headers, &parts.uri) {
        options = options.last_event_id(&id);
    }
    if let Some(ClientAddr(client)) = client_of(manager, parts) {
        options = options.client(client);
    }
    match manager.subscribe_with(topic, options) {
        // A topic of a multi-topic stream: its subscription goes to the claim, not to a
        // stream of its own.
        Ok(subscription) => match parts.extensions.get::<Claim>() {
            Some(claim) => {
                *claim.0.lock() = Some(Claimed {
                    subscription,
                    expires,
                });
                StatusCode::OK.into_response()
            }
            None => {
                let route = parts
                    .extensions
                    .get::<MatchedPath>()
                    .map(MatchedPath::as_str);
                SseStream::routed(subscription, route)
                    .ending_at(expires)
                    .into_response()
            }
        },
        Err(error) => Refused {
            error,
            how: manager.refusals(),
        }
        .answer(None),
    }
}

/// What a poller shared by every subscriber of a topic may see of the request that started
/// it: the method, URI and version, which make the topic, and the extensions that the server
/// side added (shared state from an `Extension` layer). Not the headers (so no cookies, no
/// `Authorization`) and not the peer address (`ConnectInfo`): those belong to one subscriber,
/// and the poller's results go to all of them.
///
/// Extensions that a middleware derives from the request (a decoded session, a user id) are
/// the starting subscriber's: a poller must not read them. Put what makes data per-user in
/// the path or query instead, and check with a [guard](SseHandler::guard) that the caller may
/// see it.
///
/// ```
/// let request = http::Request::get("/sse/inbox?folder=2")
///     .header("authorization", "Bearer alice")
///     .body(())
///     .unwrap();
/// let (parts, ()) = request.into_parts();
/// let shared = sse_runtime::handler::shared_view(&parts);
/// assert_eq!(shared.uri, "/sse/inbox?folder=2");
/// assert!(shared.headers.is_empty());
/// ```
pub fn shared_view(parts: &Parts) -> Parts {
    let (mut view, ()) = http::Request::new(()).into_parts();
    view.method = parts.method.clone();
    view.uri = parts.uri.clone();
    view.version = parts.version;
    view.extensions = parts.extensions.clone();
    view.extensions.remove::<ConnectInfo<SocketAddr>>();
    view.extensions.remove::<ClientAddr>();
    view.extensions.remove::<Claim>();
    view
}

/// Where a topic of a multi-topic stream is left by its route (see
/// [`MultiHandler`](crate::multi::MultiHandler)): a request that carries a claim gets its
/// subscription, and the guard's expiry, put here by [`open`], and an empty `200`, instead of
/// a stream of its own.
#[derive(Clone, Default)]
pub(crate) struct Claim(Arc<parking_lot::Mutex<Option<Claimed>>>);

/// What a route left in a [`Claim`]: the topic's subscription and when its guard's
/// credentials expire.
pub(crate) struct Claimed {
    pub(crate) subscription: Subscription,
    pub(crate) expires: Option<tokio::time::Instant>,
}

impl Claim {
    /// The subscription the route left, if it opened one.
    pub(crate) fn take(&self) -> Option<Claimed> {
        self.0.lock().take()
    }
}

/// The answer to `HEAD` on an SSE route: what a `GET` would get, without the stream.
pub(crate) fn head_only() -> Response {
    let mut response = Response::new(axum::body::Body::empty());
    frame::set_headers(response.headers_mut());
    response
}

impl<S: Send + Sync + 'static> axum::handler::Handler<(), S> for SseHandler {
    type Future = Pin<Box<dyn Future<Output = Response> + Send>>;

    fn call(self, request: Request, _state: S) -> Self::Future {
        let (mut parts, _body) = request.into_parts();
        Box::pin(async move { self.respond(&mut parts).await })
    }
}

/// Replaces each `{name}` of `template` with the path parameter `name`; `Err(name)` for a
/// placeholder without a parameter.
fn fill_template(template: &str, params: &RawPathParams) -> Result<String, String> {
    let mut topic = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map_or(rest.len(), |at| open + at);
        let name = &rest[open + 1..close.min(rest.len())];
        let value = params
            .iter()
            .find_map(|(key, value)| (key == name).then_some(value))
            .ok_or_else(|| name.to_owned())?;
        topic.push_str(&rest[..open]);
        topic.push_str(value);
        rest = rest.get(close + 1..).unwrap_or("");
    }
    topic.push_str(rest);
    Ok(topic)
}

impl fmt::Debug for SseHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseHandler")
            .field("topic", &self.topic)
            .field("polling", &self.polling.is_some())
            .finish()
    }
}

/// The topic a request subscribes to by default: its path, plus `?` and its query when it has
/// one, both in a canonical form, so that URLs a server reads alike are one topic (and one
/// poller), not one per spelling. Uses the URI before any [`Router::nest`](axum::Router::nest)
/// stripped a prefix, so the topic is the path the client asked for, never a route template.
/// See [`topic_of_uri`] for the canonical form.
///
/// ```
/// let request = http::Request::get("/api/v1/device/7/sse?offset=10").body(()).unwrap();
/// let (parts, _) = request.into_parts();
/// assert_eq!(sse_runtime::handler::topic_of(&parts), "/api/v1/device/7/sse?offset=10");
/// ```
pub fn topic_of(parts: &Parts) -> String {
    topic_of_uri(original_uri(parts))
}

/// [`topic_of`] for a bare [`Uri`]:
///
/// - the path percent-decoded, as the Go package this ports derives it (`/a%2Fb` is `/a/b`),
///   except `%3F`, which stays encoded so that no path reads as a query;
/// - the query's parameters decoded (`%31` is `1`, `+` a space), empty ones dropped (a
///   trailing `&`), sorted by name (values of one name keep their order), and encoded again
///   with `%`, `&`, `=`, `+`, `#`, spaces, controls and non-ASCII percent-encoded; a parameter
///   with an empty value is written as its name alone;
/// - the `last_event_id` parameter (the resume fallback for clients that cannot set headers)
///   left out: a resuming client rejoins the topic it left.
///
/// What the server reads differently stays apart: `?pid=01` and `?pid=1` are two topics (only
/// the poll function knows they mean one process), as are `?a=1&pid=1` and `?pid=1`. The caps
/// on live topics and pollers (see [`ManagerBuilder`](crate::manager::ManagerBuilder)) bound
/// how many spellings a client can make the server keep.
///
/// ```
/// use sse_runtime::handler::topic_of_uri;
///
/// let topic = |uri: &str| topic_of_uri(&uri.parse().unwrap());
/// assert_eq!(topic("/sse/process?pid=1"), "/sse/process?pid=1");
/// for same in ["?pid=%31", "?pid=1&", "?&pid=1", "?pid=1&last_event_id=5-3"] {
///     assert_eq!(topic(&format!("/sse/process{same}")), "/sse/process?pid=1");
/// }
/// assert_eq!(topic("/feed?b=2&a=1&a=0"), "/feed?a=1&a=0&b=2");
/// assert_eq!(topic("/feed?q=a+b&tags=x,y"), "/feed?q=a%20b&tags=x,y");
/// assert_eq!(topic("/files/a%2Fb"), "/files/a/b");
/// assert_eq!(topic("/files/a%3Fb=1"), "/files/a%3Fb=1");
/// assert_eq!(topic("/feed?last_event_id=5-3"), "/feed");
/// ```
pub fn topic_of_uri(uri: &Uri) -> String {
    canonical(uri, |_| true)
}

/// [`topic_of`] with only the query parameters named in `keys` (those a polled route's
/// `Query<T>` reads; see `query_keys`).
pub(crate) fn topic_reading(parts: &Parts, keys: &std::collections::BTreeSet<String>) -> String {
    canonical(original_uri(parts), |name| keys.contains(name))
}

/// The URI the client asked for, before any [`Router::nest`](axum::Router::nest) stripped a
/// prefix.
pub(crate) fn original_uri(parts: &Parts) -> &Uri {
    parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |original| &original.0)
}

/// The canonical form of [`topic_of_uri`], with the query parameters whose name `keep` takes.
fn canonical(uri: &Uri, keep: impl Fn(&str) -> bool) -> String {
    let raw_path = uri.path();
    let mut path = percent_encoding::percent_decode_str(raw_path)
        .decode_utf8()
        .unwrap_or(std::borrow::Cow::Borrowed(raw_path));
    if path.contains('?') {
        // An encoded `?` stays encoded: the path never runs into the query.
        path = path.replace('?', "%3F").into();
    }
    let Some(query) = uri.query() else {
        return path.into_owned();
    };
    let mut pairs: Vec<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> =
        form_urlencoded::parse(query.as_bytes())
            .filter(|(name, _)| name != LAST_EVENT_ID_QUERY && keep(name))
            .collect();
    if pairs.is_empty() {
        return path.into_owned();
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut topic = String::with_capacity(path.len() + query.len() + 1);
    topic.push_str(&path);
    for (i, (name, value)) in pairs.iter().enumerate() {
        topic.push(if i == 0 { '?' } else { '&' });
        topic.extend(percent_encoding::utf8_percent_encode(name, QUERY_ESCAPES));
        if !value.is_empty() {
            topic.push('=');
            topic.extend(percent_encoding::utf8_percent_encode(value, QUERY_ESCAPES));
        }
    }
    topic
}

/// What the canonical query escapes: its own delimiters, `%`, spaces and controls (non-ASCII
/// is always escaped).
const QUERY_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'=');

/// The request's `Last-Event-ID`: the header, or the `last_event_id` query parameter.
pub(crate) fn last_event_id(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    if let Some(value) = headers.get("last-event-id") {
        // Not visible ASCII: kept as is, so it is treated as malformed (a reset), not ignored.
        return Some(value.to_str().unwrap_or("\u{fffd}").to_owned());
    }
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == LAST_EVENT_ID_QUERY).then(|| value.to_owned())
    })
}

/// Extracts the request's default topic ([`topic_of`]) in a custom handler.
///
/// ```
/// use sse_runtime::handler::RequestTopic;
///
/// async fn handler(RequestTopic(topic): RequestTopic) -> String {
///     topic
/// }
/// # let _: axum::routing::MethodRouter = axum::routing::get(handler);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestTopic(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestTopic {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Self(topic_of(parts)))
    }
}
