//! Spec: behind real reverse proxies (issue 25, part 2). nginx and Caddy, Debian's packages,
//! run from the repository's templates (`deploy/`, shown in docs/DEPLOYMENT.md) in front of a
//! real server on loopback, with the app trusting the proxy's address (`127.0.0.1/32`):
//!
//! - with the proxy's default buffering, an event reaches the client within 100 ms;
//! - heartbeats keep a stream open past a short proxy read timeout, and an event still
//!   arrives after it; without heartbeats the proxy ends the stream (so the test can fail);
//! - a client resumes through the proxy with `Last-Event-ID`;
//! - 1 100 clients from 1 100 addresses behind the proxy are all served under a per-client cap
//!   of 1 000, and the 1 001st stream of one address is refused as `429` with `Retry-After`;
//! - a graceful shutdown ends every stream through the proxy promptly.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use sse_integration_tests::proxies::{Proxy, ProxyKind, ProxyOptions};
use sse_integration_tests::{PATIENCE, RawClient, SseClient, TestServer};
use sse_runtime::client_addr::Cidr;
use sse_runtime::event_id::EventId;
use sse_runtime::manager::ManagerBuilder;
use sse_runtime::{Manager, SseHandler};

/// A manager that trusts the proxy in front of it.
fn behind_the_proxy() -> ManagerBuilder {
    Manager::builder().trusted_proxies(["127.0.0.1/32".parse::<Cidr>().unwrap()])
}

