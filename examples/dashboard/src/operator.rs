//! The operator's panel: the framework's own figures, read every second from the same
//! Prometheus recorder that `GET /metrics` renders, and streamed like any other topic.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::http::StatusCode;
use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::Serialize;
use sse_runtime::telemetry;
use sse_runtime::{PollError, sse_poll};

/// One reading of the runtime's metrics.
#[derive(Clone, Debug, Default, Serialize, PartialEq, JsonSchema)]
pub struct RuntimeSample {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// Open SSE streams, all routes.
    pub streams: f64,
    pub topics: f64,
    pub pollers: f64,
    pub retained_bytes: f64,
    /// Events per second published and handed to connections, since the previous reading
    /// (`None` for the first reading, or after a gap in the readings).
    pub published_per_s: Option<f64>,
    pub delivered_per_s: Option<f64>,
    /// Streams ended since start, by reason (`client_gone`, `lagged`, ...).
    pub disconnects: BTreeMap<String, f64>,
    /// Reconnects with a `Last-Event-ID` since start: `replayed`, or the reset's reason.
    pub resumes: BTreeMap<String, f64>,
    /// Requests refused since start, by reason.
    pub refusals: BTreeMap<String, f64>,
    pub poll_errors: f64,
    /// The pid of the dashboard whose figures these are (the instance that polls).
    pub sampled_by: u32,
    /// Events published and delivered since start, for the rates (not sent).
    #[serde(skip)]
    published_total: f64,
    #[serde(skip)]
    delivered_total: f64,
}

/// The runtime's own figures, every second while someone watches.
#[sse_poll(interval = "1s", path = "/sse/runtime", change_detection = false)]
pub async fn runtime() -> Result<RuntimeSample, PollError> {
    let text = crate::METRICS
        .get()
        .map(|handle| handle.render())
        .ok_or_else(|| {
            PollError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no metrics recorder is installed",
            )
        })?;
    let mut sample = read(&text);
    sample.at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    sample.sampled_by = std::process::id();
    let totals = (sample.published_total, sample.delivered_total);
    let now = Instant::now();
    let mut previous = PREVIOUS.lock();
    if let Some((when, (published, delivered))) = *previous {
        let seconds = now.duration_since(when).as_secs_f64();
        // Rates over a gap (nobody watched for a while) would be averages of the gap.
        if (0.2..=3.0).contains(&seconds) {
            sample.published_per_s = Some(round((totals.0 - published).max(0.0) / seconds));
            sample.delivered_per_s = Some(round((totals.1 - delivered).max(0.0) / seconds));
        }
    }
    *previous = Some((now, totals));
    Ok(sample)
}

/// The previous reading's time and its published and delivered totals.
static PREVIOUS: Mutex<Option<(Instant, (f64, f64))>> = Mutex::new(None);

/// One series of the Prometheus text format: its name, its labels, its value.
fn series(text: &str) -> impl Iterator<Item = (&str, Vec<(&str, &str)>, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (head, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match head.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (head, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key, value.trim_matches('"')))
                })
                .collect();
            Some((name, labels, value))
        })
}

/// The figures of a `/metrics` text.
fn read(text: &str) -> RuntimeSample {
    let mut sample = RuntimeSample::default();
    for (name, labels, value) in series(text) {
        let label = |key: &str| {
            labels
                .iter()
                .find_map(|(k, v)| (*k == key).then(|| v.to_string()))
                .unwrap_or_default()
        };
        match name {
            telemetry::STREAMS => sample.streams += value,
            telemetry::TOPICS => sample.topics += value,
            telemetry::POLLERS => sample.pollers += value,
            telemetry::RETAINED_BYTES => sample.retained_bytes += value,
            telemetry::POLL_ERRORS => sample.poll_errors += value,
            telemetry::PUBLISHED => sample.published_total += value,
            telemetry::DELIVERED => sample.delivered_total += value,
            telemetry::DISCONNECTS => {
                *sample.disconnects.entry(label("reason")).or_default() += value
            }
            telemetry::REFUSALS => *sample.refusals.entry(label("reason")).or_default() += value,
            telemetry::RESUMES => {
                let outcome = match label("outcome").as_str() {
                    "replayed" => "replayed".to_owned(),
                    _ => format!("reset: {}", label("reason")),
                };
                *sample.resumes.entry(outcome).or_default() += value;
            }
            _ => {}
        }
    }
    sample
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_panel_reads_the_figures_of_a_metrics_text() {
        let text = r#"# TYPE sse_streams gauge
sse_streams{route="/sse"} 2
sse_streams{route="/sse/system"} 1
sse_topics 4
sse_pollers 3
sse_disconnects_total{route="/sse",reason="client_gone"} 5
sse_disconnects_total{route="/sse/system",reason="client_gone"} 1
sse_disconnects_total{route="/sse",reason="expired"} 2
sse_resumes_total{route="/sse",outcome="replayed",reason=""} 3
sse_resumes_total{route="/sse",outcome="reset",reason="unknown-epoch"} 1
sse_refusals_total{reason="guard"} 1
sse_events_delivered_total{route="/sse"} 40
sse_events_delivered_total{route="/sse/system"} 2
sse_poll_duration_seconds{quantile="0.5"} 0.001
"#;
        let sample = read(text);
        assert_eq!(
            (sample.streams, sample.topics, sample.pollers),
            (3.0, 4.0, 3.0)
        );
        assert_eq!(sample.disconnects["client_gone"], 6.0);
        assert_eq!(sample.disconnects["expired"], 2.0);
        assert_eq!(sample.resumes["replayed"], 3.0);
        assert_eq!(sample.resumes["reset: unknown-epoch"], 1.0);
        assert_eq!(sample.refusals["guard"], 1.0);
        assert_eq!(sample.delivered_total, 42.0);
    }
}
