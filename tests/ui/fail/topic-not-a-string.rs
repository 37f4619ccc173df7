use sse_runtime::sse_topic;

#[sse_topic(42)]
#[derive(serde::Serialize)]
struct Alarm;

fn main() {}
