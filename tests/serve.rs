//! `sse_runtime::serve`: the same Router, SSE streams written straight to the socket, and the
//! plain HTTP/1.1 it needs for everything else. Real server on 127.0.0.1, real clients.

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use sse_integration_tests::{PATIENCE, RawClient, SseClient, TestServer};
use sse_runtime::{Manager, SseHandler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn app(manager: &Manager) -> Router {
    Router::new()
        .route("/alarms", get(SseHandler::new(manager).topic("alarms")))
        .route(
            "/hello",
            get(|| async { "hello" }).head(|| async { "hello" }),
        )
        .route(
            "/json",
            get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
        )
        .route("/echo", post(|body: String| async move { body }))
        .route("/empty", get(|| async { http::StatusCode::NO_CONTENT }))
        .route(
            "/polled",
            get(SseHandler::new(manager).polling(|_| {
                sse_runtime::polling::Polling::new(|_| async { Ok::<_, sse_runtime::PollError>(1) })
            })),
        )
        .route(
            "/stream",
            get(|| async {
                let chunks = futures_util::stream::iter(
                    ["one ", "two ", "three"].map(Ok::<_, std::io::Error>),
                );
                axum::body::Body::from_stream(chunks)
            }),
        )
}

async fn start(manager: &Manager) -> TestServer {
    TestServer::start_direct(app(manager), Duration::from_secs(30)).await
}

/// Sends raw bytes on a fresh connection and reads until the server closes it.
async fn exchange(server: &TestServer, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream).await
}

/// Everything the server sends until it closes the connection.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn an_sse_route_streams_events_with_the_sse_headers() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut client = SseClient::connect(&server.url("/alarms")).await;
    assert_eq!(client.headers["content-type"], "text/event-stream");
    assert_eq!(client.headers["x-accel-buffering"], "no");
    assert_eq!(client.headers["transfer-encoding"], "chunked");
    manager.publish("alarms", &serde_json::json!({"level": 3}));
    manager.publish_event("alarms", Some("alarm"), &2);
    let first = client.event().await;
    assert_eq!(first.data, r#"{"level":3}"#);
    assert!(first.id.ends_with("-1"));
    assert_eq!(client.event().await.event, "alarm");
}

