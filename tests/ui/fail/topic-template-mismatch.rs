use sse_runtime::sse_topic;

#[sse_topic("devices/{id}", path = "/sse/devices/{device}")]
#[derive(serde::Serialize)]
struct DeviceState;

fn main() {}
