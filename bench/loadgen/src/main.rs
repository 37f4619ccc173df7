//! Load generator for any server speaking the bench protocol (`GET /sse/{topic}`,
//! `POST /publish/{topic}`, `GET /stats`).
//!
//! Opens `--connections` SSE streams over `--topics` topics (one TCP connection each, spread over
//! `--sources` loopback addresses), waits until the server reports them all subscribed, then
//! publishes `--events` events per topic from `--publishers` publishers (as fast as possible, or
//! `--rate` events per second in all), each carrying a sequence number and a timestamp. Prints
//! one JSON line: delivered, expected, lost, duplicated, out of order, deliveries per second,
//! publish-to-receive latency, and the server's CPU time and RSS read from /proc/`--pid`.
//!
//! `--events 0 --hold SECS` measures idle connections instead.

mod client;
mod proc_stats;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use client::{Publisher, Subscriber};
use serde_json::json;

#[derive(Clone, Debug)]
struct Options {
    addr: SocketAddr,
    pid: Option<u32>,
    connections: usize,
    topics: usize,
    events: u64,
    publishers: usize,
    rate: Option<f64>,
    payload: usize,
    hold: Duration,
    sources: usize,
    churn: usize,
    label: String,
}

fn parse_options() -> Options {
    let mut o = Options {
        addr: "127.0.0.1:8080".parse().unwrap(),
        pid: None,
        connections: 100,
        topics: 1,
        events: 100,
        publishers: 1,
        rate: None,
        payload: 64,
        hold: Duration::ZERO,
        sources: 1,
        churn: 0,
        label: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--addr" => o.addr = value().parse().expect("--addr HOST:PORT"),
            "--pid" => o.pid = Some(value().parse().expect("--pid N")),
            "--connections" => o.connections = value().parse().expect("--connections N"),
            "--topics" => o.topics = value().parse().expect("--topics N"),
            "--events" => o.events = value().parse().expect("--events N"),
            "--publishers" => o.publishers = value().parse().expect("--publishers N"),
            "--rate" => o.rate = Some(value().parse().expect("--rate EVENTS_PER_SECOND")),
            "--payload" => o.payload = value().parse().expect("--payload BYTES"),
            "--hold" => o.hold = Duration::from_secs_f64(value().parse().expect("--hold SECONDS")),
            "--sources" => o.sources = value().parse().expect("--sources N"),
            "--label" => o.label = value(),
            "--churn" => o.churn = value().parse().expect("--churn ROUNDS"),
            other => {
                panic!("unknown flag {other}; see the doc comment of bench/loadgen/src/main.rs")
            }
        }
    }
    assert!(
        o.topics >= 1 && o.connections >= o.topics,
        "need at least one connection per topic"
    );
    o.publishers = o.publishers.clamp(1, o.topics);
    o
}

