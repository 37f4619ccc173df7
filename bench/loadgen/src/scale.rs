//! Many streams over many instances, with the load generator in several processes
//! (`bench/scale.sh`): one process per instance subscribes (`--scale subscribe`), one
//! publishes (`--scale publish`); they meet on the instances' `/stats`.
//!
//! Subscribers: `--connections N` to the instance at `--addr`, a share (`--broadcast-share`)
//! on the broadcast topic `t0`, the rest spread over the small topics `t1..t{topics-1}`, from
//! `--sources` loopback addresses. Once `--total` streams are subscribed over every instance
//! (`--all`), each waits for its topic's events: `--events` on `t0`, `--events-small` on a
//! small topic. Prints delivered, lost, duplicated and reordered events, a histogram of
//! publish-to-receive latency (wall clock, microseconds, so processes compare), and the
//! instance's RSS per stream (`--pid`).
//!
//! Publisher: once `--total` streams are subscribed over `--addr` (all the instances), posts
//! `--events` events to `t0` at `--rate-broadcast` per second and `--events-small` to each
//! small topic at `--rate` per second in all, over the instances in turn; with `--broker`
//! (every master, comma-separated) it reads the Redis CPU per publish.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{self, Publisher, Subscriber};
use crate::proc_stats::Process;
use crate::{Options, broker};

/// Topic `i` of `n` subscribers: the broadcast topic for the first share, the rest in turn
/// over the small ones.
fn topic_of(i: usize, o: &Options) -> usize {
    let broadcast = (o.connections as f64 * o.broadcast_share).round() as usize;
    if i < broadcast {
        0
    } else {
        1 + (i - broadcast) % (o.topics - 1)
    }
}

pub async fn subscribe(o: &Options) {
    let process = o.pids.first().map(|&p| Process::new(p));
    let rss_before = process.as_ref().map(Process::rss_kib);
    let received = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::with_capacity(o.connections);
    let mut expected = 0;
    for i in 0..o.connections {
        let source = IpAddr::from([127, 0, 0, 1 + (i % o.sources) as u8]);
        let topic = topic_of(i, o);
        let events = if topic == 0 { o.events } else { o.events_small };
        expected += events;
        // Streams stay open until the end (`0`: no count to stop at): one that left when it had
        // its events would make its instance unsubscribe during the run.
        subscribers.push(Subscriber::spawn(
            o.addrs[0],
            source,
            format!("t{topic}"),
            0,
            received.clone(),
        ));
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    client::wait_for_subscribers(&o.addrs, o.connections).await;
    let rss_idle = process.as_ref().map(Process::rss_kib);
    client::wait_for_subscribers(&o.all, o.total).await;
    // Until everything arrived, or nothing moved for 10 s after the first event.
    let mut last = (0, Instant::now());
    while received.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = received.load(Ordering::Relaxed);
        if now != last.0 || now == 0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    // Held 3 s more: the publisher reads the brokers 1 s after its last publish, before any
    // stream leaves (the instances' release scripts would count as publishing work).
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The instance's backplane counters (reconnects, resyncs) over the run.
    let stats = client::wait_for_stats(&o.addrs, |_| true).await;
    let mut totals = client::Totals::default();
    let mut histogram: BTreeMap<u32, u64> = BTreeMap::new();
    for subscriber in subscribers {
        let report = subscriber.finish();
        totals.add(&report.totals);
        for latency in report.latencies_us {
            *histogram.entry(latency / 1000).or_default() += 1;
        }
    }
    let line = json!({
        "label": o.label,
        "role": "subscribe",
        "connections": o.connections,
        "expected": expected,
        "delivered": totals.delivered,
        "lost": expected.saturating_sub(totals.delivered - totals.duplicated),
        "duplicated": totals.duplicated,
        "out_of_order": totals.out_of_order,
        "connect_errors": totals.connect_errors,
        "latency_ms_histogram": histogram,
        "backplane": stats[0]["backplane"],
        "server_rss_kib": { "before": rss_before, "idle": rss_idle },
        "server_rss_per_connection_bytes": match (rss_before, rss_idle) {
            (Some(a), Some(b)) => Some((b as f64 - a as f64) * 1024.0 / o.connections as f64),
            _ => None,
        },
    });
    println!("{line}");
}

pub async fn publish(o: &Options) {
    client::wait_for_subscribers(&o.addrs, o.total).await;
    let brokers = read_brokers(&o.brokers).await;
    let started = Instant::now();
    let instances = o.addrs.len();
    let mut tasks = Vec::new();
    // The broadcast topic, on the first instance.
    let (events, rate) = (o.events, o.rate_broadcast);
    let addr = o.addrs[0];
    tasks.push(tokio::spawn(async move {
        let mut publisher = Publisher::connect(addr, false).await;
        let mut pacing = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        for seq in 0..events {
            pacing.tick().await;
            publisher.publish("t0", seq, 64).await;
        }
    }));
    // The small topics, one publisher per instance, each with its share of them.
    let small: Vec<usize> = (1..o.topics).collect();
    let per = small.len().div_ceil(instances);
    for (p, topics) in small.chunks(per).enumerate() {
        let topics: Vec<String> = topics.iter().map(|t| format!("t{t}")).collect();
        let rate_each = o.rate.unwrap_or(100.0) * topics.len() as f64 / small.len() as f64;
        let (addr, events) = (o.addrs[p % instances], o.events_small);
        tasks.push(tokio::spawn(async move {
            let mut publisher = Publisher::connect(addr, false).await;
            let mut pacing = tokio::time::interval(Duration::from_secs_f64(1.0 / rate_each));
            for seq in 0..events {
                for topic in &topics {
                    pacing.tick().await;
                    publisher.publish(topic, seq, 64).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("a publisher");
    }
    let seconds = started.elapsed().as_secs_f64();
    let publishes = o.events + o.events_small * (o.topics as u64 - 1);
    // Fire-and-forget: give the brokers a moment to run what is queued before reading them
    // (the subscribers hold their streams 3 s after their last event).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = read_brokers(&o.brokers).await;
    let redis_cpu: f64 = after
        .iter()
        .zip(&brokers)
        .map(|(a, b)| a.cpu_seconds - b.cpu_seconds)
        .sum();
    let scripts: u64 = after
        .iter()
        .zip(&brokers)
        .map(|(a, b)| a.calls_of("evalsha") - b.calls_of("evalsha"))
        .sum();
    let mut calls: BTreeMap<String, u64> = BTreeMap::new();
    for (a, b) in after.iter().zip(&brokers) {
        for (name, n) in &a.calls {
            *calls.entry(name.clone()).or_default() += n - b.calls_of(name);
        }
    }
    calls.retain(|_, n| *n > 0);
    let line = json!({
        "label": o.label,
        "role": "publish",
        "broker_calls": calls,
        "publishes": publishes,
        "seconds": seconds,
        "publishes_per_sec": publishes as f64 / seconds,
        "broker_scripts": scripts,
        "broker_cpu_s": redis_cpu,
        "broker_cpu_us_per_publish": (publishes > 0).then(|| redis_cpu * 1e6 / publishes as f64),
    });
    println!("{line}");
}

async fn read_brokers(brokers: &[std::net::SocketAddr]) -> Vec<broker::Reading> {
    let mut readings = Vec::new();
    for &addr in brokers {
        readings.push(broker::read(addr).await.expect("INFO from a broker"));
    }
    readings
}
