use sse_runtime::sse_topic;

// `interval` and `stop_when` belong to #[sse_poll]: the error says so.
#[sse_topic("alarms", interval = "5s", stop_when = |_: &Alarm| true)]
#[derive(serde::Serialize)]
struct Alarm;

fn main() {}