/// Raises the soft file-descriptor limit to the hard one.
fn raise_fd_limit() -> u64 {
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            return limit.rlim_cur;
        }
    }
    0
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(worker_threads = 2)]
async fn main() {
    let o = parse_options();
    let fd_limit = raise_fd_limit();
    if o.churn > 0 {
        return churn(&o).await;
    }
    let base = Instant::now();
    let server = o.pid.map(proc_stats::Process::new);
    let rss_before = server.as_ref().map(|s| s.rss_kib());

    // Connect every subscriber, spread over source addresses 127.0.0.1, .2, ...
    let received = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::with_capacity(o.connections);
    for i in 0..o.connections {
        let source = IpAddr::from([127, 0, 0, 1 + (i % o.sources) as u8]);
        let topic = format!("t{}", i % o.topics);
        subscribers.push(Subscriber::spawn(
            o.addr,
            source,
            topic,
            o.events,
            base,
            received.clone(),
        ));
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    let connect_started = Instant::now();
    client::wait_for_subscribers(o.addr, o.connections).await;
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    let rss_idle = server.as_ref().map(|s| s.rss_kib());
    let cpu_before = server.as_ref().map(|s| s.cpu_seconds());

    let started = Instant::now();
    if o.events > 0 {
        let per_publisher = o.topics.div_ceil(o.publishers);
        let rate_each = o.rate.map(|r| r / o.publishers as f64);
        let mut tasks = Vec::new();
        for p in 0..o.publishers {
            let topics: Vec<String> = (p * per_publisher..((p + 1) * per_publisher).min(o.topics))
                .map(|t| format!("t{t}"))
                .collect();
            let mut publisher = Publisher::connect(o.addr).await;
            let (events, payload) = (o.events, o.payload);
            tasks.push(tokio::spawn(async move {
                let mut pacing =
                    rate_each.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r)));
                for seq in 0..events {
                    for topic in &topics {
                        if let Some(pacing) = pacing.as_mut() {
                            pacing.tick().await;
                        }
                        publisher.publish(topic, seq, base, payload).await;
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    } else {
        tokio::time::sleep(o.hold).await;
    }
    let publish_seconds = started.elapsed().as_secs_f64();

    // Wait for the stragglers: until everything arrived, or nothing moved for 5 s.
    let expected = o.events * o.connections as u64;
    let mut last = (received.load(Ordering::Relaxed), Instant::now());
    while received.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = received.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let seconds = if o.events > 0 {
        last.1
            .duration_since(started)
            .as_secs_f64()
            .max(publish_seconds)
    } else {
        publish_seconds
    };
    let cpu_after = server.as_ref().map(|s| s.cpu_seconds());
    let rss_end = server.as_ref().map(|s| s.rss_kib());

    let mut totals = client::Totals::default();
    let mut latencies = Vec::new();
    for subscriber in subscribers {
        let report = subscriber.finish();
        totals.add(&report.totals);
        latencies.extend(report.latencies_us);
    }
    latencies.sort_unstable();
    let delivered = totals.delivered;
    let server_cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let rss_per_connection = match (rss_before, rss_idle) {
        (Some(a), Some(b)) => Some((b as f64 - a as f64) * 1024.0 / o.connections as f64),
        _ => None,
    };
    let line = json!({
        "label": o.label,
        "connections": o.connections,
        "topics": o.topics,
        "events_per_topic": o.events,
        "publishers": o.publishers,
        "rate": o.rate,
        "payload_bytes": o.payload,
        "expected": expected,
        "delivered": delivered,
        "lost": expected.saturating_sub(delivered),
        "duplicated": totals.duplicated,
        "out_of_order": totals.out_of_order,
        "connect_errors": totals.connect_errors,
        "connect_seconds": connect_seconds,
        "seconds": seconds,
        "deliveries_per_sec": if seconds > 0.0 { delivered as f64 / seconds } else { 0.0 },
        "latency_us": { "p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99), "max": latencies.last().copied().unwrap_or(0) },
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_delivery": server_cpu.filter(|_| delivered > 0).map(|c| c * 1e6 / delivered as f64),
        "server_rss_kib": { "before": rss_before, "idle": rss_idle, "end": rss_end },
        "server_rss_per_connection_bytes": rss_per_connection,
        "fd_limit": fd_limit,
    });
    println!("{line}");
}

/// S5: every connection subscribes to a polled topic, waits for its first event and leaves,
/// `--churn` times; then the server must have stopped every poller it started.
async fn churn(o: &Options) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..o.connections {
        let (addr, rounds) = (o.addr, o.churn);
        let source = IpAddr::from([127, 0, 0, 1 + (i % o.sources) as u8]);
        let path = format!("/poll/t{}", i % o.topics);
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            for _ in 0..rounds {
                if client::first_event(addr, source, &path).await.is_ok() {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut subscribes = 0;
    for task in tasks {
        subscribes += task.await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let stats =
        client::wait_for_stats(o.addr, |s| s["pollers"] == 0 && s["subscribers"] == 0).await;
    let line = json!({
        "label": o.label,
        "connections": o.connections,
        "topics": o.topics,
        "churn_rounds": o.churn,
        "subscribes": subscribes,
        "subscribes_per_sec": subscribes as f64 / seconds,
        "seconds": seconds,
        "pollers": format!("{}/{}", stats["pollers_started"], stats["pollers_stopped"]),
        "pollers_running_after": stats["pollers"],
        "lost": (o.connections * o.churn) as u64 - subscribes,
    });
    println!("{line}");
}
