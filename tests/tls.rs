//! Spec (issue 25, part 3): `Server::tls` serves HTTPS with rustls. ALPN offers `h2` and
//! `http/1.1`: an HTTP/2 client gets all its streams on one connection, each with every event;
//! an HTTP/1.1 client is served by either engine, and resumes with `Last-Event-ID`. The TLS
//! handshake has the head timeout to complete, an HTTP/2 connection with no request open is
//! closed after it, graceful shutdown ends streams over TLS as over TCP, a certificate can be
//! swapped without a restart (new handshakes get the new one, open streams keep going), and
//! bad PEM input is an error that says what is wrong. Real rustls and hyper clients on
//! loopback, trusting the test's own certificate alone.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use sse_integration_tests::PATIENCE;
use sse_integration_tests::tls::{BodyEvents, H1Client, H2Client, TestCert, alpn_of};
use sse_runtime::serve::{Tls, TlsError};
use sse_runtime::{CancellationToken, Manager, Server, SseHandler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

struct TlsServer {
    addr: SocketAddr,
    signal: CancellationToken,
    running: JoinHandle<()>,
}

impl TlsServer {
    async fn start(server: Server) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let signal = CancellationToken::new();
        let running =
            tokio::spawn(server.run_with_shutdown(listener, signal.clone().cancelled_owned()));
        Self {
            addr,
            signal,
            running,
        }
    }

    /// Signals shutdown and waits for the server to return.
    async fn stop(self) {
        self.signal.cancel();
        tokio::time::timeout(PATIENCE, self.running)
            .await
            .expect("the server returns")
            .unwrap();
    }
}

