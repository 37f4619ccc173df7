//! Spec: caps on what clients can make a manager create (issue 13).
//!
//! - Over a server-wide cap (streams, subscribers of one topic, live topics, running pollers)
//!   a request is refused as `503`, over the per-client cap as `429`: by default a `200` event
//!   stream a browser comes back from (`Retry-After`, a jittered `retry:`, one `refused` event
//!   with the status, the reason and the delay, then its end); with `RefusalAnswer::Status`
//!   that status itself, with `Retry-After` and the reason as text. The refusal is counted in `Stats::refused` and creates nothing: no
//!   topic, no poller, no history.
//! - Once the clients leave, every count is back to zero and new clients are served.
//! - A poller lingers after its last subscriber: a client that connects and closes in a loop
//!   starts it once and polls at its own rate, not once per connection.
//!
//! Everything runs over real HTTP on loopback, under `sse_runtime::serve`, which gives
//! handlers the peer address; clients take distinct addresses of 127.0.0.0/8.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use sse_integration_tests::{PATIENCE, RawClient, SseClient, TestServer};
use sse_runtime::stats::Stats;
use sse_runtime::subscription::RefusalAnswer;
use sse_runtime::{Manager, PollError, SseHandler, polling::Polling};

const ALICE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const BOB: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// `/t/{name}`: an event-driven topic per name; `/p/{name}`: a polled one, every 100 ms, whose
/// polls are counted in `polls`.
fn app(manager: &Manager, polls: &Arc<AtomicU64>) -> Router {
    let polls = polls.clone();
    Router::new()
        .route(
            "/t/{name}",
            get(SseHandler::new(manager).topic_template("t/{name}")),
        )
        .route(
            "/p/{name}",
            get(SseHandler::new(manager)
                .topic_template("p/{name}")
                .polling(move |_| {
                    let polls = polls.clone();
                    Polling::new(move |_| {
                        let n = polls.fetch_add(1, Ordering::SeqCst);
                        async move { Ok::<_, PollError>(n) }
                    })
                    .interval(Duration::from_millis(100))
                })),
        )
}

async fn serve(manager: &Manager) -> (TestServer, Arc<AtomicU64>) {
    let polls = Arc::new(AtomicU64::new(0));
    let server = TestServer::start_direct(app(manager, &polls), Duration::from_secs(10)).await;
    (server, polls)
}

/// Opens a stream from `from` and waits for its first bytes (the `retry:` hint), so the
/// subscription exists when this returns.
async fn open(server: &TestServer, from: Ipv4Addr, path: &str) -> RawClient {
    let mut client = RawClient::get_from(from, server.addr, path).await;
    assert_eq!(client.status(), 200, "{path}: {}", client.head);
    client.read_until_contains(b"retry:").await;
    client
}

/// A request that must be refused as `status` with `reason`, answered the default way: a `200`
/// event stream with `Retry-After`, a jittered `retry:` and one `refused` event, then its end.
async fn refused(server: &TestServer, from: Ipv4Addr, path: &str, status: u64, reason: &str) {
    let mut client = RawClient::get_from(from, server.addr, path).await;
    assert_eq!(client.status(), 200, "{path}: {}", client.head);
    assert_eq!(client.header("content-type"), Some("text/event-stream"));
    assert_eq!(client.header("retry-after"), Some("5"), "{}", client.head);
    let body = String::from_utf8(client.read_until_contains(b"}\n\n").await).unwrap();
    let (retry, event) = body.split_once("\n\n").unwrap();
    let retry: u64 = retry.strip_prefix("retry: ").unwrap().parse().unwrap();
    assert!(
        (5000..7500).contains(&retry),
        "5 s and up to half as jitter: {body}"
    );
    let data = event
        .strip_prefix("event: refused\ndata: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("one refused event: {body:?}"));
    let data: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        (data["status"].as_u64(), data["retryAfterMs"].as_u64()),
        (Some(status), Some(retry))
    );
    assert!(data["reason"].as_str().unwrap().contains(reason), "{data}");
    // And nothing after it: the stream is whole (a browser reconnects once it ends).
    let length: usize = client.header("content-length").unwrap().parse().unwrap();
    assert_eq!(length, body.len(), "{body:?}");
}

/// Waits until every count is back to zero (pollers linger, histories stay retained).
async fn all_released(manager: &Manager) -> Stats {
    tokio::time::timeout(
        PATIENCE,
        manager.wait_until(|s| s.subscribers == 0 && s.topics == 0 && s.pollers == 0),
    )
    .await
    .expect("every count back to zero")
}

