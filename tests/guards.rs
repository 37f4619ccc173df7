//! Spec: guards and credential isolation (issue 13).
//!
//! - `guard = f` on `#[sse_topic]` and `#[sse_poll]`, and `SseHandler::guard(f)`: `f` is an
//!   async fn of axum extractors returning `Result<(), impl IntoResponse>` or an expiry. It runs
//!   on every request, reconnects included, before any history is replayed and before a
//!   poller is started or joined; a refused request gets the guard's response, creates nothing
//!   and is counted in `Stats::refused.guard`.
//! - An expiry ends the stream at that time; a reconnect with expired credentials gets `403`
//!   and creates nothing.
//! - A poller shared by every subscriber of its URL never runs with one subscriber's
//!   credentials: an extractor that needs the request's headers is a `500` naming it (never
//!   Alice's data served to Bob); per-user data is a per-user topic (the user in the path)
//!   behind a guard that checks the caller is that user.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query};
use axum::routing::get;
use http::StatusCode;
use http::request::Parts;
use serde::{Deserialize, Serialize};
use sse_integration_tests::{PATIENCE, SseClient, TestServer, has_key};
use sse_runtime::{Manager, PollError, SseHandler, sse_poll, sse_topic};

/// The caller named by `Authorization: Bearer <name>` (a stand-in for a verified token).
struct Bearer(String);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|name| Self(name.to_owned()))
            .ok_or((StatusCode::UNAUTHORIZED, "no bearer token"))
    }
}

#[sse_topic("vault", guard = has_key)]
#[derive(Serialize)]
struct Treasure(u32);

static GUARDED_POLLS: AtomicUsize = AtomicUsize::new(0);

#[sse_poll(interval = "50ms", guard = has_key)]
async fn guarded_poll() -> Result<usize, PollError> {
    Ok(GUARDED_POLLS.fetch_add(1, Ordering::SeqCst))
}

/// The leak of issue 13: the poller's argument reads the caller's `Authorization`.
#[sse_poll(path = "/sse/private")]
async fn private(Bearer(user): Bearer) -> Result<String, PollError> {
    Ok(format!("private data of {user}"))
}

/// The documented way: the user is in the path (so each user has a topic) and the guard
/// checks that the caller is that user.
async fn is_user(Path(user): Path<String>, Bearer(caller): Bearer) -> Result<(), StatusCode> {
    if user == caller {
        Ok(())
    } else {
        Err(StatusCode::FORBIDDEN)
    }
}

#[sse_poll(path = "/sse/inbox/{user}", guard = is_user)]
async fn inbox(Path(user): Path<String>) -> Result<String, PollError> {
    Ok(format!("private data of {user}"))
}

#[derive(Deserialize)]
struct Token {
    exp: u64,
}

/// Admits until the token's `exp` (milliseconds since 1970), like a JWT's deadline.
async fn until_exp(Query(token): Query<Token>) -> Result<SystemTime, StatusCode> {
    Ok(UNIX_EPOCH + Duration::from_millis(token.exp))
}

fn app(manager: &Manager) -> Router {
    sse_runtime::routes::router_with(manager).route(
        "/sse/expiring",
        get(SseHandler::new(manager).topic("expiring").guard(until_exp)),
    )
}

async fn server() -> (Manager, TestServer) {
    let manager = Manager::new();
    let server = TestServer::start_direct(app(&manager), Duration::from_secs(10)).await;
    (manager, server)
}

async fn fetch(url: &str, bearer: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url);
    if let Some(name) = bearer {
        request = request.header("authorization", format!("Bearer {name}"));
    }
    tokio::time::timeout(PATIENCE, request.send())
        .await
        .expect("answer in time")
        .expect("request")
}

