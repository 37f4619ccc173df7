//! A reconnect wave (`--wave`): what new streams cost a server. `--connections` streams over
//! `--topics` topics are opened (paced) and get three events per topic; then every client drops
//! its connection at once, as when a proxy in front restarts, two more events per topic are
//! published while they are away, and all of them come back at the same instant, half of them
//! with the `Last-Event-ID` of the last event they saw (a browser's `EventSource` sends it; a
//! server that keeps history replays what was missed, one that does not ignores it).
//!
//! Reports how long after the wave began each stream was live (its `200` head read; a refusal
//! or an error is counted, and retried after a second as a browser's `EventSource` would),
//! new streams per second over the whole wave, the server's peak RSS during the wave
//! (`VmHWM`, reset through `/proc/<pid>/clear_refs` just before) and its CPU time, the events
//! replayed to the resumed half, and whether every stream then gets one more event per topic
//! (a stream that answered but is not subscribed would not).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, watch};

use crate::client::{self, Decoder, Publisher};
use crate::proc_stats::Process;
use crate::{Options, percentile};

/// Events per topic before the clients drop, while they are away, and after the wave.
const BEFORE: u64 = 3;
const AWAY: u64 = 2;

/// What one client has seen, over both of its connections.
#[derive(Default)]
struct Seen {
    /// The `id:` of the last event received (sent back as `Last-Event-ID` by resuming clients).
    last_id: Mutex<Option<String>>,
    /// The highest sequence received, plus one (0: none yet).
    next: AtomicU64,
    /// Events of the `AWAY` window received on the second connection.
    replayed: AtomicU64,
}

/// How one connection attempt ended.
enum Opened {
    Live(tokio::net::TcpStream, Vec<u8>, usize),
    Refused,
    Failed,
}

async fn open(addr: SocketAddr, source: IpAddr, topic: &str, last_id: Option<&str>) -> Opened {
    let path = format!("/sse/{topic}");
    match tokio::time::timeout(
        Duration::from_secs(30),
        client::open_with(addr, source, &path, last_id),
    )
    .await
    {
        Ok(Ok((stream, head, body))) => {
            let refused =
                !head.starts_with(b"HTTP/1.1 200") || client::refused_stream(&head[..body]);
            if refused {
                Opened::Refused
            } else {
                Opened::Live(stream, head, body)
            }
        }
        _ => Opened::Failed,
    }
}

/// Reads a live stream until `stop`, noting ids and sequences in `seen`.
async fn follow(
    mut stream: tokio::net::TcpStream,
    head: Vec<u8>,
    body: usize,
    seen: &Seen,
    second: bool,
    received: &AtomicU64,
    mut stop: watch::Receiver<bool>,
) {
    let mut decoder = Decoder::default();
    let mut on_frame = |frame: &[u8]| {
        let mut id = None;
        let mut seq = None;
        for line in frame.split(|&b| b == b'\n') {
            if let Some(value) = line.strip_prefix(b"id:") {
                id = Some(String::from_utf8_lossy(value.trim_ascii()).into_owned());
            } else if let Some(data) = line.strip_prefix(b"data:") {
                seq = client::number_after(data, b"\"s\":");
            }
        }
        let Some(seq) = seq else { return };
        if id.is_some() {
            *seen.last_id.lock().unwrap() = id;
        }
        if second && (BEFORE..BEFORE + AWAY).contains(&seq) {
            seen.replayed.fetch_add(1, Ordering::Relaxed);
        }
        seen.next.fetch_max(seq + 1, Ordering::Relaxed);
        received.fetch_add(1, Ordering::Relaxed);
    };
    decoder.feed_frames(&head[body..], &mut on_frame);
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(n) if n > 0 => decoder.feed_frames(&buf[..n], &mut on_frame),
                _ => return,
            },
            _ = stop.changed() => return,
        }
    }
}