/// `/sse/feed` and `/sse/t/{name}` on `manager`, served by `sse_runtime::serve`.
async fn app(manager: &Manager) -> TestServer {
    let app = Router::new()
        .route("/sse/feed", get(SseHandler::new(manager).topic("feed")))
        .route(
            "/sse/t/{name}",
            get(SseHandler::new(manager).topic_template("t/{name}")),
        );
    TestServer::start_direct(app, Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_default_buffering_an_event_reaches_the_client_within_100_ms() {
    for kind in ProxyKind::ALL {
        let manager = behind_the_proxy().build().unwrap();
        let server = app(&manager).await;
        let proxy = Proxy::start(kind, server.addr).await;
        let mut client = SseClient::connect(&proxy.url("/sse/feed")).await;
        assert_eq!(client.status, 200, "{kind:?}");
        manager.wait_until(|s| s.subscribers == 1).await;
        let mut slowest = Duration::ZERO;
        for n in 0..10 {
            let sent = Instant::now();
            manager.publish("feed", &n);
            assert_eq!(client.event().await.data, n.to_string());
            slowest = slowest.max(sent.elapsed());
        }
        assert!(
            slowest < Duration::from_millis(100),
            "{kind:?}: the slowest event took {slowest:?}: the proxy buffers"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_stream_open_past_the_proxys_read_timeout() {
    for kind in ProxyKind::ALL {
        let options = ProxyOptions {
            read_timeout: Duration::from_secs(1),
            ..ProxyOptions::default()
        };
        // Without heartbeats the proxy gives up on the silent stream: what the test guards.
        let manager = behind_the_proxy().build().unwrap();
        let server = app(&manager).await;
        let proxy = Proxy::start_with(kind, server.addr, options.clone()).await;
        let mut silent = SseClient::connect(&proxy.url("/sse/feed")).await;
        let opened = Instant::now();
        silent.until_dropped().await;
        assert!(
            opened.elapsed() >= Duration::from_millis(900),
            "{kind:?}: ended by the read timeout"
        );
        drop((proxy, server));

        let manager = behind_the_proxy()
            .heartbeat(Duration::from_millis(300))
            .build()
            .unwrap();
        let server = app(&manager).await;
        let proxy = Proxy::start_with(kind, server.addr, options).await;
        let mut client = SseClient::connect(&proxy.url("/sse/feed")).await;
        manager.wait_until(|s| s.subscribers == 1).await;
        // The passing of time is what is tested: three read timeouts without an event.
        tokio::time::sleep(Duration::from_secs(3)).await;
        manager.publish("feed", &"still here");
        assert_eq!(client.event().await.data, "\"still here\"", "{kind:?}");
        assert_eq!(manager.stats().subscribers, 1, "{kind:?}: the same stream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_through_the_proxy_with_last_event_id() {
    for kind in ProxyKind::ALL {
        let manager = behind_the_proxy().build().unwrap();
        let server = app(&manager).await;
        let proxy = Proxy::start(kind, server.addr).await;
        let mut client = SseClient::connect(&proxy.url("/sse/feed")).await;
        manager.wait_until(|s| s.subscribers == 1).await;
        manager.publish("feed", &1);
        let last = client.event().await.id;
        drop(client);
        manager.wait_until(|s| s.subscribers == 0).await;
        manager.publish("feed", &2);
        manager.publish("feed", &3);
        let mut resumed = SseClient::connect_with(&proxy.url("/sse/feed"), Some(&last)).await;
        for expected in [2, 3] {
            let event = resumed.event().await;
            assert_eq!(event.data, expected.to_string(), "{kind:?}");
            assert_eq!(event.id.parse::<EventId>().unwrap().sequence(), expected);
        }
    }
}

/// The `n`th of the clients' loopback addresses (127.1.0.0/16: never the proxy's 127.0.0.1).
fn client_address(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8)
}

/// A stream through the proxy from `from`, read up to its first bytes.
async fn stream_from(proxy: SocketAddr, from: Ipv4Addr, path: &str) -> RawClient {
    let mut client = RawClient::get_from(from, proxy, path).await;
    assert_eq!(client.status(), 200, "{}", client.head);
    client.read_until_contains(b"retry:").await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_proxy_each_of_1100_clients_has_its_own_cap_of_1000() {
    for kind in ProxyKind::ALL {
        let manager = behind_the_proxy()
            .max_streams_per_client(1000)
            .build()
            .unwrap();
        let server = app(&manager).await;
        let proxy = Proxy::start(kind, server.addr).await;
        let mut open = Vec::with_capacity(2100);
        for n in 0..1100 {
            open.push(stream_from(proxy.addr, client_address(n), "/sse/feed").await);
        }
        let stats = manager.wait_until(|s| s.subscribers == 1100).await;
        assert_eq!(stats.refused.total(), 0, "{kind:?}: {stats:?}");

        let one = Ipv4Addr::new(127, 2, 0, 1);
        for n in 0..1000 {
            open.push(stream_from(proxy.addr, one, &format!("/sse/t/{n}")).await);
        }
        let mut refused = RawClient::get_from(one, proxy.addr, "/sse/t/over").await;
        assert_eq!(refused.header("retry-after"), Some("5"), "{}", refused.head);
        let body = refused.read_until_contains(b"}\n\n").await;
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("event: refused") && body.contains("\"status\":429"),
            "{kind:?}: {body}"
        );
        let stats = manager.stats();
        assert_eq!(
            (stats.subscribers, stats.refused.per_client),
            (2100, 1),
            "{kind:?}: the 1 000th stream of one address is served, the 1 001st refused"
        );
        drop(open);
        manager.wait_until(|s| s.subscribers == 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_ends_every_stream_through_the_proxy_promptly() {
    for kind in ProxyKind::ALL {
        let manager = behind_the_proxy().build().unwrap();
        let server = app(&manager).await;
        let proxy = Proxy::start(kind, server.addr).await;
        let mut clients = Vec::new();
        for _ in 0..10 {
            clients.push(SseClient::connect(&proxy.url("/sse/feed")).await);
        }
        manager.wait_until(|s| s.subscribers == 10).await;
        let started = Instant::now();
        manager.shutdown();
        for client in &mut clients {
            client.until_end().await;
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "{kind:?}: every stream ended in {took:?}"
        );
        tokio::time::timeout(PATIENCE, server.stop())
            .await
            .expect("the server stops once its streams ended");
    }
}
