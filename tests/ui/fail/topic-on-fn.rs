use sse_runtime::sse_topic;

#[sse_topic("alarms")]
fn alarm() {}

fn main() {}
