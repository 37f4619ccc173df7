use sse_runtime::sse_topic;

#[sse_topic("alarms", colour = "red")]
#[derive(serde::Serialize)]
struct Alarm;

fn main() {}
