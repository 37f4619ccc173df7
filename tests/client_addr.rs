//! Spec: the client's address behind reverse proxies (issue 25, part 1).
//!
//! - A request whose peer is in `ManagerBuilder::trusted_proxies` is counted by the rightmost
//!   address of `Forwarded` (else `X-Forwarded-For`) that is not itself trusted: behind one
//!   proxy, every browser has its own per-client cap.
//! - A peer outside the trusted ranges is counted by its own address whatever it forwards
//!   (spoofing), and so is every peer by default.
//! - Guards take the same address as the `ClientAddr` extractor; a poller never sees it.
//!
//! Refusals are answered with their status (`RefusalAnswer::Status`), which these tests read.
//! Real HTTP on loopback under `sse_runtime::serve`, the "proxy" being a client on 127.0.0.1
//! that writes the headers a proxy writes, and other clients on other addresses of 127.0.0.0/8.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use sse_integration_tests::{RawClient, TestServer};
use sse_runtime::client_addr::{Cidr, ClientAddr};
use sse_runtime::subscription::RefusalAnswer;
use sse_runtime::{Manager, SseHandler};

const PROXY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

fn behind_a_proxy(streams_per_client: usize) -> Manager {
    Manager::builder()
        .max_streams_per_client(streams_per_client)
        .refusal_answer(RefusalAnswer::Status)
        .trusted_proxies(["127.0.0.1/32".parse::<Cidr>().unwrap()])
        .build()
        .unwrap()
}

/// Lets in only 198.51.100.7.
async fn only_seven(ClientAddr(client): ClientAddr) -> Result<(), StatusCode> {
    (client == "198.51.100.7".parse::<IpAddr>().unwrap())
        .then_some(())
        .ok_or(StatusCode::FORBIDDEN)
}

async fn start(manager: &Manager) -> TestServer {
    let app = Router::new()
        .route(
            "/t/{name}",
            get(SseHandler::new(manager).topic_template("t/{name}")),
        )
        .route(
            "/seven",
            get(SseHandler::new(manager).topic("seven").guard(only_seven)),
        );
    TestServer::start_direct(app, Duration::from_secs(10)).await
}