#[tokio::test]
async fn over_the_subscribers_of_one_topic_a_client_gets_503_and_other_topics_are_served() {
    let manager = Manager::builder()
        .max_subscribers_per_topic(2)
        .build()
        .unwrap();
    let (server, _) = serve(&manager).await;
    let a1 = open(&server, ALICE, "/t/a").await;
    let a2 = open(&server, BOB, "/t/a").await;
    refused(
        &server,
        ALICE,
        "/t/a",
        503,
        "too many subscribers of this SSE topic",
    )
    .await;
    let b = open(&server, ALICE, "/t/b").await;
    let stats = manager.stats();
    assert_eq!((stats.subscribers, stats.topics), (3, 2));
    assert_eq!(stats.refused.per_topic, 1);

    drop((a1, a2, b));
    all_released(&manager).await;
    let _again = open(&server, ALICE, "/t/a").await;
}

#[tokio::test]
async fn over_the_streams_of_one_client_it_gets_429_while_other_clients_are_served() {
    let manager = Manager::builder()
        .max_streams_per_client(2)
        .build()
        .unwrap();
    let (server, _) = serve(&manager).await;
    let first = open(&server, ALICE, "/t/a").await;
    let second = open(&server, ALICE, "/t/b").await;
    refused(
        &server,
        ALICE,
        "/t/c",
        429,
        "too many open SSE streams from this client",
    )
    .await;
    let bob = open(&server, BOB, "/t/c").await;
    let stats = manager.stats();
    assert_eq!(stats.refused.per_client, 1);
    assert_eq!(
        stats.topics, 3,
        "the refused request created no topic of its own"
    );
    assert_eq!(stats.subscribers, 3);

    drop((first, second, bob));
    all_released(&manager).await;
    let _a = open(&server, ALICE, "/t/a").await;
    let _b = open(&server, ALICE, "/t/b").await;
}

#[tokio::test]
async fn over_the_live_topics_a_new_topic_gets_503_and_existing_ones_are_joined() {
    let manager = Manager::builder().max_topics(2).build().unwrap();
    let (server, _) = serve(&manager).await;
    let a = open(&server, ALICE, "/t/a").await;
    let b = open(&server, ALICE, "/t/b").await;
    refused(&server, ALICE, "/t/c", 503, "too many live SSE topics").await;
    let a_again = open(&server, BOB, "/t/a").await;
    let stats = manager.stats();
    assert_eq!((stats.topics, stats.subscribers), (2, 3));
    assert_eq!(stats.refused.topics, 1);
    assert!(manager.topics().iter().all(|t| t.name != "t/c"));

    drop((a, b, a_again));
    all_released(&manager).await;
    let _c = open(&server, ALICE, "/t/c").await;
}

