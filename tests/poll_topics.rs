//! Spec: a polled route's topic is made only of what its function reads (issue 33, part 1).
//!
//! A poller is shared by every subscriber of its topic and queries the application's backend
//! on every interval, so one client must not be able to start many of them for one resource
//! by adding parameters the function never reads. The topic of an `#[sse_poll]` route is its
//! path plus, for each `Query<T>` the function takes, the parameters `T` reads (canonical form);
//! a function that takes no `Query` has no query in its topic. A function that takes an
//! extractor that may read the query its own way (`RawQuery`, one of the user's) keeps the
//! whole canonical query, as before.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query, RawQuery};
use serde::Deserialize;
use sse_integration_tests::{SseClient, TestServer};
use sse_runtime::{Manager, PollError, sse_poll};

static BUILD_POLLS: AtomicUsize = AtomicUsize::new(0);

#[sse_poll(path = "/sse/builds/{id}", interval = "1h")]
async fn build(Path(id): Path<u64>) -> Result<u64, PollError> {
    BUILD_POLLS.fetch_add(1, Ordering::SeqCst);
    Ok(id)
}

#[derive(Deserialize)]
struct Branch {
    branch: String,
    #[serde(default)]
    verbose: bool,
}

#[sse_poll(path = "/sse/branches/{id}", interval = "1h")]
async fn branch(Path(id): Path<u64>, Query(q): Query<Branch>) -> Result<String, PollError> {
    Ok(format!("{id}:{}:{}", q.branch, q.verbose))
}

#[sse_poll(path = "/sse/raw", interval = "1h")]
async fn raw(RawQuery(query): RawQuery) -> Result<String, PollError> {
    Ok(query.unwrap_or_default())
}

async fn start(manager: &Manager) -> TestServer {
    TestServer::start_direct(
        sse_runtime::routes::router_with(manager),
        Duration::from_secs(30),
    )
    .await
}

fn topics(manager: &Manager) -> Vec<String> {
    manager.topics().into_iter().map(|t| t.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_unread_parameters_start_one_poller() {
    let manager = Manager::builder()
        .max_streams_per_client(1000)
        .build()
        .unwrap();
    let server = start(&manager).await;
    let mut clients = Vec::new();
    for n in 0..100 {
        let mut client = SseClient::connect(&server.url(&format!("/sse/builds/7?junk={n}"))).await;
        assert_eq!(client.event().await.data, "7");
        clients.push(client);
    }
    let stats = manager.stats();
    assert_eq!(
        (stats.subscribers, stats.pollers, stats.pollers_started),
        (100, 1, 1),
        "{stats:?}"
    );
    assert_eq!(topics(&manager), ["/sse/builds/7"]);
    assert_eq!(
        BUILD_POLLS.load(Ordering::SeqCst),
        1,
        "one poll, not one per URL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_poller_keys_on_the_parameters_its_type_reads() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut clients = Vec::new();
    for url in [
        "/sse/branches/7?branch=main",
        "/sse/branches/7?junk=1&branch=main",
        "/sse/branches/7?branch=main&junk=2&",
        "/sse/branches/7?branch=%6Dain",
    ] {
        let mut client = SseClient::connect(&server.url(url)).await;
        assert_eq!(client.event().await.data, "\"7:main:false\"", "{url}");
        clients.push(client);
    }
    let mut verbose =
        SseClient::connect(&server.url("/sse/branches/7?verbose=true&branch=main")).await;
    assert_eq!(verbose.event().await.data, "\"7:main:true\"");
    let mut dev = SseClient::connect(&server.url("/sse/branches/7?branch=dev&junk=3")).await;
    assert_eq!(dev.event().await.data, "\"7:dev:false\"");
    assert_eq!(
        topics(&manager),
        [
            "/sse/branches/7?branch=dev",
            "/sse/branches/7?branch=main",
            "/sse/branches/7?branch=main&verbose=true",
        ]
    );
    assert_eq!(manager.stats().pollers, 3);
    // A query its type cannot read is refused by the extractor, as before: no poller.
    let refused = reqwest::get(server.url("/sse/branches/7?junk=1"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(manager.stats().pollers, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_reads_the_raw_query_keeps_all_of_it() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut a = SseClient::connect(&server.url("/sse/raw?x=1")).await;
    let mut b = SseClient::connect(&server.url("/sse/raw?x=1&y=2")).await;
    assert_eq!(a.event().await.data, "\"x=1\"");
    assert_eq!(b.event().await.data, "\"x=1&y=2\"");
    assert_eq!(topics(&manager), ["/sse/raw?x=1", "/sse/raw?x=1&y=2"]);
}
