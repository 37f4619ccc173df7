//! What the dashboard streams: a polled system topic, a polled per-process topic (one per
//! `?pid=`), and alarms raised when a reading crosses its threshold.

use std::sync::OnceLock;

use axum::extract::Query;
use axum::http::StatusCode;
use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sse_runtime::{PollError, sse_poll, sse_topic};

use crate::metrics::{self, ProcessSample, SystemSample};

/// Raised when a reading goes above its threshold (once per crossing).
#[sse_topic("alarms", event = "alarm", path = "/sse/alarms")]
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Alarm {
    pub metric: &'static str,
    pub value: f64,
    pub threshold: f64,
    pub at: u64,
}

/// Alarm thresholds, in percent (CPU, memory) and load-average units.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
pub struct Thresholds {
    pub cpu: f64,
    pub memory: f64,
    pub load: f64,
}

/// Where the thresholds live. In one process, in memory; with several instances on one Redis
/// (`--redis`), in Redis, so that whichever instance polls raises alarms against the thresholds
/// set on any of them. A version number counts the changes.
enum Store {
    Memory(Mutex<(Thresholds, u64)>),
    Redis(redis::aio::ConnectionManager),
}

const KEY: &str = "dashboard:thresholds";
const DEFAULTS: Thresholds = Thresholds {
    cpu: 90.0,
    memory: 90.0,
    load: 8.0,
};

static STORE: OnceLock<Store> = OnceLock::new();

fn store() -> &'static Store {
    STORE.get_or_init(|| Store::Memory(Mutex::new((DEFAULTS, 0))))
}

/// Keeps the thresholds in Redis from now on (call once, at start-up).
pub async fn share_thresholds_through(url: &str) -> redis::RedisResult<()> {
    let connection = redis::Client::open(url)?.get_connection_manager().await?;
    if STORE.set(Store::Redis(connection)).is_err() {
        panic!("the threshold store is chosen once, before the first use");
    }
    Ok(())
}

/// The thresholds' Redis did not answer.
fn unreachable_store(error: redis::RedisError) -> PollError {
    PollError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
}

/// The thresholds and their version.
async fn current() -> Result<(Thresholds, u64), PollError> {
    match store() {
        Store::Memory(state) => Ok(*state.lock()),
        Store::Redis(connection) => {
            let (json, version): (Option<String>, Option<u64>) = redis::cmd("MGET")
                .arg(KEY)
                .arg(format!("{KEY}:version"))
                .query_async(&mut connection.clone())
                .await
                .map_err(unreachable_store)?;
            let thresholds = json
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or(DEFAULTS);
            Ok((thresholds, version.unwrap_or(0)))
        }
    }
}

pub async fn thresholds() -> Result<Thresholds, PollError> {
    Ok(current().await?.0)
}

/// Sets new thresholds; every metric is re-armed, so one already above a lowered threshold
/// raises an alarm at the next sample.
pub async fn set_thresholds(thresholds: Thresholds) -> Result<(), PollError> {
    match store() {
        Store::Memory(state) => {
            let mut state = state.lock();
            *state = (thresholds, state.1 + 1);
        }
        Store::Redis(connection) => {
            let json = serde_json::to_string(&thresholds).expect("plain numbers");
            redis::pipe()
                .atomic()
                .set(KEY, json)
                .ignore()
                .incr(format!("{KEY}:version"), 1)
                .ignore()
                .query_async::<()>(&mut connection.clone())
                .await
                .map_err(unreachable_store)?;
        }
    }
    Ok(())
}

/// The poller's own state: which metrics are above their threshold now (an alarm fires on the
/// way up only), as of which threshold version.
static ABOVE: Mutex<([bool; 3], u64)> = Mutex::new(([false; 3], 0));

async fn check_alarms(sample: &SystemSample) -> Result<(), PollError> {
    let (t, version) = current().await?;
    let fired: Vec<Alarm> = {
        let mut above = ABOVE.lock();
        if above.1 != version {
            *above = ([false; 3], version);
        }
        // The CPU has no reading right after an idle gap: its state stays as it was.
        let readings = [
            ("cpu", sample.cpu, t.cpu),
            ("memory", Some(sample.memory), t.memory),
            ("load", Some(sample.load[0]), t.load),
        ];
        readings
            .into_iter()
            .zip(above.0.iter_mut())
            .filter_map(|((metric, value, threshold), above)| {
                let value = value?;
                let now_above = value > threshold;
                let crossed = now_above && !*above;
                *above = now_above;
                crossed.then_some(Alarm {
                    metric,
                    value,
                    threshold,
                    at: sample.at,
                })
            })
            .collect()
    };
    for alarm in &fired {
        tracing::warn!(
            metric = alarm.metric,
            value = alarm.value,
            threshold = alarm.threshold,
            "alarm"
        );
        publish_alarm(alarm);
    }
    Ok(())
}

/// The whole machine, every second, while someone watches.
#[sse_poll(interval = "1s", path = "/sse/system", change_detection = false)]
pub async fn system() -> Result<SystemSample, PollError> {
    let sample = tokio::task::spawn_blocking(metrics::system).await??;
    check_alarms(&sample).await?;
    Ok(sample)
}

#[derive(Clone, Debug, Deserialize)]
pub struct ProcessQuery {
    pub pid: u32,
}

/// One process, chosen by `?pid=`: each pid is its own topic with its own poller. Only for a
/// browser with a session (see `session`).
#[sse_poll(interval = "1s", path = "/sse/process", guard = crate::session::required)]
pub async fn process(Query(query): Query<ProcessQuery>) -> Result<ProcessSample, PollError> {
    let pid = query.pid;
    match tokio::task::spawn_blocking(move || metrics::process(pid)).await? {
        Ok(sample) => Ok(sample),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(PollError::new(
            StatusCode::NOT_FOUND,
            format!("no process with pid {pid}"),
        )),
        Err(error) => Err(error.into()),
    }
}