#[tokio::test]
async fn over_the_running_pollers_a_new_polled_topic_gets_503_and_starts_nothing() {
    let manager = Manager::builder().max_pollers(1).build().unwrap();
    let (server, polls) = serve(&manager).await;
    let mut p = open(&server, ALICE, "/p/a").await;
    p.read_until_contains(b"data:").await;
    refused(&server, ALICE, "/p/b", 503, "too many running SSE pollers").await;
    // Event-driven topics and the running poller's topic are still served.
    let _t = open(&server, ALICE, "/t/a").await;
    let mut joined = open(&server, BOB, "/p/a").await;
    joined.read_until_contains(b"data:").await;
    let stats = manager.stats();
    assert_eq!((stats.pollers, stats.pollers_started), (1, 1));
    assert_eq!(stats.refused.pollers, 1);
    assert!(manager.topics().iter().all(|t| t.name != "p/b"));

    drop((p, joined, _t));
    let stats = all_released(&manager).await;
    assert_eq!(stats.pollers_stopped, 1);
    let mut b = open(&server, ALICE, "/p/b").await;
    b.read_until_contains(b"data:").await;
    assert!(polls.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn over_the_open_streams_every_client_gets_503_until_one_leaves() {
    let manager = Manager::builder().max_streams(2).build().unwrap();
    let (server, _) = serve(&manager).await;
    let a = open(&server, ALICE, "/t/a").await;
    let b = open(&server, BOB, "/t/b").await;
    refused(
        &server,
        ALICE,
        "/t/a",
        503,
        "too many open SSE streams on this server",
    )
    .await;
    refused(
        &server,
        BOB,
        "/t/c",
        503,
        "too many open SSE streams on this server",
    )
    .await;
    assert_eq!(manager.stats().refused.streams, 2);
    assert_eq!(manager.stats().refused.total(), 2);

    drop(a);
    tokio::time::timeout(PATIENCE, manager.wait_until(|s| s.subscribers == 1))
        .await
        .unwrap();
    let _c = open(&server, ALICE, "/t/c").await;
    drop(b);
}

#[tokio::test]
async fn a_connect_close_loop_on_a_polled_route_starts_its_poller_once_and_polls_at_its_rate() {
    let manager = Manager::new();
    let (server, polls) = serve(&manager).await;
    let started = Instant::now();
    let mut connections = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        let client = open(&server, ALICE, "/p/loop").await;
        drop(client);
        connections += 1;
    }
    let elapsed = started.elapsed();
    let stats = manager.stats();
    let polls_seen = polls.load(Ordering::SeqCst);
    eprintln!(
        "{connections} connections in {elapsed:?}: {} poller starts, {polls_seen} polls",
        stats.pollers_started
    );
    assert!(connections > 20, "the loop ran: {connections} connections");
    assert_eq!(stats.pollers_started, 1, "one start for the whole loop");
    // One poll at the start, then one per 100 ms interval.
    let at_most = 1 + elapsed.as_millis() as u64 / 100 + 1;
    assert!(
        polls_seen <= at_most,
        "{polls_seen} polls in {elapsed:?}, at most {at_most} at the poller's rate"
    );
    let stats = all_released(&manager).await;
    assert_eq!(
        stats.pollers_stopped, 1,
        "stopped once the loop ended and it lingered"
    );
}

#[tokio::test]
async fn url_spellings_the_server_reads_alike_share_one_topic_and_one_poller() {
    // Issue 13: six spellings of one process were six pollers. Decoding, dropping empty
    // parameters and sorting them leaves three: `01` and the extra parameter `a` are read
    // differently by a poll function in general, so they stay apart (bounded by the caps).
    let manager = Manager::new();
    let polls = Arc::new(AtomicU64::new(0));
    let app = app(&manager, &polls)
        .route("/files/{*rest}", get(SseHandler::new(&manager)))
        .route(
            "/sse/process",
            get(SseHandler::new(&manager).polling(|_| {
                Polling::new(|_| async { Ok::<_, PollError>(1) }).interval(Duration::from_secs(1))
            })),
        );
    let server = TestServer::start_direct(app, Duration::from_secs(10)).await;
    let mut clients = Vec::new();
    for query in [
        "?pid=1",
        "?pid=%31",
        "?pid=1&",
        "?a=1&pid=1",
        "?pid=1&a=1",
        "?pid=01",
    ] {
        clients.push(open(&server, ALICE, &format!("/sse/process{query}")).await);
    }
    let topics: Vec<String> = manager.topics().into_iter().map(|t| t.name).collect();
    assert_eq!(
        topics,
        [
            "/sse/process?a=1&pid=1",
            "/sse/process?pid=01",
            "/sse/process?pid=1"
        ]
    );
    assert_eq!(manager.stats().pollers_started, 3);

    // The path is decoded, as the Go package does: `/files/a%2Fb` is `/files/a/b`. An encoded
    // `?` stays encoded: a path never passes for a query.
    let _slash = open(&server, ALICE, "/files/a%2Fb").await;
    let _plain = open(&server, ALICE, "/files/a/b").await;
    let _question = open(&server, ALICE, "/files/a%3Fb=1").await;
    let files: Vec<(String, usize)> = manager
        .topics()
        .into_iter()
        .filter(|t| t.name.starts_with("/files"))
        .map(|t| (t.name, t.subscribers))
        .collect();
    assert_eq!(
        files,
        [
            ("/files/a%3Fb=1".to_owned(), 1),
            ("/files/a/b".to_owned(), 2)
        ]
    );
}

/// Connects to `/t/{name}`, has one event published to it, and leaves: returns that event's id.
async fn leave_a_history(
    manager: &Manager,
    server: &TestServer,
    name: &str,
    value: &str,
) -> String {
    let mut client = SseClient::connect(&server.url(&format!("/t/{name}"))).await;
    tokio::time::timeout(PATIENCE, manager.wait_until(|s| s.subscribers == 1))
        .await
        .unwrap();
    manager.publish(&format!("t/{name}"), &value);
    let id = client.event().await.id;
    drop(client);
    tokio::time::timeout(PATIENCE, manager.wait_until(|s| s.subscribers == 0))
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn retained_histories_over_their_caps_go_soonest_expiring_first_and_resume_as_a_reset() {
    // At most two histories: the third emptied topic pushes out the first.
    let manager = Manager::builder().max_retained(2, 1 << 20).build().unwrap();
    let (server, _) = serve(&manager).await;
    let a = leave_a_history(&manager, &server, "a", "first").await;
    leave_a_history(&manager, &server, "b", "second").await;
    let c = leave_a_history(&manager, &server, "c", "third").await;
    let stats = manager.stats();
    assert_eq!((stats.retained, stats.retained_evicted), (2, 1));

    // `c` kept its history: a publish while nobody listened is replayed on resume.
    manager.publish("t/c", &"missed");
    let mut back = SseClient::connect_with(&server.url("/t/c"), Some(&c)).await;
    assert_eq!(back.event().await.data, "\"missed\"");
    // `a` lost it: its client is told, never left with a silent gap.
    let mut lost = SseClient::connect_with(&server.url("/t/a"), Some(&a)).await;
    assert_eq!(lost.next().await.unwrap().event, "reset");
    drop((back, lost));

    // The byte cap works the same way: 300 bytes hold one history of a 200-byte event.
    let manager = Manager::builder().max_retained(100, 300).build().unwrap();
    let (server, _) = serve(&manager).await;
    let big = "x".repeat(200);
    leave_a_history(&manager, &server, "a", &big).await;
    leave_a_history(&manager, &server, "b", &big).await;
    let stats = manager.stats();
    assert_eq!((stats.retained, stats.retained_evicted), (1, 1));
    assert!(stats.retained_bytes <= 300, "{stats:?}");
}

#[tokio::test]
async fn with_status_answers_a_refusal_is_a_plain_503_or_429_with_retry_after() {
    let manager = Manager::builder()
        .max_streams_per_client(1)
        .max_topics(2)
        .refusal_answer(RefusalAnswer::Status)
        .refusal_retry(Duration::from_millis(1500))
        .build()
        .unwrap();
    let (server, _) = serve(&manager).await;
    let _a = open(&server, ALICE, "/t/a").await;
    let _b = open(&server, BOB, "/t/b").await;
    for (from, path, status, reason) in [
        (
            ALICE,
            "/t/c",
            429,
            "too many open SSE streams from this client",
        ),
        (
            Ipv4Addr::new(127, 0, 0, 4),
            "/t/c",
            503,
            "too many live SSE topics on this server",
        ),
    ] {
        let mut client = RawClient::get_from(from, server.addr, path).await;
        assert_eq!(client.status(), status, "{}", client.head);
        assert_eq!(client.header("retry-after"), Some("2"), "1.5 s, rounded up");
        client.read_until_contains(reason.as_bytes()).await;
    }
    let stats = manager.stats();
    assert_eq!((stats.refused.per_client, stats.refused.topics), (1, 1));
}

/// Spec (issue 31): a crowd refused at once comes back spread out. 1 000 requests refused at
/// `max_streams` get a `retry:` of the refusal delay (5 s) plus a random part of half of it:
/// spread over every half second of 5-7.5 s.
#[tokio::test]
async fn a_refused_crowd_is_told_to_come_back_spread_over_the_retry_window() {
    let manager = Manager::builder().max_streams(1).build().unwrap();
    let handler = SseHandler::new(&manager).topic("t");
    let _holder = manager.subscribe("t").unwrap();
    let mut buckets = [0usize; 5];
    for _ in 0..1000 {
        let (mut parts, ()) = http::Request::get("/t").body(()).unwrap().into_parts();
        let response = handler.respond(&mut parts).await;
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let text = std::str::from_utf8(&body).unwrap();
        let retry: u64 = text
            .strip_prefix("retry: ")
            .and_then(|rest| rest.split_once('\n'))
            .unwrap()
            .0
            .parse()
            .unwrap();
        assert!((5000..7500).contains(&retry), "{retry}");
        buckets[((retry - 5000) / 500) as usize] += 1;
    }
    eprintln!("returns per half second, from 5 s after the refusal: {buckets:?}");
    assert!(
        buckets.iter().all(|&n| (100..=300).contains(&n)),
        "every half second (200 each on average): {buckets:?}"
    );
    assert_eq!(manager.stats().refused.streams, 1000);
}

/// Spec (issue 33): one client cannot take every poller. Over `max_pollers_per_client` running
/// pollers that it started, a subscription of that client that would start one more is refused
/// as `429`; it may still join running ones, and others may start theirs. Once its pollers
/// stop, it may start new ones.
#[tokio::test]
async fn over_the_pollers_one_client_started_it_gets_429_and_may_still_join_others() {
    let manager = Manager::builder()
        .max_pollers_per_client(2)
        .build()
        .unwrap();
    let (server, _) = serve(&manager).await;
    let mut a = open(&server, ALICE, "/p/a").await;
    let mut b = open(&server, ALICE, "/p/b").await;
    refused(
        &server,
        ALICE,
        "/p/c",
        429,
        "too many running SSE pollers started by this client",
    )
    .await;
    let mut bobs = open(&server, BOB, "/p/c").await;
    let mut joined = open(&server, ALICE, "/p/c").await;
    for client in [&mut a, &mut b, &mut bobs, &mut joined] {
        client.read_until_contains(b"data:").await;
    }
    let stats = manager.stats();
    assert_eq!((stats.pollers, stats.refused.pollers_per_client), (3, 1));
    assert!(manager.topics().iter().all(|t| t.name != "p/d"));

    drop((a, b, bobs, joined));
    all_released(&manager).await;
    let _again = open(&server, ALICE, "/p/d").await;
    let _and_again = open(&server, ALICE, "/p/e").await;
}
