use sse_runtime::{PollError, sse_poll, sse_topic};

// Each history option with a value of the wrong kind or out of range, reported together.
#[sse_topic("ticks", history = "256", history_bytes = -1, retention = "soon")]
#[derive(serde::Serialize)]
struct Tick;

#[sse_poll(history = 99999999999, retention = 30)]
async fn counter() -> Result<u32, PollError> {
    Ok(1)
}

fn main() {}
