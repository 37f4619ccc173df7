use axum::extract::Path;
use sse_runtime::{PollError, sse_poll};

#[sse_poll(interval = "1s", path = "/sse/builds")]
async fn build(Path(id): Path<u64>) -> Result<u64, PollError> {
    Ok(id)
}

#[sse_poll(interval = "1s", path = "/sse/runs/{id}")]
async fn run(Path((project, id)): Path<(String, u64)>) -> Result<u64, PollError> {
    Ok(id + project.len() as u64)
}

fn main() {}
