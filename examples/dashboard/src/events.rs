//! What the dashboard streams: a polled system topic, a polled per-process topic (one per
//! `?pid=`), and alarms raised when a reading crosses its threshold.

use axum::extract::Query;
use axum::http::StatusCode;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sse_runtime::{PollError, sse_poll, sse_topic};

use crate::metrics::{self, ProcessSample, SystemSample};

/// Raised when a reading goes above its threshold (once per crossing).
#[sse_topic("alarms", event = "alarm", path = "/sse/alarms")]
#[derive(Clone, Debug, Serialize)]
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

struct AlarmState {
    thresholds: Thresholds,
    /// Which metrics are above their threshold now; an alarm fires on the way up only.
    above: [bool; 3],
}

static STATE: Mutex<AlarmState> = Mutex::new(AlarmState {
    thresholds: Thresholds {
        cpu: 90.0,
        memory: 90.0,
        load: 8.0,
    },
    above: [false; 3],
});

pub fn thresholds() -> Thresholds {
    STATE.lock().thresholds
}

/// Sets new thresholds; every metric is re-armed, so one already above a lowered threshold
/// raises an alarm at the next sample.
pub fn set_thresholds(thresholds: Thresholds) {
    let mut state = STATE.lock();
    state.thresholds = thresholds;
    state.above = [false; 3];
}

fn check_alarms(sample: &SystemSample) {
    let fired: Vec<Alarm> = {
        let mut state = STATE.lock();
        let t = state.thresholds;
        let readings = [
            ("cpu", sample.cpu, t.cpu),
            ("memory", sample.memory, t.memory),
            ("load", sample.load[0], t.load),
        ];
        readings
            .into_iter()
            .zip(state.above.iter_mut())
            .filter_map(|((metric, value, threshold), above)| {
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
}

/// The whole machine, every second, while someone watches.
#[sse_poll(interval = "1s", path = "/sse/system", change_detection = false)]
pub async fn system() -> Result<SystemSample, PollError> {
    let sample = tokio::task::spawn_blocking(metrics::system).await??;
    check_alarms(&sample);
    Ok(sample)
}

#[derive(Clone, Debug, Deserialize)]
pub struct ProcessQuery {
    pub pid: u32,
}

/// One process, chosen by `?pid=`: each pid is its own topic with its own poller.
#[sse_poll(interval = "1s", path = "/sse/process")]
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
