//! The HTTP side of a subscription: a response body that streams its frames, with heartbeats,
//! and the [`Takeover`] slot through which [`serve`](crate::serve()) writes it itself.
//!
//! The stream is where a subscription meets the wire: it turns how the subscription joined
//! into a `reset` event or the client's position, adds the `retry:` hint and the heartbeats,
//! and batches writes.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::config::{MIN_INTERVAL, StreamSettings};
use crate::frame;
use crate::log::Chunk;
use crate::multiplex::Multiplex;
use crate::subscription::{EndReason, Joined, ManagerHandle, Subscription};
use crate::telemetry::{self, Disconnect};

pin_project! {
    /// A [`Subscription`] as an SSE response body.
    ///
    /// As a response it carries the SSE headers (see [`frame::set_headers`]). The body starts
    /// with a `retry:` hint (the manager's, plus up to half of it as jitter), then where the
    /// client is: a `reset` event if its `Last-Event-ID` could not be resumed from, or, on a live
    /// start, an `id:`-only frame with the topic's position (`<epoch>-0` before its first
    /// event), which a client keeps as its last event id without dispatching anything, so that
    /// a reconnect misses nothing even before the first event. Then the topic's events; when nothing has been
    /// sent for a heartbeat interval it sends the comment frame `:\n\n`. It ends when the
    /// subscription ends (manager shutdown, or the subscriber fell too far behind).
    ///
    /// ```
    /// use axum::{Router, routing::get, response::IntoResponse};
    /// use sse_runtime::{Manager, SseStream};
    ///
    /// async fn alarms(manager: axum::extract::State<Manager>) -> axum::response::Response {
    ///     match manager.subscribe("alarms") {
    ///         Ok(sub) => SseStream::new(sub, manager.heartbeat()).into_response(),
    ///         Err(e) => (http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    ///     }
    /// }
    /// let app: Router = Router::new().route("/alarms", get(alarms)).with_state(Manager::new());
    /// ```
    pub struct SseStream {
        source: Source,
        // Whether the preamble went out. It is made on the first poll, not kept from the start:
        // an idle stream's size is every connection's cost.
        started: bool,
        // Whether how the subscription joined is known and, if it was a reset, was sent. With a
        // backplane it may become known only after the preamble (once the topic has synced).
        announced: bool,
        heartbeat_every: Duration,
        batch: Duration,
        // When the stream ends (a guard's expiry); the heartbeat timer never sleeps past it.
        expires: Option<Instant>,
        last_write: Instant,
        // The heartbeat timer; while `holding`, it times the end of a write-batching window.
        #[pin]
        heartbeat: Sleep,
        holding: bool,
        finished: bool,
        // Why it ended, once known here; a stream dropped without one lost its client.
        end: Option<Disconnect>,
        // Its route's metric handles (zero-sized without the `metrics` feature).
        route: telemetry::Handle,
        // One span per stream: route, topic (query redacted), client address (behind a trusted
        // proxy, the forwarded one), resume outcome, end reason.
        span: tracing::Span,
    }

    impl PinnedDrop for SseStream {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let reason = this.end.unwrap_or(Disconnect::ClientGone);
            this.route.closed(reason);
            this.span.record("end", reason.as_str());
            tracing::debug!(parent: &*this.span, reason = reason.as_str(), "stream ended");
        }
    }
}

impl SseStream {
    /// Streams `subscription`, with a heartbeat after `heartbeat` of silence (at least
    /// [`MIN_INTERVAL`](crate::config::MIN_INTERVAL)); the other settings are its manager's.
    /// [`SseStream::from`] takes the manager's heartbeat too.
    pub fn new(subscription: Subscription, heartbeat: Duration) -> Self {
        let settings = StreamSettings {
            heartbeat: heartbeat.max(MIN_INTERVAL),
            ..subscription.stream_settings()
        };
        Self::with_settings(Source::One(subscription), settings, None)
    }

    /// Streams `subscription` with its manager's settings, as the response of the route
    /// `route` (the `MatchedPath` template), for metrics and the stream's span.
    pub(crate) fn routed(subscription: Subscription, route: Option<&str>) -> Self {
        let settings = subscription.stream_settings();
        Self::with_settings(Source::One(subscription), settings, route)
    }

    /// Streams several topics as one (see the [`multiplex`](crate::multiplex) module), with the
    /// first one's manager's settings, as the response of the route `route`.
    pub(crate) fn multiplexed(topics: Multiplex, route: Option<&str>) -> Self {
        let settings = topics.first().stream_settings();
        Self::with_settings(Source::Many(topics), settings, route)
    }

