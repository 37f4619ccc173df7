//! A broker outage under load (`--outage SECS`): streams that behave as a browser's
//! `EventSource` does (they reconnect after the server's `retry:` hint with `Last-Event-ID`,
//! and read `reset` events), a publisher that asks for each publish to be confirmed, and the
//! Redis behind the instances killed (SIGKILL, `--redis-pid`) and started again empty on its
//! port after SECS seconds, as a supervisor would.
//!
//! Reports how long after Redis answered again every stream was live (had an event published
//! after that moment), how many streams the servers ended and how many reconnects they
//! refused, the peak CPU of each instance (per 100 ms) around the outage, and what the streams
//! lost: confirmed events a stream never got, events it got twice, and the resets that told
//! it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::client::{self, Decoder};
use crate::proc_stats::Process;
use crate::{Options, percentile};

/// What one stream saw over the run.
#[derive(Default)]
struct Seen {
    topic: usize,
    /// Sequences received, in order (duplicates included).
    seqs: Vec<u64>,
    resets: u64,
    /// Streams the server ended (EOF after a 200 stream).
    ended: u64,
    /// Reconnects answered with a refusal (not 200, or a 200 stream with `Retry-After`).
    refused: u64,
    /// When (µs since the start) it first got an event published after Redis was back.
    live_again_us: Option<u64>,
}

/// Follows `/sse/t{topic}` on `addr` as a browser does until `stop`.
async fn browser(
    addr: SocketAddr,
    source: IpAddr,
    topic: usize,
    base: Instant,
    back_us: Arc<AtomicU64>,
    live: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen {
        topic,
        ..Seen::default()
    };
    let mut last_id: Option<String> = None;
    // A browser's default until the server sends `retry:`.
    let mut retry = Duration::from_secs(3);
    let path = format!("/sse/t{topic}");
    loop {
        let opened = tokio::select! {
            opened = client::open_with(addr, source, &path, last_id.as_deref()) => opened,
            _ = stop.changed() => return seen,
        };
        if let Ok((mut stream, head, body_start)) = opened {
            let refused =
                !head.starts_with(b"HTTP/1.1 200") || client::refused_stream(&head[..body_start]);
            if refused {
                seen.refused += 1;
            }
            let mut decoder = Decoder::default();
            let mut buf = vec![0u8; 8 * 1024];
            let mut on_frame = |frame: &[u8]| {
                let (mut id, mut event, mut data) = (None, None, None);
                for line in frame.split(|&b| b == b'\n') {
                    if let Some(v) = line.strip_prefix(b"id: ") {
                        id = Some(String::from_utf8_lossy(v).into_owned());
                    } else if let Some(v) = line.strip_prefix(b"event: ") {
                        event = Some(v);
                    } else if let Some(v) = line.strip_prefix(b"retry: ") {
                        if let Some(ms) = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()) {
                            retry = Duration::from_millis(ms);
                        }
                    } else if let Some(v) = line.strip_prefix(b"data: ") {
                        data = Some(v);
                    }
                }
                if id.is_some() {
                    last_id = id;
                }
                match (event, data) {
                    (Some(b"reset"), _) => seen.resets += 1,
                    (None, Some(data)) => {
                        let (Some(seq), Some(ts)) = (
                            client::number_after(data, b"\"s\":"),
                            client::number_after(data, b"\"t\":"),
                        ) else {
                            return;
                        };
                        seen.seqs.push(seq);
                        let back = back_us.load(Ordering::Relaxed);
                        if back > 0 && ts >= back && seen.live_again_us.is_none() {
                            seen.live_again_us = Some(base.elapsed().as_micros() as u64);
                            live.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
            };
            decoder.feed_frames(&head[body_start..], &mut on_frame);
            loop {
                let read = tokio::select! {
                    read = stream.read(&mut buf) => read,
                    _ = stop.changed() => return seen,
                };
                match read {
                    Ok(n) if n > 0 => decoder.feed_frames(&buf[..n], &mut on_frame),
                    _ => break,
                }
            }
            if !refused {
                seen.ended += 1;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = stop.changed() => return seen,
        }
    }
}

/// Publishes `{"s":seq,"t":µs}` to `/publish/t{k}?confirm` on `addr`, round-robin over
/// `topics` at `rate` events/s, until `stop`; returns the sequences confirmed per topic.
async fn publisher(
    addr: SocketAddr,
    topics: usize,
    rate: f64,
    base: Instant,
    stop: watch::Receiver<bool>,
) -> (Vec<Vec<u64>>, u64) {
    let mut confirmed = vec![Vec::new(); topics];
    let mut next = vec![0u64; topics];
    let mut failed = 0;
    let mut connection: Option<TcpStream> = None;
    let mut pacing = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    pacing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut k = 0;
    while !*stop.borrow() {
        pacing.tick().await;
        let topic = k % topics;
        k += 1;
        let seq = next[topic];
        next[topic] += 1;
        let ts = base.elapsed().as_micros() as u64;
        let body = format!("{{\"s\":{seq},\"t\":{ts}}}");
        let request = format!(
            "POST /publish/t{topic}?confirm HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            if connection.is_none() {
                connection = Some(TcpStream::connect(addr).await?);
            }
            let stream = connection.as_mut().expect("connected");
            stream.write_all(request.as_bytes()).await?;
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                head.extend_from_slice(&buf[..n]);
            }
            // Error answers may carry a body: drop the connection rather than read it.
            Ok::<bool, std::io::Error>(head.starts_with(b"HTTP/1.1 204"))
        })
        .await;
        match answered {
            Ok(Ok(true)) => confirmed[topic].push(seq),
            _ => {
                failed += 1;
                connection = None;
            }
        }
    }
    (confirmed, failed)
}

