use axum::extract::State;
use sse_runtime::{PollError, sse_poll};

#[derive(Clone)]
struct Db;

// App state reaches a poller as `Extension`, not `State`.
#[sse_poll(interval = "1s")]
async fn rows(State(_db): State<Db>) -> Result<u32, PollError> {
    Ok(1)
}

fn main() {}