    fn with_settings(source: Source, settings: StreamSettings, route: Option<&str>) -> Self {
        let now = Instant::now();
        let topic = match &source {
            Source::One(subscription) => telemetry::redacted(subscription.topic()),
            Source::Many(topics) => topics
                .labels()
                .map(telemetry::redacted)
                .collect::<Vec<_>>()
                .join(" ")
                .into(),
        };
        let span = tracing::info_span!(
            "sse_stream",
            route = route.unwrap_or("other"),
            topic = %topic,
            client = tracing::field::Empty,
            resume = tracing::field::Empty,
            end = tracing::field::Empty,
        );
        if let Some(client) = source.first().client() {
            span.record("client", tracing::field::display(client));
        }
        let handle = telemetry::route(route);
        handle.opened();
        Self {
            source,
            started: false,
            announced: false,
            heartbeat_every: settings.heartbeat,
            batch: settings.write_batch,
            expires: None,
            last_write: now,
            heartbeat: tokio::time::sleep_until(now + settings.heartbeat),
            holding: false,
            finished: false,
            end: None,
            route: handle,
            span,
        }
    }

    /// Records that writing the stream failed with `error`: a write deadline that passed
    /// (`TimedOut`, from [`WriteDeadline`](crate::WriteDeadline)) or a client gone.
    pub(crate) fn write_failed(self: Pin<&mut Self>, error: &std::io::Error) {
        let end = self.project().end;
        if end.is_none() && error.kind() == std::io::ErrorKind::TimedOut {
            *end = Some(Disconnect::WriteDeadline);
        }
    }

    /// The subscription being streamed (of a multi-topic stream, the first topic's).
    pub fn subscription(&self) -> &Subscription {
        self.source.first()
    }

    /// Ends the stream at `at` (credentials that expire then), if given.
    pub(crate) fn ending_at(mut self, at: Option<Instant>) -> Self {
        if let Some(at) = at {
            self.expires = Some(at);
            let first = (self.last_write + self.heartbeat_every).min(at);
            self.heartbeat = tokio::time::sleep_until(first);
        }
        self
    }
}

impl From<Subscription> for SseStream {
    /// Streams `subscription` with its manager's settings.
    fn from(subscription: Subscription) -> Self {
        let settings = subscription.stream_settings();
        Self::with_settings(Source::One(subscription), settings, None)
    }
}

/// What a stream reads: one subscription, or several topics read as one.
enum Source {
    One(Subscription),
    Many(Multiplex),
}

impl Source {
    fn first(&self) -> &Subscription {
        match self {
            Self::One(subscription) => subscription,
            Self::Many(topics) => topics.first(),
        }
    }

    /// How the stream joined. A multi-topic stream announces each topic's reset among its
    /// events, so as a whole it is live from the start.
    fn joined(&self) -> Option<Joined> {
        match self {
            Self::One(subscription) => subscription.joined(),
            Self::Many(_) => Some(Joined::Live),
        }
    }

    fn poll_joined(&mut self, cx: &Context<'_>) -> Poll<Option<Joined>> {
        match self {
            Self::One(subscription) => subscription.poll_joined(cx),
            Self::Many(_) => Poll::Ready(Some(Joined::Live)),
        }
    }

    fn has_pending(&self, cx: &Context<'_>) -> bool {
        match self {
            Self::One(subscription) => subscription.has_pending(cx),
            Self::Many(topics) => topics.has_pending(cx),
        }
    }

    /// The next frames; with `append_to`, appended to it (see [`Log::chunk`]).
    ///
    /// [`Log::chunk`]: crate::log::Log::chunk
    fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
        route: &telemetry::Handle,
        span: &tracing::Span,
        append_to: Option<&mut Vec<u8>>,
    ) -> Poll<Option<Chunk>> {
        match self {
            Self::One(subscription) => subscription.poll_chunk_to(cx, append_to),
            Self::Many(topics) => {
                topics.poll_chunk(cx, |joined| announce(route, span, joined), append_to)
            }
        }
    }

    fn end_reason(&self) -> Option<EndReason> {
        match self {
            Self::One(subscription) => subscription.end_reason(),
            Self::Many(topics) => topics.end_reason(),
        }
    }
}

/// Records how a stream joined: a resume (replayed or reset, with why) on its route's
/// metrics and its span.
fn announce(route: &telemetry::Handle, span: &tracing::Span, joined: Option<Joined>) {
    let outcome = match joined {
        Some(Joined::Resumed) => {
            route.resumed(None);
            "replayed"
        }
        Some(Joined::Reset { reason, .. }) => {
            route.resumed(Some(reason.as_str()));
            reason.as_str()
        }
        Some(Joined::Live) | None => return,
    };
    span.record("resume", outcome);
}

