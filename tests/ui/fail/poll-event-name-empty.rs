use sse_runtime::{PollError, sse_poll};

#[sse_poll(event = "", error_event = "two\nlines")]
async fn build() -> Result<u32, PollError> {
    Ok(1)
}

fn main() {}
