use sse_runtime::{PollError, sse_poll};

#[sse_poll(interval = "1s", end_on_stop = true)]
async fn deploy() -> Result<u32, PollError> {
    Ok(1)
}

fn main() {}