/// The highest CPU use (cores) of each process over 100 ms windows, and its CPU seconds,
/// from now until `stop`.
async fn peaks(pids: Vec<u32>, stop: watch::Receiver<bool>) -> Vec<(f64, f64)> {
    let processes: Vec<Process> = pids.iter().map(|&p| Process::new(p)).collect();
    let start: Vec<f64> = processes.iter().map(Process::cpu_seconds).collect();
    let mut last = start.clone();
    let mut peak = vec![0.0f64; processes.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut at = Instant::now();
    while !*stop.borrow() {
        tick.tick().await;
        let elapsed = at.elapsed().as_secs_f64();
        at = Instant::now();
        for (i, process) in processes.iter().enumerate() {
            let now = process.cpu_seconds();
            if elapsed > 0.05 {
                peak[i] = peak[i].max((now - last[i]) / elapsed);
            }
            last[i] = now;
        }
    }
    peak.into_iter()
        .zip(last.iter().zip(&start).map(|(l, s)| l - s))
        .collect()
}

/// Kills Redis (`pid`) and starts it again empty on `port` after `outage`; returns the new
/// server once it answers.
async fn restart_redis(pid: u32, port: u16, outage: Duration) -> tokio::process::Child {
    // SAFETY: kill(2) on the pid the caller gave; no memory is involved.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    tokio::time::sleep(outage).await;
    let child = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server starts");
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await {
            let mut pong = [0u8; 7];
            if stream.write_all(b"PING\r\n").await.is_ok()
                && stream.read_exact(&mut pong).await.is_ok()
                && &pong == b"+PONG\r\n"
            {
                return child;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn run(o: &Options, outage: Duration) {
    let (redis_pid, broker) = (
        o.redis_pid.expect("--outage needs --redis-pid"),
        o.broker.expect("--outage needs --broker HOST:PORT"),
    );
    let base = Instant::now();
    let back_us = Arc::new(AtomicU64::new(0));
    let live = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let mut streams = Vec::with_capacity(o.connections);
    for i in 0..o.connections {
        let source = IpAddr::from([127, 0, 0, 1 + (i % o.sources) as u8]);
        let addr = o.addrs[i % o.addrs.len()];
        streams.push(tokio::spawn(browser(
            addr,
            source,
            i % o.topics,
            base,
            back_us.clone(),
            live.clone(),
            stop.clone(),
        )));
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    client::wait_for_subscribers(&o.addrs, o.connections).await;

    let (stop_publishing_tx, stop_publishing) = watch::channel(false);
    let rate = o.rate.unwrap_or(100.0);
    let publishing = tokio::spawn(publisher(o.addrs[0], o.topics, rate, base, stop_publishing));
    tokio::time::sleep(Duration::from_secs(3)).await;

    let sampling = tokio::spawn(peaks(o.pids.clone(), stop.clone()));
    let killed = Instant::now();
    let _redis = restart_redis(redis_pid, broker.port(), outage).await;
    let back = base.elapsed().as_micros() as u64;
    back_us.store(back, Ordering::Relaxed);
    let down_seconds = killed.elapsed().as_secs_f64();

    // Until every stream is live again (or 60 s), then 2 s more of events, then the stragglers.
    let deadline = Instant::now() + Duration::from_secs(60);
    // (The streams are tasks of this process that count themselves: polled, not awaited one
    // by one, so a stream that never comes back does not hold the others' report.)
    while (live.load(Ordering::Relaxed) as usize) < o.connections && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop_publishing_tx.send_replace(true);
    let (confirmed, failed_publishes) = publishing.await.expect("the publisher");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send_replace(true);
    let peaks = sampling.await.expect("the sampler");

    let mut live_ms = Vec::new();
    let (mut never_live, mut lost, mut duplicated, mut resets, mut ended, mut refused) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut lost_without_reset = 0u64;
    for stream in streams {
        let seen = stream.await.expect("a stream");
        match seen.live_again_us {
            Some(at) => live_ms.push(((at.saturating_sub(back)) / 1000) as u32),
            None => never_live += 1,
        }
        let mut got = std::collections::HashSet::with_capacity(seen.seqs.len());
        for seq in &seen.seqs {
            if !got.insert(*seq) {
                duplicated += 1;
            }
        }
        let missing = confirmed[seen.topic]
            .iter()
            .filter(|s| !got.contains(s))
            .count() as u64;
        lost += missing;
        if missing > 0 && seen.resets == 0 {
            lost_without_reset += missing;
        }
        resets += seen.resets;
        ended += seen.ended;
        refused += seen.refused;
    }
    live_ms.sort_unstable();
    let line = json!({
        "label": o.label,
        "instances": o.addrs.len(),
        "connections": o.connections,
        "topics": o.topics,
        "rate": rate,
        "redis_down_s": down_seconds,
        "live_again_ms": {
            "p50": percentile(&live_ms, 0.5),
            "p99": percentile(&live_ms, 0.99),
            "max": live_ms.last().copied().unwrap_or(0),
        },
        "never_live": never_live,
        "streams_ended": ended,
        "reconnects_refused": refused,
        "resets": resets,
        "confirmed_publishes": confirmed.iter().map(Vec::len).sum::<usize>(),
        "failed_publishes": failed_publishes,
        "lost": lost,
        "lost_without_reset": lost_without_reset,
        "duplicated": duplicated,
        "peak_cpu_cores": peaks.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        "cpu_s_after_kill": peaks.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
    });
    println!("{line}");
}
