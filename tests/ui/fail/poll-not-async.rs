use sse_runtime::{PollError, sse_poll};

#[sse_poll(interval = "5s")]
fn devices() -> Result<u32, PollError> {
    Ok(1)
}

fn main() {}
