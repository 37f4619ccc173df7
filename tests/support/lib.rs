//! Helpers shared by the workspace integration tests: a real axum server on loopback and real
//! SSE clients (reqwest + eventsource-stream, and raw TCP for byte-level checks).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;

use eventsource_stream::{Event, EventStream, Eventsource};
use futures_util::{Stream, StreamExt};
use sse_runtime::{CancellationToken, WriteDeadline};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long any single wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// An axum server on 127.0.0.1 with an ephemeral port, stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Serves `app` with a write deadline (as a deployment would).
    pub async fn start(app: axum::Router, write_deadline: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve(WriteDeadline::new(listener, write_deadline), app)
    }

    /// Serves `app` with `sse_runtime::serve` (SSE streams written straight to the socket) and a
    /// write deadline.
    pub async fn start_direct(app: axum::Router, write_deadline: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve_direct(WriteDeadline::new(listener, write_deadline), app)
    }

    /// Serves `app` with `sse_runtime::serve` on any listener bound to 127.0.0.1.
    pub fn serve_direct<L>(listener: L, app: axum::Router) -> Self
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let task = tokio::spawn(sse_runtime::serve::serve_with_shutdown(
            listener,
            app,
            stop.clone().cancelled_owned(),
        ));
        Self {
            addr,
            stop,
            task: Some(task),
        }
    }

    /// Serves `app` on any listener bound to 127.0.0.1.
    pub fn serve<L>(listener: L, app: axum::Router) -> Self
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                    .expect("serve");
            }
        });
        Self {
            addr,
            stop,
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops accepting and waits for open connections to finish.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("server stops")
                .expect("no panic");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A listener whose connections the test can cut, as a crashing proxy or a flaky network
/// would: the server sees an I/O error, the client a dropped connection.
pub struct CuttableListener {
    inner: tokio::net::TcpListener,
    live: Arc<Mutex<Vec<Weak<Cut>>>>,
}

/// The switch of one connection.
#[derive(Default)]
pub struct Cut {
    cut: AtomicBool,
    read: AtomicWaker,
    write: AtomicWaker,
}

impl Cut {
    fn trigger(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.read.wake();
        self.write.wake();
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

/// Cuts connections of a [`CuttableListener`].
#[derive(Clone)]
pub struct Cutter {
    live: Arc<Mutex<Vec<Weak<Cut>>>>,
    seed: Arc<AtomicU64>,
}

impl Cutter {
    /// Cuts a random `fraction` of the open connections (at least one if any is open); returns
    /// how many were cut.
    pub fn cut_random(&self, fraction: f64) -> usize {
        let open: Vec<Arc<Cut>> = {
            let mut live = self.live.lock().unwrap();
            live.retain(|cut| cut.strong_count() > 0);
            live.iter()
                .filter_map(Weak::upgrade)
                .filter(|cut| !cut.is_cut())
                .collect()
        };
        let wanted =
            ((open.len() as f64 * fraction).round() as usize).max(usize::from(!open.is_empty()));
        let mut chosen = std::collections::HashSet::new();
        while chosen.len() < wanted {
            chosen.insert((self.next_random() % open.len() as u64) as usize);
        }
        for index in &chosen {
            open[*index].trigger();
        }
        chosen.len()
    }

    /// xorshift64*: reproducible from the seed, good enough to pick victims.
    fn next_random(&self) -> u64 {
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.seed.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl CuttableListener {
    pub async fn bind(seed: u64) -> (Self, Cutter) {
        let inner = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let live = Arc::new(Mutex::new(Vec::new()));
        let cutter = Cutter {
            live: live.clone(),
            seed: Arc::new(AtomicU64::new(seed | 1)),
        };
        (Self { inner, live }, cutter)
    }
}

impl axum::serve::Listener for CuttableListener {
    type Io = CuttableIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let cut = Arc::new(Cut::default());
        self.live.lock().unwrap().push(Arc::downgrade(&cut));
        (CuttableIo { io, cut }, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection of a [`CuttableListener`].
pub struct CuttableIo {
    io: TcpStream,
    cut: Arc<Cut>,
}

fn reset() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut by the test")
}

impl tokio::io::AsyncRead for CuttableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.cut.read.register(cx.waker());
        if self.cut.is_cut() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CuttableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.cut.write.register(cx.waker());
        if self.cut.is_cut() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.cut.is_cut() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

type ByteStream = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// An SSE client: reqwest for HTTP, eventsource-stream for the event-stream format.
pub struct SseClient {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    events: EventStream<ByteStream>,
    /// The last event id as a browser keeps it (see [`LastEventId`]).
    last_event_id: LastEventId,
}

/// A client's last event id as WHATWG HTML's `EventSource` keeps it: the `id:` field of the
/// newest block that ended, whether or not it carried data (a block with an id and no data sets
/// it and dispatches nothing). `eventsource-stream` only reports ids on dispatched events, so
/// the bytes are read here too, on their way to it.
#[derive(Clone, Default)]
pub struct LastEventId {
    state: Arc<Mutex<(String, Option<String>)>>,
    changed: Arc<tokio::sync::Notify>,
}

impl LastEventId {
    /// Reads `bytes` (any piece of the body): every block that ends in them with an `id:`
    /// field sets the id.
    fn feed(&self, bytes: &[u8]) {
        let mut state = self.state.lock().unwrap();
        let (pending, id) = &mut *state;
        pending.push_str(&String::from_utf8_lossy(bytes));
        let Some(end) = pending.rfind("\n\n") else {
            return;
        };
        let mut changed = false;
        for block in pending[..end].split("\n\n") {
            if let Some(value) = block.lines().rev().find_map(|l| l.strip_prefix("id: ")) {
                *id = Some(value.to_owned());
                changed = true;
            }
        }
        pending.drain(..end + 2);
        drop(state);
        if changed {
            self.changed.notify_waiters();
        }
    }

    /// The id now, if any was set.
    pub fn get(&self) -> Option<String> {
        self.state.lock().unwrap().1.clone()
    }

    /// Waits until an id is set (or changed from `not`), and returns it.
    pub async fn wait_for(&self, not: Option<&str>) -> String {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let changed = self.changed.notified();
                if let Some(id) = self.get().filter(|id| Some(id.as_str()) != not) {
                    return id;
                }
                changed.await;
            }
        })
        .await
        .expect("the stream sets its client's last event id in time")
    }
}

impl SseClient {
    pub async fn connect(url: &str) -> Self {
        Self::connect_with(url, None).await
    }

    /// Connects, sending `Last-Event-ID` when given.
    pub async fn connect_with(url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::time::timeout(PATIENCE, request.send())
            .await
            .expect("response headers in time")
            .expect("request succeeds");
        let (status, headers) = (response.status(), response.headers().clone());
        let last_event_id = LastEventId::default();
        let tracked = last_event_id.clone();
        let bytes: ByteStream = Box::pin(response.bytes_stream().inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                tracked.feed(bytes);
            }
        }));
        Self {
            status,
            headers,
            events: bytes.eventsource(),
            last_event_id,
        }
    }

    /// The last event id as a browser keeps it, read as the client reads events (only what
    /// [`next`](Self::next) and its kin have pulled from the connection counts).
    pub fn last_event_id(&self) -> &LastEventId {
        &self.last_event_id
    }

    /// Reads the stream until its client's last event id is set, and returns it: what a
    /// browser would send if the connection were cut now. Events read meanwhile are returned
    /// too, in order.
    pub async fn position(&mut self) -> (String, Vec<Event>) {
        let mut events = Vec::new();
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(id) = self.last_event_id.get() {
                    return (id, events);
                }
                tokio::select! {
                    biased;
                    () = self.last_event_id.changed.notified() => {}
                    event = self.events.next() => match event {
                        Some(Ok(event)) => events.push(event),
                        other => panic!("the stream ended before it said where it is: {other:?}"),
                    },
                }
            }
        })
        .await
        .expect("the stream says where its client is in time")
    }

    /// The next event (comments and retry hints are consumed by the parser); `None` when the
    /// server ended the stream.
    pub async fn next(&mut self) -> Option<Event> {
        match tokio::time::timeout(PATIENCE, self.events.next())
            .await
            .expect("event in time")
        {
            Some(Ok(event)) => Some(event),
            Some(Err(error)) => panic!("stream error: {error}"),
            None => None,
        }
    }

    /// The next event or transport error, however long it takes (heartbeats are skipped);
    /// `None` at the end. For clients that, like a browser, wait as long as the stream is open.
    pub async fn next_raw(
        &mut self,
    ) -> Option<Result<Event, eventsource_stream::EventStreamError<reqwest::Error>>> {
        self.events.next().await
    }

    /// The next event, which must exist.
    pub async fn event(&mut self) -> Event {
        self.next().await.expect("stream still open")
    }

    /// Waits until the connection is gone (ended by the server or cut on the way), skipping
    /// events; a transport error counts as the end, as it does for a browser.
    pub async fn until_dropped(&mut self) {
        while let Some(Ok(_)) = tokio::time::timeout(PATIENCE, self.events.next())
            .await
            .expect("connection ends in time")
        {}
    }

    /// Waits for the server to end the stream, skipping events.
    pub async fn until_end(&mut self) {
        while self.next().await.is_some() {}
    }
}