/// Connects with a bearer token and returns the first event's data.
async fn first_data(url: &str, bearer: &str) -> String {
    let response = fetch(url, Some(bearer)).await;
    assert_eq!(response.status(), 200, "{url}");
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    use futures_util::StreamExt;
    while !seen.contains("data:") || !seen[seen.find("data:").unwrap()..].contains('\n') {
        let chunk = tokio::time::timeout(PATIENCE, body.next())
            .await
            .expect("event in time")
            .expect("open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let line = seen.lines().find(|l| l.starts_with("data:")).unwrap();
    line["data:".len()..].trim().to_owned()
}

#[tokio::test]
async fn a_topic_guard_refuses_with_its_response_and_creates_nothing() {
    let (manager, server) = server().await;
    let refused = fetch(&server.url("/sse/vault?key=guess"), None).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.text().await.unwrap(), "wrong key");
    let head = reqwest::Client::new()
        .head(server.url("/sse/vault"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 403, "HEAD is guarded too");
    let stats = manager.stats();
    assert_eq!((stats.topics, stats.subscribers), (0, 0));
    assert_eq!(stats.refused.guard, 2);

    let mut client = SseClient::connect(&server.url("/sse/vault?key=sesame")).await;
    assert_eq!(client.status, 200);
    tokio::time::timeout(PATIENCE, manager.wait_until(|s| s.subscribers == 1))
        .await
        .unwrap();
    publish_treasure_to(&manager, &Treasure(7));
    assert_eq!(client.event().await.data, "7");
}

#[tokio::test]
async fn a_poll_guard_runs_before_the_poller_starts() {
    let (manager, server) = server().await;
    let refused = fetch(&server.url("/sse/guarded_poll"), None).await;
    assert_eq!(refused.status(), 403);
    let stats = manager.stats();
    assert_eq!((stats.topics, stats.pollers_started), (0, 0));
    assert_eq!(GUARDED_POLLS.load(Ordering::SeqCst), 0, "no poll ran");
    assert_eq!(stats.refused.guard, 1);

    let mut client = SseClient::connect(&server.url("/sse/guarded_poll?key=sesame")).await;
    assert_eq!(client.status, 200);
    client.event().await;
    assert_eq!(manager.stats().pollers_started, 1);
}

#[tokio::test]
async fn a_reconnect_meets_the_guard_before_any_history_is_replayed() {
    let (manager, server) = server().await;
    let mut client = SseClient::connect(&server.url("/sse/vault?key=sesame")).await;
    tokio::time::timeout(PATIENCE, manager.wait_until(|s| s.subscribers == 1))
        .await
        .unwrap();
    publish_treasure_to(&manager, &Treasure(1));
    let first = client.event().await;
    publish_treasure_to(&manager, &Treasure(2));
    client.event().await;
    drop(client);
    tokio::time::timeout(PATIENCE, manager.wait_until(|s| s.subscribers == 0))
        .await
        .unwrap();

    // Resuming without the key: refused, nothing replayed, the history stays retained.
    let resume = reqwest::Client::new()
        .get(server.url("/sse/vault?key=guess"))
        .header("last-event-id", &first.id)
        .send()
        .await
        .unwrap();
    assert_eq!(resume.status(), 403);
    assert_eq!(resume.text().await.unwrap(), "wrong key");
    let stats = manager.stats();
    assert_eq!((stats.topics, stats.retained), (0, 1));

    // With the key, the same resume replays what was missed.
    let mut back =
        SseClient::connect_with(&server.url("/sse/vault?key=sesame"), Some(&first.id)).await;
    assert_eq!(back.event().await.data, "2");
}

#[tokio::test]
async fn an_expiring_guard_ends_the_stream_then_and_refuses_the_expired_reconnect() {
    let (manager, server) = server().await;
    let exp = SystemTime::now() + Duration::from_millis(1500);
    let exp_ms = exp.duration_since(UNIX_EPOCH).unwrap().as_millis();
    let url = server.url(&format!("/sse/expiring?exp={exp_ms}"));
    let started = Instant::now();
    let mut client = SseClient::connect(&url).await;
    assert_eq!(client.status, 200);
    client.until_end().await;
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_millis(1300) && lasted < Duration::from_secs(5),
        "the stream ended at the expiry, after {lasted:?}"
    );
    tokio::time::timeout(PATIENCE, manager.wait_until(|s| s.subscribers == 0))
        .await
        .unwrap();

    // The browser's reconnect carries the same, now expired, credentials.
    let again = fetch(&url, None).await;
    assert_eq!(again.status(), 403);
    assert!(again.text().await.unwrap().contains("credentials expired"));
    let stats = manager.stats();
    assert_eq!((stats.topics, stats.subscribers), (0, 0));
    assert_eq!(stats.refused.guard, 1);
}

#[tokio::test]
async fn a_shared_poller_never_serves_one_users_data_to_another() {
    let (manager, server) = server().await;
    // Alice first: before the fix her request built the shared poller, and Bob, on the same
    // URL, received "private data of alice".
    let alice = fetch(&server.url("/sse/private"), Some("alice")).await;
    let bob = fetch(&server.url("/sse/private"), Some("bob")).await;
    for response in [alice, bob] {
        assert_eq!(response.status(), 500);
        let message = response.text().await.unwrap();
        assert!(message.contains("`private`"), "{message}");
        assert!(message.contains("Bearer"), "names the extractor: {message}");
        assert!(message.contains("guard"), "says what to do: {message}");
        assert!(!message.contains("alice"), "{message}");
    }
    let stats = manager.stats();
    assert_eq!((stats.topics, stats.pollers_started), (0, 0));

    // The per-user topic behind a guard: each user reads their own, nobody else's.
    assert_eq!(
        first_data(&server.url("/sse/inbox/alice"), "alice").await,
        "\"private data of alice\""
    );
    assert_eq!(
        fetch(&server.url("/sse/inbox/alice"), Some("bob"))
            .await
            .status(),
        403
    );
    assert_eq!(
        first_data(&server.url("/sse/inbox/bob"), "bob").await,
        "\"private data of bob\""
    );
}

#[tokio::test]
async fn a_hand_written_poller_factory_sees_no_subscriber_headers() {
    let manager = Manager::new();
    let app = Router::new().route(
        "/sse/whoami",
        get(SseHandler::new(&manager).polling(|parts| {
            // Whatever a subscriber sent, the factory of a shared poller never sees it.
            let caller = parts
                .headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_else(|| "nobody".to_owned());
            sse_runtime::polling::Polling::new(move |_| {
                let caller = caller.clone();
                async move { Ok::<_, PollError>(caller) }
            })
        })),
    );
    let server = TestServer::start_direct(app, Duration::from_secs(10)).await;
    assert_eq!(
        first_data(&server.url("/sse/whoami"), "alice").await,
        "\"nobody\""
    );
}
