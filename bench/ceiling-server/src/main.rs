//! The ceiling for the benchmarks: the bench protocol written with tokio alone, as lean as an
//! SSE fan-out server can be, so that the framework is measured against the practical limit as
//! well as against the usual hand-rolled server (`baseline-server`).
//!
//! - `GET /sse/{topic}`: an SSE stream of the topic (chunked, as the other servers send it);
//! - `POST /publish/{topic}` with a body (`Content-Length`): the body becomes one event,
//!   `id: {seq}\ndata: {body}\n\n`, appended to the topic's log; `204 No Content`;
//! - `GET /stats`: `{"topics": .., "subscribers": ..}`.
//!
//! What it leaves out, and a framework cannot: routing, extractors, JSON parsing of the body,
//! heartbeats, resume, caps, metrics. What it keeps, because a server cannot do without it:
//! a bounded log per topic (a subscriber that falls out of it is disconnected), hang-up
//! detection, keep-alive for publishers.
//!
//! The hot path: a publish appends one frame to the topic's log (one allocation per event, on
//! the publisher) and wakes every waiting subscriber; each subscriber's task copies what it has
//! not sent, from its cursor to the head, into its own reused buffer and writes it with one
//! `write` (one chunk). No allocation per delivered event.
//!
//! `PORT` (default 8080, 127.0.0.1; 0 picks a free port), `BACKLOG` (the accept queue; default
//! the deepest the system allows). Prints
//! `ceiling-server listening on http://ADDR`. Exits on SIGTERM or SIGINT.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Poll, Waker};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Events a topic keeps: a subscriber whose next event was evicted is disconnected (the
/// baseline's `broadcast` channel has the same capacity).
const CAPACITY: usize = 1024;

/// Longest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// Largest publish body.
const MAX_BODY: usize = 64 * 1024;

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";

#[derive(Default)]
struct Hub {
    /// Topics with at least one subscriber. A topic is created and removed under this lock.
    topics: Mutex<HashMap<Box<str>, Arc<Topic>>>,
    subscribers: AtomicUsize,
}

struct Topic {
    /// Frames, oldest first, and the sequence numbers of the first and of the next.
    log: RwLock<Log>,
    /// Tasks of subscribers that found nothing to send. A publish takes them all and wakes
    /// them; a subscriber registers before it looks at the log a last time, so no wake-up is
    /// lost. (The spare vector keeps the publisher from allocating.)
    waiters: Mutex<Vec<Waker>>,
    spare: Mutex<Vec<Waker>>,
    /// Its subscribers; changed under the hub's lock.
    subscribers: AtomicUsize,
}

struct Log {
    frames: VecDeque<Bytes>,
    first: u64,
    next: u64,
}

impl Topic {
    fn new() -> Self {
        Self {
            log: RwLock::new(Log {
                frames: VecDeque::with_capacity(CAPACITY),
                first: 1,
                next: 1,
            }),
            waiters: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            subscribers: AtomicUsize::new(0),
        }
    }

    fn publish(&self, body: &[u8]) {
        {
            let mut log = self.log.write().unwrap();
            let seq = log.next;
            let mut frame = Vec::with_capacity(body.len() + 32);
            write!(frame, "id: {seq}\ndata: ").expect("a Vec takes every write");
            frame.extend_from_slice(body);
            frame.extend_from_slice(b"\n\n");
            log.frames.push_back(Bytes::from(frame));
            log.next += 1;
            if log.frames.len() > CAPACITY {
                log.frames.pop_front();
                log.first += 1;
            }
        }
        let mut spare = self.spare.lock().unwrap();
        std::mem::swap(&mut *spare, &mut *self.waiters.lock().unwrap());
        for waker in spare.drain(..) {
            waker.wake();
        }
    }

    /// Copies the frames from `cursor` on into `buf` as one HTTP chunk; the cursor after them.
    /// `None` when the subscriber's next event was evicted.
    fn read(&self, cursor: u64, buf: &mut Vec<u8>) -> Option<u64> {
        let log = self.log.read().unwrap();
        if cursor < log.first {
            return None;
        }
        if cursor >= log.next {
            return Some(cursor);
        }
        let frames = log.frames.range((cursor - log.first) as usize..);
        let len: usize = frames.clone().map(Bytes::len).sum();
        buf.clear();
        buf.extend_from_slice(hex(len, &mut [0; 16]));
        buf.extend_from_slice(b"\r\n");
        for frame in frames {
            buf.extend_from_slice(frame);
        }
        buf.extend_from_slice(b"\r\n");
        Some(log.next)
    }
}

/// `n` in lowercase hexadecimal, written into `digits`.
fn hex(mut n: usize, digits: &mut [u8; 16]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            return &digits[at..];
        }
    }
}

impl Hub {
    fn join(&self, name: &str) -> Arc<Topic> {
        let mut topics = self.topics.lock().unwrap();
        let topic = topics
            .entry(name.into())
            .or_insert_with(|| Arc::new(Topic::new()))
            .clone();
        topic.subscribers.fetch_add(1, Ordering::Relaxed);
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        topic
    }