/// A GET of `path` from `from` with `headers` (each a full line); the stream is read up to its
/// `retry:` hint when it is served, so its subscription exists when this returns.
async fn request(server: &TestServer, from: Ipv4Addr, path: &str, headers: &[&str]) -> RawClient {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", server.addr);
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let mut client = RawClient::send_from(from, server.addr, request.as_bytes()).await;
    if client.status() == 200 {
        client.read_until_contains(b"retry:").await;
    }
    client
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_cap() {
    let manager = behind_a_proxy(1);
    let server = start(&manager).await;
    let mut open = Vec::new();
    for (path, header) in [
        ("/t/a", "X-Forwarded-For: 198.51.100.1"),
        ("/t/b", "X-Forwarded-For: 198.51.100.2, 127.0.0.1"),
        ("/t/c", "Forwarded: for=\"[2001:db8::1]:443\";proto=https"),
        ("/t/d", "X-Forwarded-For: 198.51.100.3:51234"),
    ] {
        let client = request(&server, PROXY, path, &[header]).await;
        assert_eq!(client.status(), 200, "{header}: {}", client.head);
        open.push(client);
    }
    // The proxy's own address is no client's: a stream without a forwarded client is its own.
    open.push(request(&server, PROXY, "/t/e", &[]).await);
    assert_eq!(open.last().unwrap().status(), 200);

    let again = request(&server, PROXY, "/t/f", &["X-Forwarded-For: 198.51.100.1"]).await;
    assert_eq!(again.status(), 429, "{}", again.head);
    assert_eq!(again.header("retry-after"), Some("5"));
    let stats = manager.stats();
    assert_eq!((stats.subscribers, stats.refused.per_client), (5, 1));
}

#[tokio::test]
async fn a_client_that_is_not_a_trusted_proxy_is_counted_by_its_own_address() {
    for manager in [
        behind_a_proxy(1),
        Manager::builder()
            .max_streams_per_client(1)
            .refusal_answer(RefusalAnswer::Status)
            .build()
            .unwrap(),
    ] {
        let server = start(&manager).await;
        let first = request(
            &server,
            STRANGER,
            "/t/a",
            &["X-Forwarded-For: 198.51.100.1"],
        )
        .await;
        assert_eq!(first.status(), 200);
        for spoofed in [
            "X-Forwarded-For: 198.51.100.2",
            "Forwarded: for=198.51.100.3",
            "X-Forwarded-For: 127.0.0.1",
        ] {
            let refused = request(&server, STRANGER, "/t/b", &[spoofed]).await;
            assert_eq!(refused.status(), 429, "{spoofed}: {}", refused.head);
        }
        drop(first);
    }
    // And by default nobody is trusted, not even loopback.
    let manager = Manager::builder()
        .max_streams_per_client(1)
        .refusal_answer(RefusalAnswer::Status)
        .build()
        .unwrap();
    let server = start(&manager).await;
    let _first = request(&server, PROXY, "/t/a", &["X-Forwarded-For: 198.51.100.1"]).await;
    let refused = request(&server, PROXY, "/t/b", &["X-Forwarded-For: 198.51.100.2"]).await;
    assert_eq!(refused.status(), 429);
}

#[tokio::test]
async fn a_guard_takes_the_forwarded_client_as_client_addr() {
    let manager = behind_a_proxy(100);
    let server = start(&manager).await;
    let seven = ["X-Forwarded-For: 198.51.100.7"];
    assert_eq!(
        request(&server, PROXY, "/seven", &seven).await.status(),
        200
    );
    let eight = ["X-Forwarded-For: 198.51.100.8"];
    assert_eq!(
        request(&server, PROXY, "/seven", &eight).await.status(),
        403
    );
    assert_eq!(
        request(&server, STRANGER, "/seven", &seven).await.status(),
        403,
        "a stranger cannot claim to be 198.51.100.7"
    );
    assert_eq!(
        request(
            &server,
            PROXY,
            "/seven",
            &["X-Forwarded-For: garbage, 198.51.100.7, unknown"]
        )
        .await
        .status(),
        403,
        "an unreadable hop written by our proxy leaves the proxy as the client"
    );
}

#[tokio::test]
async fn client_addr_outside_the_stream_routes_says_where_to_get_it() {
    let app = Router::new().route(
        "/who",
        get(|ClientAddr(client): ClientAddr| async move { client.to_string() }),
    );
    let server = TestServer::start_direct(app, Duration::from_secs(10)).await;
    let mut client = request(&server, PROXY, "/who", &[]).await;
    assert_eq!(client.status(), 500);
    client.read_until_contains(b"Manager::client_addr").await;
}

/// Spec (issue 33): the per-client poller cap counts the forwarded client too: behind a
/// trusted proxy, each browser may start its own pollers, and one that is over its cap is
/// refused while another, through the same proxy, is not.
#[tokio::test]
async fn behind_a_trusted_proxy_the_poller_cap_counts_each_forwarded_client() {
    use sse_runtime::PollError;
    use sse_runtime::polling::Polling;

    let manager = Manager::builder()
        .max_pollers_per_client(1)
        .refusal_answer(RefusalAnswer::Status)
        .trusted_proxies(["127.0.0.1/32".parse::<Cidr>().unwrap()])
        .build()
        .unwrap();
    let app = Router::new().route(
        "/p/{name}",
        get(SseHandler::new(&manager)
            .topic_template("p/{name}")
            .polling(|_| {
                Polling::new(|_| async { Ok::<_, PollError>(1) })
                    .interval(Duration::from_secs(3600))
            })),
    );
    let server = TestServer::start_direct(app, Duration::from_secs(10)).await;
    let alice = ["X-Forwarded-For: 198.51.100.1"];
    let bob = ["X-Forwarded-For: 198.51.100.2"];
    let first = request(&server, PROXY, "/p/a", &alice).await;
    assert_eq!(first.status(), 200);
    assert_eq!(request(&server, PROXY, "/p/b", &alice).await.status(), 429);
    assert_eq!(request(&server, PROXY, "/p/b", &bob).await.status(), 200);
    let stats = manager.stats();
    assert_eq!((stats.pollers, stats.refused.pollers_per_client), (2, 1));
}
