use sse_runtime::{PollError, sse_poll};

#[sse_poll(stop_when = |name: &String| name.is_empty())]
async fn devices() -> Result<u32, PollError> {
    Ok(1)
}

fn main() {}