    fn leave(&self, name: &str, topic: &Topic) {
        let mut topics = self.topics.lock().unwrap();
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
        if topic.subscribers.fetch_sub(1, Ordering::Relaxed) == 1 {
            topics.remove(name);
        }
    }

    fn publish(&self, name: &str, body: &[u8]) {
        let topic = self.topics.lock().unwrap().get(name).cloned();
        if let Some(topic) = topic {
            topic.publish(body);
        }
    }
}

/// A parsed request head: method, path, and the body's length.
struct Head<'a> {
    method: &'a [u8],
    path: &'a [u8],
    content_length: usize,
}

fn parse_head(head: &[u8]) -> Option<Head<'_>> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut request = lines.next()?.split(|&b| b == b' ');
    let (method, path) = (request.next()?, request.next()?);
    let mut content_length = 0;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            let value = std::str::from_utf8(&line[colon + 1..]).ok()?.trim();
            content_length = value.parse().ok()?;
        }
    }
    Some(Head {
        method,
        path,
        content_length,
    })
}

async fn connection(mut socket: TcpStream, hub: Arc<Hub>) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        // Read a head.
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() >= MAX_HEAD {
                return socket.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            }
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let Some(head) = parse_head(&buf[..end]) else {
            return socket
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        };
        if head.content_length > MAX_BODY {
            return socket.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        }
        let (method, length) = (head.method.to_vec(), head.content_length);
        let path = String::from_utf8_lossy(head.path).into_owned();
        while buf.len() < end + length {
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = &buf[end..end + length];
        match (&method[..], path.as_str()) {
            (b"GET", path) if path.starts_with("/sse/") => {
                drop(buf);
                return stream(socket, &hub, &path["/sse/".len()..]).await;
            }
            (b"POST", path) if path.starts_with("/publish/") => {
                let topic = &path["/publish/".len()..];
                if body.contains(&b'\n') || body.contains(&b'\r') {
                    socket.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 28\r\n\r\nthe body must be on one line").await?;
                } else {
                    hub.publish(topic, body);
                    socket.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await?;
                }
            }
            (b"GET", "/stats") => {
                let topics = hub.topics.lock().unwrap().len();
                let subscribers = hub.subscribers.load(Ordering::Relaxed);
                let json = format!(r#"{{"topics":{topics},"subscribers":{subscribers}}}"#);
                // Closed after the answer: it is read by clients that read to the end.
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                    json.len()
                );
                socket.write_all(response.as_bytes()).await?;
                return socket.shutdown().await;
            }
            _ => {
                socket
                    .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    .await?;
            }
        }
        buf.drain(..end + length);
    }
}

/// Counts a subscriber in while it lives.
struct Membership<'a> {
    hub: &'a Hub,
    name: &'a str,
    topic: Arc<Topic>,
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        self.hub.leave(self.name, &self.topic);
    }
}

enum Step {
    Write(u64),
    Hangup,
}

async fn stream(mut socket: TcpStream, hub: &Hub, name: &str) -> io::Result<()> {
    let topic = hub.join(name);
    let member = Membership { hub, name, topic };
    let topic = &member.topic;
    let mut cursor = topic.log.read().unwrap().next;
    socket.write_all(SSE_HEAD).await?;
    let mut buf = Vec::new();
    loop {
        let step = poll_fn(|cx| {
            // A readable socket means the client hung up (or sent what nobody reads).
            if socket.poll_read_ready(cx).is_ready() {
                let mut probe = [0u8; 512];
                match socket.try_read(&mut probe) {
                    Ok(0) => return Poll::Ready(Step::Hangup),
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                        return Poll::Ready(Step::Hangup);
                    }
                    _ => {}
                }
            }
            match topic.read(cursor, &mut buf) {
                None => return Poll::Ready(Step::Hangup),
                Some(next) if next > cursor => return Poll::Ready(Step::Write(next)),
                Some(_) => {}
            }
            topic.waiters.lock().unwrap().push(cx.waker().clone());
            match topic.read(cursor, &mut buf) {
                None => Poll::Ready(Step::Hangup),
                Some(next) if next > cursor => Poll::Ready(Step::Write(next)),
                Some(_) => Poll::Pending,
            }
        })
        .await;
        match step {
            Step::Write(next) => {
                cursor = next;
                socket.write_all(&buf).await?;
                if buf.capacity() > 64 * 1024 {
                    buf = Vec::new();
                }
            }
            Step::Hangup => return Ok(()),
        }
    }
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let port: u16 = std::env::var("PORT").map_or(8080, |v| v.parse().expect("PORT: a port"));
    // The deepest accept queue the system allows (Linux caps it at `net.core.somaxconn`), as
    // lean a server would take: a reconnect wave is queued, not retried a second later.
    // `BACKLOG` sets another (tokio's `TcpListener::bind` asks for 128).
    let backlog =
        std::env::var("BACKLOG").map_or(65_535, |v| v.parse().expect("BACKLOG: a number"));
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], port).into())?;
    let listener: TcpListener = socket.listen(backlog)?;
    println!(
        "ceiling-server listening on http://{}",
        listener.local_addr()?
    );
    let hub = Arc::new(Hub::default());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                tokio::spawn(connection(socket, hub.clone()));
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
        }
    }
}
