//! Every #[sse_poll] option, alone and combined, compiles and registers its route.
use axum::extract::{Path, Query};
use sse_runtime::{CancellationToken, Manager, PollError, sse_poll};

#[derive(Clone, serde::Deserialize)]
struct Params {
    n: u32,
}

async fn signed_in(Query(p): Query<Params>) -> Result<std::time::SystemTime, http::StatusCode> {
    let _ = p.n;
    Ok(std::time::SystemTime::now())
}

async fn open_door() -> Result<(), &'static str> {
    Ok(())
}

fn positive(n: &u32) -> bool {
    *n > 0
}

#[sse_poll]
async fn bare() -> Result<u32, PollError> {
    Ok(1)
}

#[sse_poll(history = 0, retention = "0s")]
async fn forgetful() -> Result<u32, PollError> {
    Ok(1)
}

#[sse_poll(interval = "1m 30s")]
async fn interval() -> Result<u32, PollError> {
    Ok(1)
}

#[sse_poll(stop_when = |n: &u32| *n > 3)]
async fn stop_closure() -> Result<u32, PollError> {
    Ok(1)
}

#[sse_poll(stop_when = positive, on_stop = || println!("stopped"))]
async fn stop_path() -> Result<u32, PollError> {
    Ok(1)
}

#[sse_poll(path = "/api/things/{id}/sse", api_version = "v2", change_detection = false)]
async fn with_path(Path(id): Path<u32>, Query(p): Query<Params>) -> Result<u32, PollError> {
    Ok(id + p.n)
}

#[sse_poll(topic = "fixed", interval = "250ms")]
async fn fixed(cancel: CancellationToken) -> Result<bool, std::io::Error> {
    Ok(cancel.is_cancelled())
}

#[sse_poll(
    interval = "2s",
    stop_when = |v: &Vec<String>| v.is_empty(),
    on_stop = || {},
    path = "/api/all/sse",
    topic = "all",
    api_version = "v3",
    change_detection = true,
    guard = signed_in,
)]
async fn everything(Query(p): Query<Params>, cancel: CancellationToken) -> Result<Vec<String>, PollError> {
    let _ = cancel;
    Ok(vec![p.n.to_string()])
}

#[sse_poll(event = "build", error_event = "build-error", stop_when = positive, end_on_stop = true)]
async fn named() -> Result<u32, PollError> {
    Ok(1)
}

#[sse_poll(guard = open_door)]
async fn guarded() -> Result<u32, PollError> {
    Ok(1)
}

// Named like locals of the generated code, which must not shadow them.
async fn manager() -> Result<(), http::StatusCode> {
    Ok(())
}

#[sse_poll(guard = manager)]
async fn parts(Query(p): Query<Params>) -> Result<u32, PollError> {
    Ok(p.n)
}

#[sse_poll]
async fn expires(Query(p): Query<Params>) -> Result<u32, PollError> {
    Ok(p.n)
}

#[sse_poll]
async fn snapshot(Query(p): Query<Params>) -> Result<u32, PollError> {
    Ok(p.n)
}

/// Return types the macro cannot take apart: an alias, and an `impl Trait` value.
type Polled<T> = Result<T, PollError>;

#[sse_poll]
async fn aliased() -> Polled<u32> {
    Ok(1)
}

#[sse_poll]
async fn opaque() -> Result<impl serde::Serialize + Send + 'static, std::io::Error> {
    Ok("value")
}

/// A `Path` of a struct reads its placeholders by name; a tuple reads them in order.
#[derive(serde::Deserialize)]
struct Run {
    project: String,
    id: u64,
}

#[sse_poll(path = "/sse/runs/{project}/{id}")]
async fn run(Path(run): Path<Run>) -> Result<u64, PollError> {
    Ok(run.id + run.project.len() as u64)
}

#[sse_poll(path = "/sse/jobs/{project}/{id}")]
async fn job(Path((project, id)): Path<(String, u64)>) -> Result<u64, PollError> {
    Ok(id + project.len() as u64)
}

fn main() {
    let _router: axum::Router = sse_runtime::routes::router_with(&Manager::new());
    assert_eq!(sse_runtime::routes::registered_routes().len(), 17);
}
