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
//!
//! Several instances of one hub (a backplane): `--addr A,B,C` spreads the subscribers over them
//! round-robin and puts publisher `p` on instance `p % n` (with one publisher, all on the first);
//! `--pid` takes their pids, comma-separated (CPU and memory are summed); latency is also split
//! into subscribers on the publisher's instance and subscribers on others. `--broker HOST:PORT`
//! reads the Redis behind them before and after the publishes (commands and CPU per publish,
//! publishes per second through it). `--unwatched` publishes to topics nobody subscribes to
//! (`--connections 0`): the cost of a publish that reaches no one. `--confirm` asks the server to
//! answer each publish only once it is sent (with a backplane: once the broker has it), which
//! slows a publisher to what the broker takes. `--parse-json` makes every subscriber parse each
//! event's data as JSON instead of scanning it for the two numbers it needs: a heavier client,
//! as a typical one is, to see how the client's own cost moves the servers' ratios (it runs
//! on the same cores).
//!
//! `--outage SECS --redis-pid PID --broker HOST:PORT`: a Redis restart under load instead (see
//! `outage.rs`): streams that reconnect as browsers do, Redis killed and back after SECS.
//! `--wave`: a reconnect wave instead (see `wave.rs`): every stream dropped and back at once,
//! half with `Last-Event-ID`: time until all are live, new streams per second, peak RSS.
//! `--scale subscribe|publish`: one part of a run spread over several processes (see
//! `scale.rs`).
//!
//! Event timestamps are wall-clock microseconds, so a publisher and subscribers in different
//! processes measure latency on one clock. With `--rate` and `--from-schedule`, an event's
//! time is when the pacing made it due, not when it was sent: a publisher held up behind a
//! slow answer counts its wait as latency (no coordinated omission), so a search for the
//! rate at a latency target is ended by latency, not by the publishers falling behind.

mod broker;
mod client;
mod outage;
mod proc_stats;
mod scale;
mod wave;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use client::{Publisher, Subscriber};
use serde_json::json;

#[derive(Clone, Debug)]
struct Options {
    addrs: Vec<SocketAddr>,
    pids: Vec<u32>,
    broker: Option<SocketAddr>,
    unwatched: bool,
    confirm: bool,
    connections: usize,
    topics: usize,
    events: u64,
    publishers: usize,
    rate: Option<f64>,
    payload: usize,
    hold: Duration,
    sources: usize,
    churn: usize,
    wave: bool,
    outage: Option<Duration>,
    redis_pid: Option<u32>,
    from_schedule: bool,
    scale: Option<String>,
    broadcast_share: f64,
    events_small: u64,
    rate_broadcast: f64,
    total: usize,
    all: Vec<SocketAddr>,
    brokers: Vec<SocketAddr>,
    label: String,
}

