//! Readings of this machine from /proc: CPU, memory, load, network, and one process.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::Serialize;

/// One sample of the whole machine.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SystemSample {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// Busy share of all CPUs since the previous sample, 0-100; `None` without a recent
    /// previous sample (the first after an idle gap), rather than an average over the gap.
    pub cpu: Option<f64>,
    /// Used share of memory (total minus available), 0-100.
    pub memory: f64,
    pub memory_used_mib: u64,
    pub memory_total_mib: u64,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    /// Bytes per second received and sent, all interfaces, since the previous sample (`None`
    /// as for `cpu`).
    pub net_rx: Option<f64>,
    pub net_tx: Option<f64>,
    pub cpus: usize,
    /// The pid of the dashboard that took the sample: with several instances on one Redis,
    /// one of them polls for all.
    pub sampled_by: u32,
}

/// One sample of a process.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ProcessSample {
    pub at: u64,
    pub pid: u32,
    pub name: String,
    pub state: String,
    pub threads: u64,
    /// Share of one CPU since the previous sample of this pid, 0-100 per core (`None` without
    /// a recent one).
    pub cpu: Option<f64>,
    pub rss_mib: f64,
}

static SYSTEM: Mutex<Option<Counters>> = Mutex::new(None);
static PROCESSES: Mutex<Option<HashMap<u32, (Instant, u64)>>> = Mutex::new(None);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected format of {what}"),
    )
}

/// How old the previous reading may be for a rate against it: older (nobody watched for a
/// while, so the poller was stopped), and the rate would be the average over the whole gap.
const STALE: Duration = Duration::from_secs(3);

/// The counters rates are computed from.
#[derive(Clone, Copy)]
struct Counters {
    when: Instant,
    busy: u64,
    total: u64,
    rx: u64,
    tx: u64,
}

fn counters() -> io::Result<(Counters, usize)> {
    let stat = fs::read_to_string("/proc/stat")?;
    let cpu_line = stat.lines().next().ok_or_else(|| invalid("/proc/stat"))?;
    let ticks: Vec<u64> = cpu_line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if ticks.len() < 5 {
        return Err(invalid("/proc/stat"));
    }
    let total: u64 = ticks.iter().sum();
    let idle = ticks[3] + ticks[4];
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    let (rx, tx) = network_totals()?;
    let counters = Counters {
        when: Instant::now(),
        busy: total - idle,
        total,
        rx,
        tx,
    };
    Ok((counters, cpus))
}

/// Reads the machine's state. CPU and network rates are relative to the previous call; when
/// that is older than [`STALE`] (or there is none) they are left out: never an average over
/// an idle gap.
pub fn system() -> io::Result<SystemSample> {
    let (now, cpus) = counters()?;
    let before = SYSTEM
        .lock()
        .replace(now)
        .filter(|p| now.when.duration_since(p.when) < STALE);

    let meminfo = fs::read_to_string("/proc/meminfo")?;
    let field = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| invalid("/proc/meminfo"))
    };
    let (total_kib, available_kib) = (field("MemTotal:")?, field("MemAvailable:")?);

    let loadavg = fs::read_to_string("/proc/loadavg")?;
    let mut load = [0.0; 3];
    for (slot, value) in load.iter_mut().zip(loadavg.split_whitespace()) {
        *slot = value.parse().map_err(|_| invalid("/proc/loadavg"))?;
    }

    let seconds = |before: &Counters| now.when.duration_since(before.when).as_secs_f64().max(1e-3);
    let cpu = before.map(|before| {
        let ticks = now.total.saturating_sub(before.total).max(1);
        round(100.0 * now.busy.saturating_sub(before.busy) as f64 / ticks as f64)
    });
    let rate = |bytes: fn(&Counters) -> u64| {
        before.map(|before| {
            round(bytes(&now).saturating_sub(bytes(&before)) as f64 / seconds(&before))
        })
    };
    Ok(SystemSample {
        at: now_ms(),
        cpu,
        memory: round(100.0 * (total_kib - available_kib) as f64 / total_kib as f64),
        memory_used_mib: (total_kib - available_kib) / 1024,
        memory_total_mib: total_kib / 1024,
        load,
        net_rx: rate(|c| c.rx),
        net_tx: rate(|c| c.tx),
        cpus,
        sampled_by: std::process::id(),
    })
}

fn network_totals() -> io::Result<(u64, u64)> {
    let dev = fs::read_to_string("/proc/net/dev")?;
    let mut totals = (0, 0);
    for line in dev.lines().skip(2) {
        let Some((_, counters)) = line.split_once(':') else {
            continue;
        };
        let fields: Vec<u64> = counters
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if fields.len() >= 9 {
            totals.0 += fields[0];
            totals.1 += fields[8];
        }
    }
    Ok(totals)
}

/// Reads one process; `NotFound` when there is no such pid.
pub fn process(pid: u32) -> io::Result<ProcessSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The name is in parentheses and may contain spaces and parentheses itself.
    let open = stat.find('(').ok_or_else(|| invalid("/proc/<pid>/stat"))?;
    let close = stat.rfind(')').ok_or_else(|| invalid("/proc/<pid>/stat"))?;
    let name = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the name: state is field 3 of the file, utime 14, stime 15, threads 20, rss 24.
    let get = |n: usize| {
        fields
            .get(n - 3)
            .copied()
            .ok_or_else(|| invalid("/proc/<pid>/stat"))
    };
    let ticks = get(14)?.parse::<u64>().unwrap_or(0) + get(15)?.parse::<u64>().unwrap_or(0);
    let threads = get(20)?.parse().unwrap_or(0);
    let rss_pages: u64 = get(24)?.parse().unwrap_or(0);
    let now = Instant::now();
    let previous = PROCESSES
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(pid, (now, ticks))
        .filter(|(when, _)| now.duration_since(*when) < STALE);
    // Kernel clock ticks are 100 per second on Linux.
    let cpu = previous.map(|(when, before)| {
        let seconds = now.duration_since(when).as_secs_f64().max(1e-3);
        round(ticks.saturating_sub(before) as f64 / 100.0 / seconds * 100.0)
    });
    Ok(ProcessSample {
        at: now_ms(),
        pid,
        name,
        state: get(3)?.to_owned(),
        threads,
        cpu,
        rss_mib: round(rss_pages as f64 * 4096.0 / 1048576.0),
    })
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test, as both parts set the one previous reading.
    #[test]
    fn rates_are_over_a_recent_previous_reading_and_left_out_after_an_idle_gap() {
        // A reading a second ago with no byte received before it: the rate is against it, so
        // it is about every byte this machine ever received, per second.
        let (mut recent, _) = counters().unwrap();
        let received = recent.rx as f64;
        recent.when -= Duration::from_secs(1);
        recent.rx = 0;
        *SYSTEM.lock() = Some(recent);
        let sample = system().unwrap();
        assert!(
            sample.net_rx.unwrap() > received / 2.0,
            "against the recent reading: {sample:?}"
        );
        assert!((0.0..=100.0).contains(&sample.cpu.unwrap()));

        // The same a minute ago (the poller stopped while nobody watched): a rate against it
        // would be the gap's average, a spike on the plot. There is none instead.
        let (mut stale, _) = counters().unwrap();
        stale.when -= Duration::from_secs(60);
        stale.rx = 0;
        *SYSTEM.lock() = Some(stale);
        let sample = system().unwrap();
        assert_eq!(
            (sample.cpu, sample.net_rx, sample.net_tx),
            (None, None, None)
        );
        // And the next reading, a moment later, has its rates again.
        assert!(system().unwrap().cpu.is_some());
    }
}
