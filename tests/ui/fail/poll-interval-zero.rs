use sse_runtime::{PollError, sse_poll};

#[sse_poll(interval = "0s")]
async fn devices() -> Result<u32, PollError> {
    Ok(1)
}

fn main() {}