fn app(manager: &Manager) -> Router {
    Router::new()
        .route("/feed", get(SseHandler::new(manager).topic("feed")))
        .route(
            "/peer",
            get(
                |ConnectInfo(peer): ConnectInfo<SocketAddr>, version: http::Version| async move {
                    format!("{} {version:?}", peer.ip())
                },
            ),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_http2_streams_on_one_connection_each_get_every_event() {
    let cert = TestCert::new();
    let manager = Manager::new();
    let server = TlsServer::start(Server::new(app(&manager)).tls(cert.tls())).await;

    let mut client = H2Client::connect(&cert, server.addr).await;
    let peer = client.get("/peer").await;
    assert_eq!(peer.version(), http::Version::HTTP_2);
    let mut streams = Vec::new();
    for _ in 0..10 {
        let response = client.get("/feed").await;
        assert_eq!(response.version(), http::Version::HTTP_2);
        streams.push(BodyEvents::new(response));
    }
    manager.wait_until(|s| s.subscribers == 10).await;
    for n in 0..5 {
        manager.publish("feed", &n);
    }
    for stream in &mut streams {
        assert_eq!(stream.data(5).await, ["0", "1", "2", "3", "4"]);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_sees_the_peer_address_and_the_version_over_tls() {
    use http_body_util::BodyExt;
    let cert = TestCert::new();
    let manager = Manager::new();
    let server = TlsServer::start(Server::new(app(&manager)).tls(cert.tls())).await;
    for (answer, expected) in [
        (
            H2Client::connect(&cert, server.addr)
                .await
                .get("/peer")
                .await,
            "127.0.0.1 HTTP/2.0",
        ),
        (
            H1Client::connect(&cert, server.addr)
                .await
                .get("/peer", None)
                .await,
            "127.0.0.1 HTTP/1.1",
        ),
    ] {
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, expected);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http11_client_over_tls_streams_and_resumes_on_the_frameworks_engine() {
    http11_over_tls_streams_and_resumes_with(Server::new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_on_the_hyper_engine() {
    http11_over_tls_streams_and_resumes_with(|app| Server::new(app).hyper()).await;
}

async fn http11_over_tls_streams_and_resumes_with(server: impl FnOnce(Router) -> Server) {
    let cert = TestCert::new();
    let manager = Manager::new();
    let server = TlsServer::start(server(app(&manager)).tls(cert.tls())).await;
    let mut client = H1Client::connect(&cert, server.addr).await;
    let response = client.get("/feed", None).await;
    assert_eq!(response.version(), http::Version::HTTP_11);
    let mut stream = BodyEvents::new(response);
    manager.wait_until(|s| s.subscribers == 1).await;
    for n in 0..3 {
        manager.publish("feed", &n);
    }
    let first = stream.next().await.unwrap();
    assert_eq!(first.data, "0");
    drop(stream);
    drop(client);
    manager.wait_until(|s| s.subscribers == 0).await;
    manager.publish("feed", &3);

    let mut client = H1Client::connect(&cert, server.addr).await;
    let mut stream = BodyEvents::new(client.get("/feed", first.id.as_deref()).await);
    assert_eq!(
        stream.data(3).await,
        ["1", "2", "3"],
        "resumed after {first:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_picks_h2_when_offered_and_http11_when_http2_is_off() {
    let cert = TestCert::new();
    let manager = Manager::new();
    let both: &[&[u8]] = &[b"h2", b"http/1.1"];

    // The client is no HTTP/2 client: it never answers the server's `GOAWAY`, and the
    // server's shutdown does not wait for it.
    let server = TlsServer::start(Server::new(app(&manager)).tls(cert.tls())).await;
    let tls = cert.connect(server.addr, both).await.unwrap();
    assert_eq!(alpn_of(&tls).as_deref(), Some(&b"h2"[..]));
    server.stop().await;

    let server = TlsServer::start(Server::new(app(&manager)).tls(cert.tls()).http2(false)).await;
    let tls = cert.connect(server.addr, both).await.unwrap();
    assert_eq!(alpn_of(&tls).as_deref(), Some(&b"http/1.1"[..]));
    let refused = cert.connect(server.addr, &[b"h2"]).await;
    assert!(
        refused.is_err(),
        "a client that speaks h2 alone is refused: {refused:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_comes_is_closed_after_the_head_timeout() {
    let cert = TestCert::new();
    let manager = Manager::new();
    let server = Server::new(app(&manager))
        .tls(cert.tls())
        .head_timeout(Duration::from_millis(300));
    let server = TlsServer::start(server).await;
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(PATIENCE, silent.read(&mut byte))
        .await
        .expect("the server closes the connection in time");
    assert!(matches!(read, Ok(0) | Err(_)), "closed: {read:?}");
    // A plain-text request on the TLS port is a failed handshake: closed, no stream.
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /feed HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, plain.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .ok();
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "no stream over plain text: {answer:?}"
    );
    assert_eq!(manager.stats().subscribers, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_with_no_request_open_is_closed_after_the_head_timeout() {
    let cert = TestCert::new();
    let manager = Manager::new();
    let head_timeout = Duration::from_millis(300);
    let server = Server::new(app(&manager))
        .tls(cert.tls())
        .head_timeout(head_timeout);
    let server = TlsServer::start(server).await;

    // One that never asks for anything.
    let idle = H2Client::connect(&cert, server.addr).await;
    idle.closed().await;

    // One with a stream open stays, however long the stream is quiet; once the stream is gone,
    // it is closed too.
    let mut busy = H2Client::connect(&cert, server.addr).await;
    let mut stream = BodyEvents::new(busy.get("/feed").await);
    manager.wait_until(|s| s.subscribers == 1).await;
    // Time has to pass for the timeout to have had its chance: nothing to await instead.
    tokio::time::sleep(head_timeout * 4).await;
    manager.publish("feed", &"still here");
    assert_eq!(stream.data(1).await, ["\"still here\""]);
    drop(stream);
    busy.closed().await;
    server.stop().await;
}

async fn shutdown_ends_tls_streams(server: impl FnOnce(Router) -> Server) {
    let cert = TestCert::new();
    let manager = Manager::new();
    let server = TlsServer::start(server(app(&manager)).tls(cert.tls())).await;
    let mut h2 = H2Client::connect(&cert, server.addr).await;
    let mut h1 = H1Client::connect(&cert, server.addr).await;
    let mut streams = vec![
        BodyEvents::new(h2.get("/feed").await),
        BodyEvents::new(h2.get("/feed").await),
        BodyEvents::new(h1.get("/feed", None).await),
    ];
    manager.wait_until(|s| s.subscribers == 3).await;
    server.stop().await;
    for stream in &mut streams {
        stream.until_end().await;
    }
    assert!(manager.is_shut_down());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_http2_and_http11_streams_over_tls() {
    shutdown_ends_tls_streams(Server::new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_with_http11_on_the_hyper_engine() {
    shutdown_ends_tls_streams(|app| Server::new(app).hyper()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_gives_new_handshakes_the_new_certificate_while_open_streams_go_on() {
    let (old, new) = (TestCert::new(), TestCert::new());
    let manager = Manager::new();
    let tls = old.tls();
    let server = TlsServer::start(Server::new(app(&manager)).tls(tls.clone())).await;
    let mut before = H2Client::connect(&old, server.addr).await;
    let mut stream = BodyEvents::new(before.get("/feed").await);
    manager.wait_until(|s| s.subscribers == 1).await;

    let dir = std::env::temp_dir().join(format!("sse-tls-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, &new.cert_pem).unwrap();
    std::fs::write(&key_path, &new.key_pem).unwrap();
    tls.reload(&cert_path, &key_path).unwrap();

    let trusting_old = old.connect(server.addr, &[b"h2"]).await;
    assert!(
        trusting_old.is_err(),
        "the old certificate is no longer presented"
    );
    let mut after = H2Client::connect(&new, server.addr).await;
    let mut second = BodyEvents::new(after.get("/feed").await);
    manager.wait_until(|s| s.subscribers == 2).await;
    manager.publish("feed", &1);
    assert_eq!(
        stream.data(1).await,
        ["1"],
        "the stream opened before the reload goes on"
    );
    assert_eq!(second.data(1).await, ["1"]);

    // A reload that fails keeps what was there.
    std::fs::write(&key_path, &old.key_pem).unwrap();
    let mismatch = tls.reload(&cert_path, &key_path).unwrap_err();
    assert!(matches!(mismatch, TlsError::Key(_)), "{mismatch:?}");
    H2Client::connect(&new, server.addr).await;
    std::fs::remove_dir_all(&dir).unwrap();
    server.stop().await;
}

#[test]
fn bad_certificates_and_keys_are_errors_that_say_what_is_wrong() {
    let cert = TestCert::new();
    let other = TestCert::new();
    let (pem, key) = (cert.cert_pem.as_bytes(), cert.key_pem.as_bytes());

    let error = Tls::from_pem(b"not a certificate", key).unwrap_err();
    assert!(matches!(error, TlsError::NoCertificate), "{error:?}");
    assert_eq!(
        error.to_string(),
        "the certificate PEM holds no certificate"
    );

    let error = Tls::from_pem(pem, b"not a key").unwrap_err();
    assert!(
        matches!(
            error,
            TlsError::Pem {
                what: "private key",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "the private key PEM is not valid");
    assert!(std::error::Error::source(&error).is_some());

    let error = Tls::from_pem(pem, other.key_pem.as_bytes()).unwrap_err();
    assert!(matches!(error, TlsError::Key(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("the private key cannot be used"),
        "{error}"
    );

    let error = Tls::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
    assert!(
        matches!(&error, TlsError::Read { path, .. } if path.ends_with("cert.pem")),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "cannot read /nonexistent/cert.pem");

    use tokio_rustls::rustls::{self, pki_types::pem::PemObject};
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![rustls::pki_types::CertificateDer::from_pem_slice(pem).unwrap()],
        rustls::pki_types::PrivateKeyDer::from_pem_slice(key).unwrap(),
    )
    .unwrap();
    let fixed = Tls::from_config(config);
    let error = fixed.reload_pem(pem, key).unwrap_err();
    assert!(matches!(error, TlsError::NotReloadable), "{error:?}");
}

/// On the framework's engine, a write over TLS encrypts into the session, and what the socket
/// did not take stays there until flushed: a burst larger than the socket's buffers, sent to a
/// client that reads only afterwards, must still arrive whole at once (not at the next
/// heartbeat, 30 s away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_the_socket_buffers_arrives_whole_over_tls() {
    let cert = TestCert::new();
    let (events, size) = (256, 64 * 1024);
    let manager = Manager::builder()
        .history(events)
        .max_lag(events)
        .history_bytes(32 << 20)
        .max_lag_bytes(32 << 20)
        .build()
        .unwrap();
    let server = TlsServer::start(Server::new(app(&manager)).tls(cert.tls())).await;
    let filler = "x".repeat(size);
    // Whether the last write finds the socket full is up to timing: three rounds (unflushed,
    // one round in two lost its end).
    for round in 0..3 {
        // A narrow receive window keeps the socket full while the client reads.
        let narrow = cert
            .connect_narrow(server.addr, &[b"http/1.1"], 4096)
            .await
            .unwrap();
        let mut client = H1Client::over(narrow).await;
        let mut stream = BodyEvents::new(client.get("/feed", None).await);
        manager.wait_until(|s| s.subscribers == 1).await;
        for n in 0..events {
            manager.publish("feed", &format!("{round}/{n} {filler}"));
        }
        for n in 0..events {
            let event = stream.next().await.expect("open");
            assert!(
                event.data.starts_with(&format!("\"{round}/{n} ")),
                "event {n} in order"
            );
        }
        drop(stream);
        drop(client);
        manager.wait_until(|s| s.subscribers == 0).await;
    }
    server.stop().await;
}