fn parse_options() -> Options {
    let mut o = Options {
        addrs: vec!["127.0.0.1:8080".parse().unwrap()],
        pids: Vec::new(),
        broker: None,
        unwatched: false,
        confirm: false,
        connections: 100,
        topics: 1,
        events: 100,
        publishers: 1,
        rate: None,
        payload: 64,
        hold: Duration::ZERO,
        sources: 1,
        churn: 0,
        wave: false,
        outage: None,
        redis_pid: None,
        from_schedule: false,
        scale: None,
        broadcast_share: 0.5,
        events_small: 0,
        rate_broadcast: 1.0,
        total: 0,
        all: Vec::new(),
        brokers: Vec::new(),
        label: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--unwatched" => {
                o.unwatched = true;
                continue;
            }
            "--confirm" => {
                o.confirm = true;
                continue;
            }
            "--from-schedule" => {
                o.from_schedule = true;
                continue;
            }
            "--parse-json" => {
                client::PARSE_JSON.store(true, Ordering::Relaxed);
                continue;
            }
            _ => {}
        }
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--addr" => {
                o.addrs = value()
                    .split(',')
                    .map(|a| a.parse().expect("--addr HOST:PORT[,HOST:PORT...]"))
                    .collect()
            }
            "--pid" => {
                o.pids = value()
                    .split(',')
                    .map(|p| p.parse().expect("--pid N[,N...]"))
                    .collect()
            }
            "--broker" => o.broker = Some(value().parse().expect("--broker HOST:PORT")),
            "--connections" => o.connections = value().parse().expect("--connections N"),
            "--topics" => o.topics = value().parse().expect("--topics N"),
            "--events" => o.events = value().parse().expect("--events N"),
            "--publishers" => o.publishers = value().parse().expect("--publishers N"),
            "--rate" => o.rate = Some(value().parse().expect("--rate EVENTS_PER_SECOND")),
            "--payload" => o.payload = value().parse().expect("--payload BYTES"),
            "--hold" => o.hold = Duration::from_secs_f64(value().parse().expect("--hold SECONDS")),
            "--sources" => o.sources = value().parse().expect("--sources N"),
            "--label" => o.label = value(),
            "--wave" => {
                o.wave = true;
                continue;
            }
            "--churn" => o.churn = value().parse().expect("--churn ROUNDS"),
            "--outage" => {
                o.outage = Some(Duration::from_secs_f64(
                    value().parse().expect("--outage SECONDS"),
                ))
            }
            "--redis-pid" => o.redis_pid = Some(value().parse().expect("--redis-pid PID")),
            "--scale" => o.scale = Some(value()),
            "--broadcast-share" => {
                o.broadcast_share = value().parse().expect("--broadcast-share FRACTION")
            }
            "--events-small" => o.events_small = value().parse().expect("--events-small N"),
            "--rate-broadcast" => {
                o.rate_broadcast = value().parse().expect("--rate-broadcast EVENTS_PER_SECOND")
            }
            "--total" => o.total = value().parse().expect("--total N"),
            "--all" | "--brokers" => {
                let list: Vec<SocketAddr> = value()
                    .split(',')
                    .map(|a| a.parse().expect("HOST:PORT[,HOST:PORT...]"))
                    .collect();
                if flag == "--all" {
                    o.all = list;
                } else {
                    o.brokers = list;
                }
            }
            other => {
                panic!("unknown flag {other}; see the doc comment of bench/loadgen/src/main.rs")
            }
        }
    }
    assert!(
        o.topics >= 1 && (o.unwatched || o.scale.is_some() || o.connections >= o.topics),
        "need at least one connection per topic"
    );
    assert!(
        !o.unwatched || o.connections == 0,
        "--unwatched publishes to topics nobody watches: --connections 0"
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

/// The servers under test, read together from /proc: CPU seconds and RSS summed over every pid.
struct Servers(Vec<proc_stats::Process>);

impl Servers {
    fn cpu_seconds(&self) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.iter().map(|p| p.cpu_seconds()).sum())
    }

    fn rss_kib(&self) -> Option<u64> {
        (!self.0.is_empty()).then(|| self.0.iter().map(|p| p.rss_kib()).sum())
    }
}

/// The instance publisher `p` of `publishers` posts to.
fn publisher_instance(p: usize, instances: usize) -> usize {
    p % instances
}

/// The publisher of topic `t`.
fn publisher_of(t: usize, o: &Options) -> usize {
    t / o.topics.div_ceil(o.publishers)
}

/// Sorts `latencies` in place and summarizes them.
fn latency_summary(latencies: &mut [u32]) -> serde_json::Value {
    latencies.sort_unstable();
    json!({
        "count": latencies.len(),
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "max": latencies.last().copied().unwrap_or(0),
    })
}

