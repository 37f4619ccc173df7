use sse_runtime::sse_topic;

#[sse_topic("devices/{id")]
#[derive(serde::Serialize)]
struct DeviceState;

fn main() {}
