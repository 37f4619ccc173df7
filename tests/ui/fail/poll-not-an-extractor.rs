use sse_runtime::{PollError, sse_poll};

struct Config;

#[sse_poll(interval = "5s")]
async fn devices(config: Config) -> Result<u32, PollError> {
    let _ = config;
    Ok(1)
}

fn main() {}
