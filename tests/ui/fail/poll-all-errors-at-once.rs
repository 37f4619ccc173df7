use sse_runtime::{PollError, sse_poll};

// Every mistake in the attribute is reported in one go.
#[sse_poll(interval = "soon", path = "devices", colour = "red", topic = "")]
async fn devices() -> Result<u32, PollError> {
    Ok(1)
}

fn main() {}