/// The one SSE frame parser of every test crate (`test-support/frames`).
pub use sse_test_frames::{Frame, data_of, frames, sequences_of, whole_frames};

/// A client with a 4 KiB receive window that sends `GET path` and never reads: the server's
/// socket buffers for it fill up and its writes stall.
pub async fn stalled_client(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket.connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    stream
}

/// A raw HTTP/1.1 client for byte-level checks: sends a GET, reads the response head.
pub struct RawClient {
    pub reader: BufReader<TcpStream>,
    pub head: String,
}

impl RawClient {
    pub async fn get(addr: SocketAddr, path: &str) -> Self {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        Self::send(addr, request.as_bytes()).await
    }

    /// A GET from the loopback address `from` (any of 127.0.0.0/8), so one test can be
    /// several clients as the server counts them.
    pub async fn get_from(from: std::net::Ipv4Addr, addr: SocketAddr, path: &str) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind((from, 0).into())
            .expect("bind the client address");
        let stream = socket.connect(addr).await.expect("connect");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        Self::send_on(stream, request.as_bytes()).await
    }

    /// The response's status code.
    pub fn status(&self) -> u16 {
        self.head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {:?}", self.head))
    }

    /// The value of the response header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// Like [`send`](Self::send), from the loopback address `from` (any of 127.0.0.0/8).
    pub async fn send_from(from: std::net::Ipv4Addr, addr: SocketAddr, request: &[u8]) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind((from, 0).into())
            .expect("bind the client address");
        let stream = socket.connect(addr).await.expect("connect");
        Self::send_on(stream, request).await
    }

    /// Sends `request` as written (any method, version and headers) and reads the head.
    pub async fn send(addr: SocketAddr, request: &[u8]) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::send_on(stream, request).await
    }

    async fn send_on(mut stream: TcpStream, request: &[u8]) -> Self {
        stream.write_all(request).await.expect("send request");
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(PATIENCE, reader.read_line(&mut line))
                .await
                .expect("head in time")
                .expect("read head");
            assert!(n > 0, "connection closed during the head: {head}");
            head.push_str(&line);
            if line == "\r\n" {
                return Self { reader, head };
            }
        }
    }

    /// Reads at least one byte of body (chunked encoding framing included).
    pub async fn read_some(&mut self) -> Vec<u8> {
        let mut buf = vec![0; 64 * 1024];
        let n = tokio::time::timeout(PATIENCE, self.reader.read(&mut buf))
            .await
            .expect("bytes in time")
            .expect("read");
        buf.truncate(n);
        buf
    }

    /// Reads until the accumulated body contains `needle`; returns everything read.
    pub async fn read_until_contains(&mut self, needle: &[u8]) -> Vec<u8> {
        let mut seen = Vec::new();
        while !seen.windows(needle.len()).any(|w| w == needle) {
            let more = self.read_some().await;
            assert!(
                !more.is_empty(),
                "closed before {:?}",
                String::from_utf8_lossy(needle)
            );
            seen.extend(more);
        }
        seen
    }
}

