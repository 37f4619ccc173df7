use axum::extract::Query;
use http::HeaderMap;
use sse_runtime::{PollError, sse_poll};

#[derive(serde::Deserialize)]
struct Folder {
    id: u32,
}

// A shared poller must not read one subscriber's headers: a compile error on the type.
#[sse_poll(interval = "5s")]
async fn inbox(Query(folder): Query<Folder>, headers: HeaderMap) -> Result<u32, PollError> {
    let _ = headers;
    Ok(folder.id)
}

fn main() {}
