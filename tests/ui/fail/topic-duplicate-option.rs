use sse_runtime::sse_topic;

#[sse_topic("alarms", event = "alarm", event = "alert")]
#[derive(serde::Serialize)]
struct Alarm;

fn main() {}
