use sse_runtime::sse_topic;

#[sse_topic("alarms")]
struct Alarm {
    level: u8,
}

fn main() {}