/// Waits until `condition` holds, checking every 20 ms, for at most `limit`; whether it did.
async fn until(limit: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !condition() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn publish_round(o: &Options, publisher: &mut Publisher, seq: u64) {
    for t in 0..o.topics {
        publisher.publish(&format!("t{t}"), seq, o.payload).await;
    }
}

pub async fn run(o: &Options) {
    let addr = o.addrs[0];
    let pid = *o.pids.first().expect("--wave needs --pid");
    let server = Process::new(pid);
    let n = o.connections;
    let seen: Arc<Vec<Seen>> = Arc::new((0..n).map(|_| Seen::default()).collect());
    let received = Arc::new(AtomicU64::new(0));
    let source = |i: usize| IpAddr::from([127, 0, 0, 1 + (i % o.sources) as u8]);
    let topic = |i: usize| format!("t{}", i % o.topics);

    // 1. The clients connect, paced, and get BEFORE events per topic.
    let (stop, stopped) = watch::channel(false);
    let pacing = Arc::new(Semaphore::new(128));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (seen, received, stopped, pacing) = (
            seen.clone(),
            received.clone(),
            stopped.clone(),
            pacing.clone(),
        );
        let (source, topic) = (source(i), topic(i));
        tasks.push(tokio::spawn(async move {
            let permit = pacing.acquire().await.expect("never closed");
            let Opened::Live(stream, head, body) = open(addr, source, &topic, None).await else {
                panic!("stream {i} was not opened before the wave");
            };
            drop(permit);
            follow(stream, head, body, &seen[i], false, &received, stopped).await;
        }));
    }
    client::wait_for_subscribers(&o.addrs, n).await;
    let mut publisher = Publisher::connect(addr, false).await;
    for seq in 0..BEFORE {
        publish_round(o, &mut publisher, seq).await;
    }
    let wanted = n as u64 * BEFORE;
    assert!(
        until(Duration::from_secs(60), || received.load(Ordering::Relaxed)
            >= wanted)
        .await,
        "the streams got {} of {wanted} events before the wave",
        received.load(Ordering::Relaxed)
    );
    let rss_before = server.rss_kib();

    // 2. Every client drops its connection at once; events go on while they are away.
    stop.send(true).expect("the streams listen");
    for task in tasks {
        task.await.expect("stream task");
    }
    client::wait_for_stats(&o.addrs, |all| all[0]["subscribers"] == 0).await;
    for seq in BEFORE..BEFORE + AWAY {
        publish_round(o, &mut publisher, seq).await;
    }

    // 3. The wave: every client at once, half resuming.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let peak_reset = server.peak_rss_kib();
    let cpu_before = server.cpu_seconds();
    let (stop, stopped) = watch::channel(false);
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // When each stream was live, in µs after the wave began, plus one (0: not yet).
    let live_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (seen, received, stopped) = (seen.clone(), received.clone(), stopped.clone());
        let (refused, failed, live_at) = (refused.clone(), failed.clone(), live_at.clone());
        let (source, topic) = (source(i), topic(i));
        let resume = (i % 2 == 1)
            .then(|| seen[i].last_id.lock().unwrap().clone())
            .flatten();
        tasks.push(tokio::spawn(async move {
            loop {
                match open(addr, source, &topic, resume.as_deref()).await {
                    Opened::Live(stream, head, body) => {
                        let live = started.elapsed().as_micros() as u64;
                        live_at[i].store(live + 1, Ordering::Relaxed);
                        follow(stream, head, body, &seen[i], true, &received, stopped).await;
                        return;
                    }
                    Opened::Refused => refused.fetch_add(1, Ordering::Relaxed),
                    Opened::Failed => failed.fetch_add(1, Ordering::Relaxed),
                };
                // A browser's EventSource comes back after its retry interval.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    let all_live = until(Duration::from_secs(120), || {
        live_at.iter().all(|t| t.load(Ordering::Relaxed) > 0)
    })
    .await;
    let wave_seconds = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    let peak = server.peak_rss_kib();
    let mut live: Vec<u32> = live_at
        .iter()
        .map(|t| t.load(Ordering::Relaxed))
        .filter(|&t| t > 0)
        .map(|t| ((t - 1) / 1000) as u32)
        .collect();
    live.sort_unstable();
    let last_ms = live.last().copied().unwrap_or(0);

    // 4. One more event per topic: every stream that came back must get it.
    let last = BEFORE + AWAY;
    publish_round(o, &mut publisher, last).await;
    let all_got = until(Duration::from_secs(30), || {
        seen.iter().all(|s| s.next.load(Ordering::Relaxed) > last)
    })
    .await;
    let missed = seen
        .iter()
        .filter(|s| s.next.load(Ordering::Relaxed) <= last)
        .count();
    let replayed: u64 = seen
        .iter()
        .map(|s| s.replayed.load(Ordering::Relaxed))
        .sum();
    let rss_after = server.rss_kib();
    stop.send(true).expect("the streams listen");
    for task in tasks {
        task.await.expect("stream task");
    }

    let line = json!({
        "label": o.label,
        "connections": n,
        "topics": o.topics,
        "sources": o.sources,
        "all_live": all_live,
        "live": live.len(),
        "live_ms": {
            "p50": percentile(&live, 0.5),
            "p99": percentile(&live, 0.99),
            "last": last_ms,
        },
        // New streams per second over the wave: all of them over the time until the last was live.
        "streams_per_sec": if last_ms > 0 { live.len() as f64 * 1000.0 / last_ms as f64 } else { 0.0 },
        "refused": refused.load(Ordering::Relaxed),
        "failed": failed.load(Ordering::Relaxed),
        "wave_seconds": wave_seconds,
        "server_cpu_s": cpu,
        "server_cpu_us_per_stream": cpu * 1e6 / n as f64,
        "server_rss_kib": { "before": rss_before, "peak_reset_to": peak_reset, "peak": peak, "after": rss_after },
        "resumed": n / 2,
        "replayed": replayed,
        "replay_expected": (n / 2) as u64 * AWAY,
        "all_got_after": all_got,
        "missed_after": missed,
    });
    println!("{line}");
}
