use sse_runtime::{PollError, sse_poll};

#[sse_poll(every = "5s")]
async fn devices() -> Result<u32, PollError> {
    Ok(1)
}

fn main() {}
