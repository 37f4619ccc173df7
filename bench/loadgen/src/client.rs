//! Lean HTTP/1.1 clients: thousands of SSE subscribers (hand-rolled chunked and SSE decoding,
//! so the load generator costs little CPU) and keep-alive publishers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Whether subscribers parse each event's data as JSON (`--parse-json`) instead of scanning it
/// for the two numbers they need: a heavier client, as a typical one is.
pub static PARSE_JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Connection attempts in flight at once.
static CONNECTING: Semaphore = Semaphore::const_new(128);

#[derive(Default, Clone, Copy)]
pub struct Totals {
    pub delivered: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub connect_errors: u64,
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.delivered += other.delivered;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.connect_errors += other.connect_errors;
    }
}

#[derive(Default)]
pub struct Report {
    pub totals: Totals,
    pub latencies_us: Vec<u32>,
}

pub struct Subscriber {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Report>,
}

impl Subscriber {
    pub fn spawn(
        addr: SocketAddr,
        source: IpAddr,
        topic: String,
        events: u64,
        received: Arc<AtomicU64>,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut report = Report::default();
            let mut stopped = stopped;
            tokio::select! {
                result = follow(addr, source, &topic, events, &received, &mut report) => {
                    if result.is_err() { report.totals.connect_errors += 1; }
                }
                _ = stopped.changed() => {}
            }
            report
        });
        Self { stop, task }
    }

    pub fn finish(self) -> Report {
        let _ = self.stop.send(true);
        futures_block_on(self.task)
    }
}

/// Awaits a finished (or just stopped) task from synchronous code inside the runtime.
fn futures_block_on(task: tokio::task::JoinHandle<Report>) -> Report {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(task))
        .unwrap_or_default()
}

/// Connects from `source`, retrying a few times: with tens of thousands of connections a
/// picked port can collide with a 4-tuple still in TIME_WAIT.
async fn connect_from(addr: SocketAddr, source: IpAddr) -> std::io::Result<TcpStream> {
    let mut attempt = 0;
    loop {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        match socket.connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(error) if attempt >= 4 => return Err(error),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
        }
    }
}

async fn follow(
    addr: SocketAddr,
    source: IpAddr,
    topic: &str,
    events: u64,
    received: &AtomicU64,
    report: &mut Report,
) -> std::io::Result<()> {
    // A connection the server has not answered within 10 s is abandoned and made again.
    let mut attempts = 0;
    let (mut stream, head, body_start) = loop {
        attempts += 1;
        // At most CONNECTING connection attempts at once: a flood of SYNs overflows the server's
        // accept queue (often only 128 deep) and the kernel's retransmission back-off then
        // stretches the connect phase to minutes.
        let permit = CONNECTING.acquire().await.expect("never closed");
        let opened = tokio::time::timeout(Duration::from_secs(10), open(addr, source, topic)).await;
        drop(permit);
        match opened {
            Ok(Ok(opened)) => break opened,
            Ok(Err(error)) if attempts >= 5 => return Err(error),
            Err(_) if attempts >= 5 => return Err(std::io::ErrorKind::TimedOut.into()),
            _ => {}
        }
    };
    let mut buf = vec![0u8; 16 * 1024];
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other("status is not 200"));
    }
    if refused_stream(&head[..body_start]) {
        return Err(std::io::Error::other(
            "refused (a 200 stream with Retry-After)",
        ));
    }
    let mut decoder = Decoder::default();
    report.latencies_us.reserve(events as usize);
    let mut tracker = Tracker {
        next: 0,
        unreported: 0,
        report,
    };
    decoder.feed(&head[body_start..], &mut |data| tracker.on_data(data));
    while tracker.next < events || events == 0 {
        // Counted once per read, not per event: the counter is shared by every subscriber.
        received.fetch_add(std::mem::take(&mut tracker.unreported), Ordering::Relaxed);
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        decoder.feed(&buf[..n], &mut |data| tracker.on_data(data));
    }
    received.fetch_add(tracker.unreported, Ordering::Relaxed);
    Ok(())
}

/// Connects, sends the request and reads the response head: the stream, what was read, and
/// where the body starts in it.
async fn open(
    addr: SocketAddr,
    source: IpAddr,
    topic: &str,
) -> std::io::Result<(TcpStream, Vec<u8>, usize)> {
    open_with(addr, source, &format!("/sse/{topic}"), None).await
}