#[tokio::test]
async fn the_head_comes_first_then_the_retry_hint_then_heartbeats() {
    let manager = Manager::builder()
        .heartbeat(Duration::from_millis(50))
        .build()
        .unwrap();
    let server = start(&manager).await;
    let mut raw = RawClient::get(server.addr, "/alarms").await;
    assert!(raw.head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", raw.head);
    let bytes = raw.read_until_contains(b":\n\n").await;
    assert!(String::from_utf8_lossy(&bytes).contains("retry: "));
}

#[tokio::test]
async fn a_client_that_goes_away_is_released_at_once() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let raw = RawClient::get(server.addr, "/alarms").await;
    manager.wait_until(|s| s.subscribers == 1).await;
    drop(raw); // nothing is ever published: the server notices the EOF by itself
    tokio::time::timeout(
        PATIENCE,
        manager.wait_until(|s| s.subscribers == 0 && s.topics == 0),
    )
    .await
    .expect("released without a write failing first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_dropped_by_the_write_deadline_and_never_delays_the_others() {
    let deadline = Duration::from_millis(300);
    let manager = Manager::builder().heartbeat(deadline).build().unwrap();
    let server = TestServer::start_direct(app(&manager), deadline).await;
    let stalled = sse_integration_tests::stalled_client(server.addr, "/alarms").await;
    let mut fast = SseClient::connect(&server.url("/alarms")).await;
    manager.wait_until(|s| s.subscribers == 2).await;
    let payload = "x".repeat(32 * 1024);
    for i in 0..400 {
        manager.publish("alarms", &(i, &payload));
        let (n, _): (u32, String) = serde_json::from_str(&fast.event().await.data).unwrap();
        assert_eq!(n, i);
    }
    tokio::time::timeout(PATIENCE, manager.wait_until(|s| s.subscribers == 1))
        .await
        .expect("the stalled client is dropped");
    drop(stalled);
}

#[tokio::test]
async fn ordinary_routes_answer_with_a_length_and_keep_the_connection_alive() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let response = client.get(server.url("/json")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-length"], "11");
        assert_eq!(response.text().await.unwrap(), r#"{"ok":true}"#);
    }
    let echoed = client
        .post(server.url("/echo"))
        .body("a body")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.text().await.unwrap(), "a body");
    let missing = client.get(server.url("/nowhere")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let response = exchange(
        &server,
        b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nworldGET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let bodies: Vec<&str> = response
        .split("\r\n\r\n")
        .skip(1)
        .map(|part| part.split("HTTP/1.1").next().unwrap())
        .collect();
    assert_eq!(bodies, ["hello", "world", "hello"], "{response}");
    assert_eq!(response.matches("HTTP/1.1 200 OK").count(), 3);
}

#[tokio::test]
async fn a_body_of_unknown_length_is_sent_chunked() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let response = reqwest::get(server.url("/stream")).await.unwrap();
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert_eq!(response.text().await.unwrap(), "one two three");
}

#[tokio::test]
async fn head_requests_get_the_headers_without_the_body() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let response = exchange(
        &server,
        b"HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("content-length: 5\r\n"));
    assert!(response.ends_with("\r\n\r\n"), "no body: {response:?}");
}

#[tokio::test]
async fn http_1_0_clients_get_their_answer_and_a_close() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let response = exchange(&server, b"GET /hello HTTP/1.0\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(response.contains("connection: close\r\n"));
    assert!(response.ends_with("hello"));
}

#[tokio::test]
async fn http_1_0_clients_get_bodies_of_unknown_length_and_sse_streams_without_chunks() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let response = exchange(&server, b"GET /stream HTTP/1.0\r\n\r\n").await;
    assert!(!response.contains("transfer-encoding"), "{response}");
    assert!(response.ends_with("\r\n\r\none two three"), "{response:?}");
    let mut raw = RawClient::send(server.addr, b"GET /alarms HTTP/1.0\r\n\r\n").await;
    manager.wait_until(|s| s.subscribers == 1).await;
    manager.publish("alarms", &1);
    let mut seen = raw.head.clone().into_bytes();
    seen.extend(raw.read_until_contains(b"data: 1\n\n").await);
    manager.shutdown();
    raw.reader.read_to_end(&mut seen).await.unwrap(); // the close ends the stream
    let response = String::from_utf8_lossy(&seen);
    assert!(!response.contains("transfer-encoding"), "{response}");
    assert!(response.contains("\r\n\r\nretry: "), "{response:?}");
    // After the event only the shutdown's `retry:` (when to come back), and no chunk
    // terminator.
    let (_, tail) = response.rsplit_once("data: 1\n\n").expect("the event");
    assert!(
        tail.starts_with("retry: ") && tail.ends_with("\n\n") && !tail.contains('\r'),
        "no chunk terminator: {response:?}"
    );
}

#[tokio::test]
async fn expect_100_continue_is_honoured() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"ping").await.unwrap();
    let mut rest = String::new();
    stream.read_to_string(&mut rest).await.unwrap();
    assert!(rest.ends_with("ping"), "{rest}");
}

