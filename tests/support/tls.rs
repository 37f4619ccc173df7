//! HTTPS for the tests: a certificate the test makes (for `localhost` and `127.0.0.1`),
//! rustls clients that trust it alone, and hyper's HTTP/1.1 and HTTP/2 clients over them,
//! reading SSE bodies frame by frame.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::{Frame, PATIENCE, frames};

/// A self-signed certificate for `localhost` and `127.0.0.1`, with its key.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    der: CertificateDer<'static>,
    /// base64 of the SHA-256 of its SubjectPublicKeyInfo: what Chromium's
    /// `--ignore-certificate-errors-spki-list` trusts (this key, nothing else).
    pub spki_sha256: String,
}

impl TestCert {
    pub fn new() -> Self {
        use rcgen::PublicKeyData;
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("a test certificate");
        let spki = signing_key.subject_public_key_info();
        let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
        Self {
            cert_pem: cert.pem(),
            key_pem: signing_key.serialize_pem(),
            der: cert.der().clone(),
            spki_sha256: base64::engine::general_purpose::STANDARD.encode(digest.as_ref()),
        }
    }

    /// Writes `cert.pem` and `key.pem` into `dir`, and returns their paths.
    pub fn write_to(&self, dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
        std::fs::create_dir_all(dir).expect("a directory for the certificate");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert.pem");
        std::fs::write(&key, &self.key_pem).expect("write key.pem");
        (cert, key)
    }

    /// The server side: `sse_runtime::serve::Tls` with this certificate.
    pub fn tls(&self) -> sse_runtime::serve::Tls {
        sse_runtime::serve::Tls::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes())
            .expect("the test certificate loads")
    }

    /// A client that trusts this certificate alone and offers `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).expect("a root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }

    /// A TLS connection to `addr` (as `localhost`), offering `alpn`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        self.connect_tcp(TcpStream::connect(addr).await?, alpn)
            .await
    }

    /// Like [`connect`](Self::connect) over a socket whose receive buffer holds `bytes`
    /// (about: the kernel doubles it): the server's writes find it full most of the time.
    pub async fn connect_narrow(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
        bytes: u32,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(bytes)?;
        self.connect_tcp(socket.connect(addr).await?, alpn).await
    }

    async fn connect_tcp(
        &self,
        tcp: TcpStream,
        alpn: &[&[u8]],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(PATIENCE, self.client(alpn).connect(name, tcp))
            .await
            .expect("handshake in time")
    }
}

impl Default for TestCert {
    fn default() -> Self {
        Self::new()
    }
}

/// The protocol a connection negotiated.
pub fn alpn_of(tls: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// hyper's HTTP/2 client on one TLS connection: every request a stream of that connection.
pub struct H2Client {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    connection: tokio::task::JoinHandle<hyper::Result<()>>,
}

impl H2Client {
    /// Connects offering `h2` alone; panics unless the server picked it.
    pub async fn connect(cert: &TestCert, addr: SocketAddr) -> Self {
        let tls = cert.connect(addr, &[b"h2"]).await.expect("TLS connection");
        assert_eq!(alpn_of(&tls).as_deref(), Some(&b"h2"[..]), "ALPN chose h2");
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("HTTP/2 handshake");
        let connection = tokio::spawn(connection);
        Self { sender, connection }
    }

    /// Waits until the server has closed the connection (cleanly: `GOAWAY`, then the close).
    pub async fn closed(self) {
        let Self { sender, connection } = self;
        let result = tokio::time::timeout(PATIENCE, connection)
            .await
            .expect("the server closes the connection in time")
            .unwrap();
        assert!(result.is_ok(), "closed cleanly: {result:?}");
        drop(sender);
    }

    /// A GET of `path` on a new stream of the connection.
    pub async fn get(&mut self, path: &str) -> http::Response<Incoming> {
        self.send(http::Method::GET, path, Bytes::new()).await
    }

    /// A request with `body` (JSON) on a new stream of the connection.
    pub async fn send(
        &mut self,
        method: http::Method,
        path: &str,
        body: impl Into<Bytes>,
    ) -> http::Response<Incoming> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .header("content-type", "application/json")
            .body(Full::new(body.into()))
            .unwrap();
        tokio::time::timeout(PATIENCE, self.sender.send_request(request))
            .await
            .expect("response in time")
            .expect("response")
    }
}

/// hyper's HTTP/1.1 client on one TLS connection (ALPN `http/1.1`).
pub struct H1Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1Client {
    pub async fn connect(cert: &TestCert, addr: SocketAddr) -> Self {
        let tls = cert
            .connect(addr, &[b"http/1.1"])
            .await
            .expect("TLS connection");
        Self::over(tls).await
    }

    /// Over a TLS connection of the caller's (see [`TestCert::connect_narrow`]).
    pub async fn over(tls: TlsStream<TcpStream>) -> Self {
        assert_eq!(alpn_of(&tls).as_deref(), Some(&b"http/1.1"[..]));
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        Self { sender }
    }

    /// A GET of `path`, with `Last-Event-ID` when given.
    pub async fn get(
        &mut self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> http::Response<Incoming> {
        let mut request = http::Request::get(path).header("host", "localhost");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let request = request.body(Full::new(Bytes::new())).unwrap();
        tokio::time::timeout(PATIENCE, self.sender.send_request(request))
            .await
            .expect("response in time")
            .expect("response")
    }
}

/// The events of an SSE response body, as they arrive.
pub struct BodyEvents {
    body: Incoming,
    pending: Vec<u8>,
    events: VecDeque<Frame>,
}

impl BodyEvents {
    pub fn new(response: http::Response<Incoming>) -> Self {
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            body: response.into_body(),
            pending: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// The next event (a block with data); `None` when the body ended.
    pub async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(event) = self.events.pop_front() {
                    return Some(event);
                }
                let frame = self.body.frame().await?.expect("body frame");
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                self.pending.extend_from_slice(&data);
                if let Some(end) = self.pending.windows(2).rposition(|w| w == b"\n\n") {
                    let whole: Vec<u8> = self.pending.drain(..end + 2).collect();
                    self.events.extend(frames(&whole));
                }
            }
        })
        .await
        .expect("an event or the end in time")
    }

    /// The next `n` events' data.
    pub async fn data(&mut self, n: usize) -> Vec<String> {
        let mut data = Vec::with_capacity(n);
        for _ in 0..n {
            data.push(self.next().await.expect("the stream is open").data);
        }
        data
    }

    /// Waits for the body to end, skipping events.
    pub async fn until_end(&mut self) {
        while self.next().await.is_some() {}
    }
}
