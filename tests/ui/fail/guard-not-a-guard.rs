use sse_runtime::{PollError, sse_poll, sse_topic};

// Returns a String, not `Result<(), impl IntoResponse>`.
async fn says_yes() -> String {
    "yes".into()
}

// Takes an argument that is no axum extractor.
struct Config;
async fn with_config(_config: Config) -> Result<(), http::StatusCode> {
    Ok(())
}

#[sse_topic("alarms", guard = says_yes)]
#[derive(serde::Serialize)]
struct Alarm;

#[sse_poll(interval = "5s", guard = with_config)]
async fn devices() -> Result<u32, PollError> {
    Ok(1)
}

fn main() {}
