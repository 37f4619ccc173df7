use sse_runtime::sse_poll;

#[sse_poll(interval = "5s")]
struct Devices;

fn main() {}