/// What a stream sends before any event: the `retry:` hint (plus up to half of it as jitter, so
/// the clients of a restarting server do not all come back in the same instant), then how the
/// subscription joined (when that is already known; see [`announcement`]).
fn preamble(source: &Source, retry: Duration) -> Bytes {
    let retry = frame::retry(frame::jittered_millis(retry, retry / 2));
    match announcement(source, source.joined()) {
        Some(announced) => [retry, announced].concat().into(),
        None => retry,
    }
}

/// The `retry:` frame a stream ended by a shutdown closes with: the retry hint plus a random
/// part of the shutdown window, so the clients of a restarting server come back spread out.
fn comeback(settings: StreamSettings) -> Bytes {
    frame::retry(frame::jittered_millis(
        settings.retry,
        settings.shutdown_spread,
    ))
}

/// The frame that tells the client how it joined, and so where it is: a `reset` event (whose
/// id is the position it goes on from), or, for a live start, the position alone (an `id:`
/// field and no data: a client takes it as its last event id and dispatches nothing), so that
/// a client cut before the topic's next event resumes from here instead of missing what was
/// published while it was away. A resumed client already holds its position. A multi-topic
/// stream announces its topics among its events ([`Multiplex`]).
fn announcement(source: &Source, joined: Option<Joined>) -> Option<Bytes> {
    match (joined?, source) {
        (
            Joined::Reset {
                reason,
                continue_from,
            },
            _,
        ) => Some(frame::reset(reason.as_str(), continue_from)),
        (Joined::Live, Source::One(subscription)) => subscription.position().map(frame::position),
        _ => None,
    }
}

/// `data`, or, with `append_to`, nothing: `data` is appended to it instead.
fn emit(data: Bytes, append_to: Option<&mut Vec<u8>>) -> Bytes {
    match append_to {
        Some(buf) => {
            buf.extend_from_slice(&data);
            Bytes::new()
        }
        None => data,
    }
}

