use sse_runtime::{PollError, sse_poll};

struct Reading {
    celsius: f32,
}

#[sse_poll(interval = "1s")]
async fn temperature() -> Result<Reading, PollError> {
    Ok(Reading { celsius: 21.5 })
}

fn main() {}
