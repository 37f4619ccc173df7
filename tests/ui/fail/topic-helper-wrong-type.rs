use sse_runtime::sse_topic;

#[sse_topic("alarms")]
#[derive(serde::Serialize)]
struct Alarm {
    level: u8,
}

#[derive(serde::Serialize)]
struct Notice {
    text: String,
}

fn main() {
    // Only an Alarm may go to the alarms topic.
    publish_alarm(&Notice { text: "hello".into() });
}