/// [`open`] for any `path`, with `Last-Event-ID` when given.
pub async fn open_with(
    addr: SocketAddr,
    source: IpAddr,
    path: &str,
    last_event_id: Option<&str>,
) -> std::io::Result<(TcpStream, Vec<u8>, usize)> {
    let mut stream = connect_from(addr, source).await?;
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{resume}\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = [0u8; 4096];
    let mut head = Vec::new();
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((stream, head, at + 4));
        }
    }
}

/// Whether a 200 response `head` is a refusal: sse-runtime answers one with a 200 event stream
/// a browser comes back from, which carries `Retry-After`, as no served stream does.
pub fn refused_stream(head: &[u8]) -> bool {
    head.windows(b"\r\nretry-after:".len())
        .any(|w| w.eq_ignore_ascii_case(b"\r\nretry-after:"))
}

/// Checks the sequence of one subscriber's events and records their latency.
struct Tracker<'a> {
    next: u64,
    /// Events received and not yet added to the shared count.
    unreported: u64,
    report: &'a mut Report,
}

impl Tracker<'_> {
    fn on_data(&mut self, data: &[u8]) {
        let (seq, ts) = if PARSE_JSON.load(Ordering::Relaxed) {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
                return;
            };
            (value["s"].as_u64(), value["t"].as_u64())
        } else {
            (number_after(data, b"\"s\":"), number_after(data, b"\"t\":"))
        };
        let (Some(seq), Some(ts)) = (seq, ts) else {
            return;
        };
        let now = now_us();
        self.report
            .latencies_us
            .push(now.saturating_sub(ts).min(u32::MAX as u64) as u32);
        self.report.totals.delivered += 1;
        self.unreported += 1;
        if seq == self.next {
            self.next = seq + 1;
        } else if seq > self.next {
            self.report.totals.out_of_order += 1;
            self.next = seq + 1;
        } else {
            self.report.totals.duplicated += 1;
        }
    }
}

/// Microseconds since the Unix epoch: the events' timestamps, comparable between processes.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub fn number_after(haystack: &[u8], key: &[u8]) -> Option<u64> {
    let at = haystack.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = haystack[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut value = 0u64;
    let mut any = false;
    for d in digits {
        value = value * 10 + u64::from(d - b'0');
        any = true;
    }
    any.then_some(value)
}

/// Decodes a chunked HTTP body into SSE frames and hands each `data:` payload (or each whole
/// frame) to a callback.
#[derive(Default)]
pub struct Decoder {
    state: ChunkState,
    size: u64,
    sse: Vec<u8>,
}

#[derive(Default, PartialEq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    Data,
    DataEnd,
    Done,
}

impl Decoder {
    fn feed(&mut self, input: &[u8], on_data: &mut impl FnMut(&[u8])) {
        self.feed_frames(input, &mut |frame| {
            for line in frame.split(|&b| b == b'\n') {
                if let Some(data) = line.strip_prefix(b"data:") {
                    on_data(data);
                }
            }
        });
    }

    /// Hands each whole frame (its lines, without the blank line that ends it) to `on_frame`.
    pub fn feed_frames(&mut self, mut input: &[u8], on_frame: &mut impl FnMut(&[u8])) {
        while !input.is_empty() && self.state != ChunkState::Done {
            match self.state {
                ChunkState::Size => {
                    let b = input[0];
                    input = &input[1..];
                    match b {
                        b'0'..=b'9' => self.size = self.size * 16 + u64::from(b - b'0'),
                        b'a'..=b'f' => self.size = self.size * 16 + u64::from(b - b'a' + 10),
                        b'A'..=b'F' => self.size = self.size * 16 + u64::from(b - b'A' + 10),
                        b';' => self.state = ChunkState::Extension,
                        b'\n' => {
                            self.state = if self.size == 0 {
                                ChunkState::Done
                            } else {
                                ChunkState::Data
                            }
                        }
                        _ => {}
                    }
                }
                ChunkState::Extension => {
                    if input[0] == b'\n' {
                        self.state = if self.size == 0 {
                            ChunkState::Done
                        } else {
                            ChunkState::Data
                        };
                    }
                    input = &input[1..];
                }
                ChunkState::Data => {
                    let take = (self.size as usize).min(input.len());
                    self.sse.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                ChunkState::DataEnd => {
                    if input[0] == b'\n' {
                        self.state = ChunkState::Size;
                    }
                    input = &input[1..];
                }
                ChunkState::Done => {}
            }
        }
        self.frames(on_frame);
    }

    fn frames(&mut self, on_frame: &mut impl FnMut(&[u8])) {
        let mut consumed = 0;
        while let Some(end) = self.sse[consumed..].windows(2).position(|w| w == b"\n\n") {
            on_frame(&self.sse[consumed..consumed + end]);
            consumed += end + 2;
        }
        self.sse.drain(..consumed);
    }
}

/// A keep-alive connection that POSTs events, one request at a time.
pub struct Publisher {
    stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
    query: &'static str,
}

impl Publisher {
    /// `confirm`: ask the server to answer only once the event is sent (`?confirm`).
    pub async fn connect(addr: SocketAddr, confirm: bool) -> Self {
        let stream = TcpStream::connect(addr).await.expect("publisher connects");
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            addr,
            buf: vec![0; 4096],
            query: if confirm { "?confirm" } else { "" },
        }
    }

