use sse_runtime::sse_topic;

#[sse_topic("alarms")]
union Alarm {
    level: u8,
    code: u32,
}

fn main() {}