impl SseStream {
    /// The stream's next bytes, as [`Body::poll_frame`] yields them; with `append_to`, they are
    /// appended to that buffer instead (and the returned bytes are empty), so that a writer
    /// that reuses its buffer allocates nothing per event, however many it reads at once.
    /// [`serve`](crate::serve()) writes streams this way.
    pub(crate) fn poll_data(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut append_to: Option<&mut Vec<u8>>,
    ) -> Poll<Option<Bytes>> {
        let mut this = self.project();
        if *this.finished {
            return Poll::Ready(None);
        }
        if !*this.started {
            *this.started = true;
            *this.announced = this.source.joined().is_some();
            announce(this.route, this.span, this.source.joined());
            tracing::debug!(parent: &*this.span, joined = ?this.source.joined(), "stream opened");
            let retry = this.source.first().stream_settings().retry;
            return Poll::Ready(Some(emit(preamble(this.source, retry), append_to)));
        }
        // Nothing is read before the client is told how it joined: a reset goes first.
        let mut waiting = false;
        if !*this.announced {
            match this.source.poll_joined(cx) {
                Poll::Ready(joined) => {
                    *this.announced = true;
                    announce(this.route, this.span, joined);
                    if let Some(announced) = announcement(this.source, joined) {
                        return Poll::Ready(Some(emit(announced, append_to)));
                    }
                }
                Poll::Pending => waiting = true,
            }
        }
        // Write batching: events that arrive within `batch` of the previous write wait for the
        // end of that window and go out together, one write instead of several. A stream that
        // has been quiet for `batch` writes at once, so only a busy stream waits, never longer.
        if !this.batch.is_zero() && !*this.holding && this.source.has_pending(cx) {
            let ready_at = *this.last_write + *this.batch;
            if ready_at > Instant::now() {
                *this.holding = true;
                this.heartbeat.as_mut().reset(ready_at);
            }
        }
        if *this.holding {
            ready!(this.heartbeat.as_mut().poll(cx));
            *this.holding = false;
        }
        let appended_before = append_to.as_ref().map_or(0, |buf| buf.len());
        match if waiting {
            Poll::Pending
        } else {
            let append_to = append_to.as_deref_mut();
            this.source.poll_chunk(cx, this.route, this.span, append_to)
        } {
            Poll::Ready(Some(chunk)) => {
                // The timer is not reset per event (that would cost a timer-wheel update per
                // event per subscriber); when it fires, it checks the time of the last write.
                *this.last_write = Instant::now();
                let appended = append_to.map_or(0, |buf| buf.len() - appended_before);
                let bytes = chunk.bytes.len() + appended;
                this.route.wrote(chunk.events, bytes, &chunk.oldest);
                return Poll::Ready(Some(chunk.bytes));
            }
            Poll::Ready(None) => {
                *this.finished = true;
                let end = match this.source.end_reason() {
                    Some(EndReason::Lagged) => Disconnect::Lagged,
                    Some(EndReason::ShutDown) => Disconnect::ShutDown,
                    Some(EndReason::Closed) => Disconnect::Closed,
                    Some(EndReason::Finished) => Disconnect::Finished,
                    Some(EndReason::Unsubscribed) | None => Disconnect::ClientGone,
                };
                *this.end = Some(end);
                if end == Disconnect::Finished && matches!(this.source, Source::One(_)) {
                    // The last frame: the topic is done (a client closes its EventSource on it,
                    // else it reconnects after `retry:`). A multi-topic stream has sent one
                    // `<topic>#end` per topic already.
                    return Poll::Ready(Some(emit(frame::finished(), append_to)));
                }
                if end == Disconnect::ShutDown {
                    // The last frame: when to come back, spread over the shutdown window.
                    let settings = this.source.first().stream_settings();
                    return Poll::Ready(Some(emit(comeback(settings), append_to)));
                }
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        loop {
            ready!(this.heartbeat.as_mut().poll(cx));
            let now = Instant::now();
            if this.expires.is_some_and(|at| at <= now) {
                *this.finished = true;
                *this.end = Some(Disconnect::Expired);
                return Poll::Ready(None);
            }
            let wake = |due: Instant| this.expires.map_or(due, |at| due.min(at));
            let due = *this.last_write + *this.heartbeat_every;
            if due > now {
                this.heartbeat.as_mut().reset(wake(due));
                continue;
            }
            *this.last_write = now;
            this.heartbeat
                .as_mut()
                .reset(wake(now + *this.heartbeat_every));
            return Poll::Ready(Some(emit(frame::heartbeat(), append_to)));
        }
    }
}

impl Body for SseStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.poll_data(cx, None)
            .map(|data| data.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl IntoResponse for SseStream {
    /// The SSE headers and the stream as body. [`serve`](crate::serve()) takes the stream over
    /// and writes it to the socket itself; any other server polls the body.
    fn into_response(self) -> Response {
        let takeover = Takeover::new(self);
        let body = TakeoverBody {
            slot: Some(takeover.clone()),
            stream: None,
        };
        let mut response = Response::new(axum::body::Body::new(body));
        frame::set_headers(response.headers_mut());
        response.extensions_mut().insert(takeover);
        response
    }
}

/// The body of an [`SseStream`] response: takes the stream from the shared slot on first poll.
struct TakeoverBody {
    slot: Option<Takeover>,
    stream: Option<Pin<Box<SseStream>>>,
}

impl Body for TakeoverBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(slot) = self.slot.take() {
            self.stream = slot.take();
        }
        match self.stream.as_mut() {
            Some(stream) => stream.as_mut().poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.slot.is_none() && self.stream.as_ref().is_none_or(|s| s.is_end_stream())
    }
}

/// Where an [`SseStream`] waits for [`serve`] to take it over; under any other server its body
/// takes it on first poll. (Shared, because the stream must live in the body for those.)
#[derive(Clone)]
pub(crate) struct Takeover(Arc<Mutex<Option<Pin<Box<SseStream>>>>>);

impl Takeover {
    pub(crate) fn new(stream: SseStream) -> Self {
        Self(Arc::new(Mutex::new(Some(Box::pin(stream)))))
    }

    pub(crate) fn take(&self) -> Option<Pin<Box<SseStream>>> {
        self.0.lock().take()
    }

    /// The manager of the stream waiting here, if it is still here.
    pub(crate) fn manager(&self) -> Option<ManagerHandle> {
        self.0
            .lock()
            .as_ref()
            .map(|stream| stream.subscription().manager_handle())
    }
}

/// The managers of the streams a server has served: what its graceful shutdown shuts down, so
/// that no stream holds the server open after its signal (one entry per manager).
#[derive(Clone, Default)]
pub(crate) struct Served(Arc<Mutex<Vec<ManagerHandle>>>);

impl Served {
    /// Notes the manager of a stream the server is about to write (once per stream).
    pub(crate) fn note(&self, manager: ManagerHandle) {
        let mut served = self.0.lock();
        if !served.iter().any(|known| known.same(&manager)) {
            served.retain(|known| !known.is_done());
            served.push(manager);
        }
    }

    /// Shuts down every manager noted: their streams end, with when to come back.
    pub(crate) fn shut_down(&self) {
        for manager in std::mem::take(&mut *self.0.lock()) {
            manager.shutdown();
        }
    }
}