#[tokio::test]
async fn requests_it_cannot_serve_get_a_clear_status_and_a_close() {
    let manager = Manager::new();
    let server = start(&manager).await;
    // Each refusal names its reason in the body, so the client's developer learns what to fix.
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nping\r\n0\r\n\r\n".to_vec(), "501", "chunked request bodies"),
        (format!("GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(sse_runtime::serve::MAX_HEAD)).into_bytes(), "431", "request head too large"),
        (b"GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(), "400", "Content-Length must be a single value"),
        (format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", sse_runtime::serve::MAX_BODY + 1).into_bytes(), "413", "request body too large"),
        (b"GET /hello HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(), "400", "malformed request head"),
        (b"GET /hello HTTP/2.0\r\n\r\n".to_vec(), "505", "only HTTP/1.0 and HTTP/1.1"),
    ];
    for (request, status, reason) in cases {
        let response = exchange(&server, &request).await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{status}: {response}"
        );
        assert!(response.contains("connection: close"));
        assert!(
            response.contains(reason),
            "{status} names {reason:?}: {response}"
        );
    }
    assert_eq!(manager.stats().topics, 0);
}

#[tokio::test]
async fn shutdown_waits_for_streams_ended_by_the_manager() {
    let manager = Manager::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let signal = {
        let manager = manager.clone();
        async move {
            manager.wait_until(|s| s.subscribers == 1).await;
            manager.shutdown();
        }
    };
    let server = tokio::spawn(sse_runtime::serve::serve_with_shutdown(
        listener,
        app(&manager),
        signal,
    ));
    let mut client = SseClient::connect(&format!("http://{addr}/alarms")).await;
    client.until_end().await;
    tokio::time::timeout(PATIENCE, server)
        .await
        .expect("serve returns")
        .unwrap();
}

/// Sends `request` on a fresh connection, half-closes, and reads until the server closes.
async fn exchange_and_close(server: &TestServer, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    stream.shutdown().await.unwrap();
    read_to_close(&mut stream).await
}

/// Spec: `HEAD` on an SSE route gets the stream's headers and no body, subscribes to nothing,
/// starts no poller, and the connection goes on with the next request.
#[tokio::test]
async fn head_on_an_sse_route_gets_the_head_only_and_subscribes_to_nothing() {
    let manager = Manager::new();
    let server = start(&manager).await;
    for path in ["/alarms", "/polled"] {
        let request = format!(
            "HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let response = exchange(&server, request.as_bytes()).await;
        let (head, rest) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        assert!(
            rest.starts_with("HTTP/1.1 200 OK"),
            "the next request is answered right after the head: {response}"
        );
        assert!(rest.ends_with("hello"), "{response}");
    }
    let stats = manager.stats();
    assert_eq!(
        (stats.topics, stats.retained, stats.pollers_started),
        (0, 0, 0)
    );
}

/// Spec: nothing of a body is read before a handler asks for it. A route that never reads it
/// (here the 404 fallback) answers at once, without `100 Continue`, and since the body was not
/// consumed the connection closes instead of reading it.
#[tokio::test]
async fn a_handler_that_does_not_read_the_body_answers_without_waiting_for_it() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    // Answered without the body.
    let response = read_to_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 404 "), "{response}");
    assert!(!response.contains("100 Continue"), "{response}");
    assert!(response.contains("connection: close"), "{response}");
}

/// Spec: `100 Continue` is sent when the handler starts reading the body, and only to
/// HTTP/1.1 clients (HTTP/1.0 has no such status).
#[tokio::test]
async fn continue_is_sent_when_the_handler_reads_and_never_to_http_1_0() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        )
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut interim))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"ping").await.unwrap();
    let mut head = [0u8; 15];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK");

    // The body's first half comes with the head, so the server has less than the whole body
    // when it decides whether to send 100 Continue.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\npi")
        .await
        .unwrap();
    stream.write_all(b"ng").await.unwrap();
    let response = read_to_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("ping"), "{response}");
}

/// Spec: `Content-Length` is digits only. `+2` (which Rust's integer parsing accepts) would end
/// the body early and run the rest as a second, smuggled request.
#[tokio::test]
async fn a_signed_content_length_is_refused_and_nothing_is_smuggled() {
    let manager = Manager::new();
    let server = start(&manager).await;
    for length in ["+2", "-0", " 2x", "0x2", "2 2", ""] {
        let request = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{{}}GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let response = exchange_and_close(&server, request.as_bytes()).await;
        assert!(
            response.starts_with("HTTP/1.1 400 "),
            "{length:?}: {response}"
        );
        assert!(
            !response.contains("hello"),
            "smuggled with {length:?}: {response}"
        );
    }
}

/// Spec: `Connection` is a case-insensitive, comma-separated list over every `Connection`
/// header; `close` anywhere in it closes after the response.
#[tokio::test]
async fn close_anywhere_in_the_connection_headers_closes() {
    let manager = Manager::new();
    let server = start(&manager).await;
    for connection in [
        "Connection: keep-alive, close",
        "Connection: Upgrade, Close",
        "Connection: keep-alive\r\nConnection: close",
        "Connection: ,CLOSE ,",
    ] {
        let request = format!(
            "GET /hello HTTP/1.1\r\nHost: x\r\n{connection}\r\n\r\nGET /json HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let response = exchange_and_close(&server, request.as_bytes()).await;
        assert_eq!(
            response.matches("HTTP/1.1 200").count(),
            1,
            "{connection:?}: {response}"
        );
        assert!(response.ends_with("hello"), "{connection:?}: {response}");
    }
}

/// Spec: a 204 has no `Content-Length` (RFC 9110 8.6), and every response has a `Date`.
#[tokio::test]
async fn a_204_has_no_length_and_every_response_has_a_date() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let response = exchange_and_close(&server, b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 204 "), "{response}");
    assert!(
        !response.to_ascii_lowercase().contains("content-length"),
        "{response}"
    );
    for path in ["/empty", "/hello", "/nowhere"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let response = exchange_and_close(&server, request.as_bytes()).await;
        let date = response
            .lines()
            .find_map(|l| l.strip_prefix("date: "))
            .unwrap_or_else(|| panic!("{path}: no date: {response}"));
        assert!(httpdate_like(date), "{date}");
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn httpdate_like(date: &str) -> bool {
    date.len() == 29 && date.ends_with(" GMT") && date.as_bytes()[3] == b','
}
