use sse_runtime::sse_topic;

#[sse_topic("alarms", path = "api/alarms/sse")]
#[derive(serde::Serialize)]
struct Alarm;

fn main() {}
