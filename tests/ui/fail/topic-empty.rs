use sse_runtime::sse_topic;

#[sse_topic("")]
#[derive(serde::Serialize)]
struct Alarm;

fn main() {}