/// A TCP proxy on 127.0.0.1 in front of a server, whose connections the test can cut the way a
/// proxy's idle timeout or a network blip does: both the client and the server see their
/// connection end, and the client reconnects through the proxy; or freeze them, so they stay
/// open and fall silent.
pub struct CuttingProxy {
    pub addr: SocketAddr,
    /// Where new connections go (see [`Self::redirect`]).
    upstream: Arc<Mutex<SocketAddr>>,
    open: Arc<Mutex<Vec<Handle>>>,
    accepted: Arc<AtomicU64>,
    /// While set, a new connection is closed as soon as it is accepted (see [`Self::refuse`]).
    refusing: Arc<AtomicBool>,
    stop: CancellationToken,
}

/// What the proxy can do to one open connection.
struct Handle {
    /// Closes it.
    cut: CancellationToken,
    /// Stops forwarding but keeps both sockets open (until the proxy goes).
    freeze: CancellationToken,
}

impl CuttingProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let open: Arc<Mutex<Vec<Handle>>> = Arc::default();
        let accepted = Arc::new(AtomicU64::new(0));
        let refusing = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let upstream = Arc::new(Mutex::new(upstream));
        tokio::spawn({
            let (open, accepted, stop) = (open.clone(), accepted.clone(), stop.clone());
            let (refusing, upstream) = (refusing.clone(), upstream.clone());
            async move {
                loop {
                    let (mut client, _) = tokio::select! {
                        () = stop.cancelled() => return,
                        accepted = listener.accept() => accepted.expect("accept"),
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    if refusing.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let (cut, freeze) = (stop.child_token(), CancellationToken::new());
                    open.lock().unwrap().push(Handle {
                        cut: cut.clone(),
                        freeze: freeze.clone(),
                    });
                    let upstream = *upstream.lock().unwrap();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            () = cut.cancelled() => {}
                            // Silent from now on, but both sockets stay open.
                            () = freeze.cancelled() => cut.cancelled().await,
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        }
                    });
                }
            }
        });
        Self {
            addr,
            upstream,
            open,
            accepted,
            refusing,
            stop,
        }
    }

    /// Sends every new connection to `upstream` from now on and cuts the open ones: what a
    /// failover does behind a virtual IP or a DNS name (a managed Redis's primary endpoint),
    /// so the clients reconnect to the new server without being told.
    pub fn redirect(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
        self.cut_all();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// While `refuse` holds, every new connection is closed as soon as it is accepted, before
    /// it reaches the server: a client's reconnect fails with a network error (a browser's
    /// `EventSource` tries again after its retry delay), so a test decides when it gets through.
    pub fn refuse(&self, refuse: bool) {
        self.refusing.store(refuse, Ordering::SeqCst);
    }

    /// Cuts every connection open through the proxy; returns how many.
    pub fn cut_all(&self) -> usize {
        let open = std::mem::take(&mut *self.open.lock().unwrap());
        let live = open.iter().filter(|h| !h.cut.is_cancelled()).count();
        open.iter().for_each(|h| h.cut.cancel());
        live
    }

    /// Makes every connection open through the proxy fall silent while staying open, the way a
    /// connection dies behind a NAT or a crashed middlebox: no FIN, no RST, just nothing (what
    /// a liveness probe exists to detect). Connections made later are forwarded normally.
    pub fn freeze_all(&self) {
        let open = std::mem::take(&mut *self.open.lock().unwrap());
        open.iter().for_each(|h| h.freeze.cancel());
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A log writer for `tracing_subscriber::fmt().with_writer(..)` that keeps everything written,
/// for tests that read what was logged.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Installs the process's `tracing` subscriber (once per test binary): plain-text lines at
    /// `INFO` and above, kept here.
    pub fn install() -> Self {
        let captured = Self::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .init();
        captured
    }

    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// This process's resident memory, in KiB (Linux).
pub fn rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

mod redis_cluster;
mod redis_server;
pub use redis_cluster::{Redis, RedisCluster};
pub use redis_server::RedisServer;
mod contract;
pub mod faults;
pub mod proxies;
pub mod tls;
pub use contract::{asyncapi_parser, tsc};

#[derive(serde::Deserialize)]
pub struct Key {
    key: Option<String>,
}

/// A test guard: admits `?key=sesame`, refuses anything else with `403 wrong key`.
pub async fn has_key(
    axum::extract::Query(q): axum::extract::Query<Key>,
) -> Result<(), (axum::http::StatusCode, &'static str)> {
    match q.key.as_deref() {
        Some("sesame") => Ok(()),
        _ => Err((axum::http::StatusCode::FORBIDDEN, "wrong key")),
    }
}