    pub async fn publish(&mut self, topic: &str, seq: u64, payload: usize) {
        self.publish_at(topic, seq, payload, now_us()).await;
    }

    /// [`publish`](Self::publish) with the event's timestamp given (µs since the Unix epoch).
    pub async fn publish_at(&mut self, topic: &str, seq: u64, payload: usize, ts: u64) {
        let mut body = format!("{{\"s\":{seq},\"t\":{ts},\"p\":\"\"}}");
        let pad = payload.saturating_sub(body.len());
        body.insert_str(body.len() - 2, &"x".repeat(pad));
        let request = format!(
            "POST /publish/{topic}{} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.query,
            self.addr,
            body.len()
        );
        self.stream
            .write_all(request.as_bytes())
            .await
            .expect("publish request");
        let mut head = Vec::new();
        loop {
            let n = self
                .stream
                .read(&mut self.buf)
                .await
                .expect("publish response");
            assert!(n > 0, "server closed the publisher connection");
            head.extend_from_slice(&self.buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        assert!(
            head.starts_with(b"HTTP/1.1 204"),
            "publish answered {:?}",
            String::from_utf8_lossy(&head)
        );
        // A proxy ends a keep-alive connection after so many requests (nginx: 1 000), saying
        // so in the answer: the next publish goes on a new connection, as any client's would.
        if head
            .to_ascii_lowercase()
            .windows(17)
            .any(|w| w == b"connection: close")
        {
            *self = Self::connect(self.addr, !self.query.is_empty()).await;
        }
    }
}

/// Polls `GET /stats` of every instance until together they report `wanted` subscribers and,
/// with a backplane, every instance has synced every topic it watches.
pub async fn wait_for_subscribers(addrs: &[SocketAddr], wanted: usize) {
    wait_for_stats(addrs, |all| {
        let subscribers: u64 = all
            .iter()
            .map(|s| s["subscribers"].as_u64().unwrap_or(0))
            .sum();
        let synced = all.iter().all(|s| {
            let backplane = &s["backplane"];
            backplane.is_null() || backplane["synced"] == backplane["watched"]
        });
        subscribers as usize >= wanted && synced
    })
    .await;
}

/// Polls `GET /stats` of every instance until `condition` holds over them all; returns those
/// stats, one per instance (the servers are separate processes: there is no event to await).
pub async fn wait_for_stats(
    addrs: &[SocketAddr],
    condition: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut all = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            match stats(addr).await {
                Ok(stats) => all.push(stats),
                Err(_) => break,
            }
        }
        if all.len() == addrs.len() && condition(&all) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "the servers' stats never reached the wanted state"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects, reads until the first `data:` frame, and disconnects.
pub async fn first_event(addr: SocketAddr, source: IpAddr, path: &str) -> std::io::Result<()> {
    let mut stream = connect_from(addr, source).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(6).any(|w| w == b"data: ") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

async fn stats(addr: SocketAddr) -> std::io::Result<serde_json::Value> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET /stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let body = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&response[..], |at| &response[at + 4..]);
    serde_json::from_slice(body).map_err(std::io::Error::other)
}