#[tokio::main(worker_threads = 2)]
async fn main() {
    let o = parse_options();
    let fd_limit = raise_fd_limit();
    if o.wave {
        return wave::run(&o).await;
    }
    if o.churn > 0 {
        return churn(&o).await;
    }
    if let Some(outage) = o.outage {
        return outage::run(&o, outage).await;
    }
    match o.scale.as_deref() {
        Some("subscribe") => return scale::subscribe(&o).await,
        Some("publish") => return scale::publish(&o).await,
        Some(other) => panic!("--scale subscribe|publish, not {other}"),
        None => {}
    }
    let instances = o.addrs.len();
    let servers = Servers(
        o.pids
            .iter()
            .map(|&p| proc_stats::Process::new(p))
            .collect(),
    );
    let rss_before = servers.rss_kib();

    // Connect every subscriber, spread over the instances and over source addresses 127.0.0.1,
    // .2, ...; remember which ones share an instance with their topic's publisher.
    let received = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::with_capacity(o.connections);
    let mut same_instance = Vec::with_capacity(o.connections);
    for i in 0..o.connections {
        let source = IpAddr::from([127, 0, 0, 1 + (i % o.sources) as u8]);
        let t = i % o.topics;
        let instance = i % instances;
        same_instance.push(instance == publisher_instance(publisher_of(t, &o), instances));
        subscribers.push(Subscriber::spawn(
            o.addrs[instance],
            source,
            format!("t{t}"),
            o.events,
            received.clone(),
        ));
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    let connect_started = Instant::now();
    client::wait_for_subscribers(&o.addrs, o.connections).await;
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    let rss_idle = servers.rss_kib();
    let cpu_before = servers.cpu_seconds();
    // The load generator shares the machine's cores with the server under test: what it spends
    // per delivery is CPU the server does not get, so it is reported next to the server's.
    let client = proc_stats::Process::new(std::process::id());
    let client_cpu_before = client.cpu_seconds();
    let broker_before = match o.broker {
        Some(addr) => Some(broker::read(addr).await.expect("INFO from the broker")),
        None => None,
    };

    let started = Instant::now();
    let prefix = if o.unwatched { "u" } else { "t" };
    if o.events > 0 {
        let per_publisher = o.topics.div_ceil(o.publishers);
        let rate_each = o.rate.map(|r| r / o.publishers as f64);
        let mut tasks = Vec::new();
        for p in 0..o.publishers {
            let topics: Vec<String> = (p * per_publisher..((p + 1) * per_publisher).min(o.topics))
                .map(|t| format!("{prefix}{t}"))
                .collect();
            let mut publisher =
                Publisher::connect(o.addrs[publisher_instance(p, instances)], o.confirm).await;
            let (events, payload, from_schedule) = (o.events, o.payload, o.from_schedule);
            tasks.push(tokio::spawn(async move {
                let mut pacing =
                    rate_each.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r)));
                let start = client::now_us();
                let mut k = 0u64;
                for seq in 0..events {
                    for topic in &topics {
                        if let Some(pacing) = pacing.as_mut() {
                            pacing.tick().await;
                        }
                        // `--from-schedule`: the event's time is when it was due, so a publish
                        // held up behind a slow answer counts its wait as latency.
                        let ts = match (from_schedule, rate_each) {
                            (true, Some(r)) => start + (k as f64 * 1e6 / r) as u64,
                            _ => client::now_us(),
                        };
                        k += 1;
                        publisher.publish_at(topic, seq, payload, ts).await;
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
    let publishes = o.events * o.topics as u64;

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
    // `publish` is fire-and-forget: the broker has done its part once it ran one script call
    // per publish (or nothing moved for 5 s).
    let broker_after = match (o.broker, &broker_before) {
        (Some(addr), Some(before)) => {
            let mut progress = (0, Instant::now());
            loop {
                let now = broker::read(addr).await.expect("INFO from the broker");
                let scripts = now.calls_of("evalsha") - before.calls_of("evalsha");
                if scripts >= publishes || progress.1.elapsed() > Duration::from_secs(5) {
                    break Some((now, started.elapsed().as_secs_f64()));
                }
                if scripts != progress.0 {
                    progress = (scripts, Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        _ => None,
    };
    let seconds = if o.events > 0 && o.connections > 0 {
        last.1
            .duration_since(started)
            .as_secs_f64()
            .max(publish_seconds)
    } else {
        publish_seconds
    };
    let cpu_after = servers.cpu_seconds();
    let client_cpu = client.cpu_seconds() - client_cpu_before;
    let rss_end = servers.rss_kib();

    let mut totals = client::Totals::default();
    let (mut same, mut cross) = (Vec::new(), Vec::new());
    for (subscriber, same_instance) in subscribers.into_iter().zip(same_instance) {
        let report = subscriber.finish();
        totals.add(&report.totals);
        if same_instance { &mut same } else { &mut cross }.extend(report.latencies_us);
    }
    let latency_same = latency_summary(&mut same);
    let latency_cross = latency_summary(&mut cross);
    same.append(&mut cross);
    let latency = latency_summary(&mut same);
    let delivered = totals.delivered;
    let server_cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let rss_per_connection = match (rss_before, rss_idle) {
        (Some(a), Some(b)) if o.connections > 0 => {
            Some((b as f64 - a as f64) * 1024.0 / o.connections as f64)
        }
        _ => None,
    };
    let broker = match (broker_before, broker_after) {
        (Some(before), Some((after, seconds))) => {
            let per_publish = |n: f64| (publishes > 0).then(|| n / publishes as f64);
            let scripts = after.calls_of("evalsha") - before.calls_of("evalsha");
            json!({
                "scripts": scripts,
                "scripts_per_publish": per_publish(scripts as f64),
                "calls_per_publish": per_publish((after.work_calls() - before.work_calls()) as f64),
                "cpu_us_per_publish": per_publish((after.cpu_seconds - before.cpu_seconds) * 1e6),
                "publishes_per_sec": scripts as f64 / seconds,
            })
        }
        _ => serde_json::Value::Null,
    };
    let line = json!({
        "label": o.label,
        "instances": instances,
        "connections": o.connections,
        "topics": o.topics,
        "events_per_topic": o.events,
        "publishers": o.publishers,
        "rate": o.rate,
        "payload_bytes": o.payload,
        "unwatched": o.unwatched,
        "confirm": o.confirm,
        "expected": expected,
        "delivered": delivered,
        "lost": expected.saturating_sub(delivered),
        "duplicated": totals.duplicated,
        "out_of_order": totals.out_of_order,
        "connect_errors": totals.connect_errors,
        "connect_seconds": connect_seconds,
        "seconds": seconds,
        "deliveries_per_sec": if seconds > 0.0 { delivered as f64 / seconds } else { 0.0 },
        "publishes_per_sec": if publish_seconds > 0.0 { publishes as f64 / publish_seconds } else { 0.0 },
        "latency_us": latency,
        "latency_same_instance_us": latency_same,
        "latency_cross_instance_us": latency_cross,
        "broker": broker,
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_delivery": server_cpu.filter(|_| delivered > 0).map(|c| c * 1e6 / delivered as f64),
        "server_cpu_us_per_publish": server_cpu.filter(|_| publishes > 0).map(|c| c * 1e6 / publishes as f64),
        "client_cpu_s": client_cpu,
        "client_cpu_us_per_delivery": (delivered > 0).then(|| client_cpu * 1e6 / delivered as f64),
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
        let (addr, rounds) = (o.addrs[i % o.addrs.len()], o.churn);
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
    let stats = client::wait_for_stats(&o.addrs, |all| {
        all.iter()
            .all(|s| s["pollers"] == 0 && s["subscribers"] == 0)
    })
    .await;
    let total = |field: &str| -> u64 { stats.iter().map(|s| s[field].as_u64().unwrap_or(0)).sum() };
    let line = json!({
        "label": o.label,
        "connections": o.connections,
        "topics": o.topics,
        "churn_rounds": o.churn,
        "subscribes": subscribes,
        "subscribes_per_sec": subscribes as f64 / seconds,
        "seconds": seconds,
        "pollers": format!("{}/{}", total("pollers_started"), total("pollers_stopped")),
        "pollers_running_after": total("pollers"),
        "lost": (o.connections * o.churn) as u64 - subscribes,
    });
    println!("{line}");
}
