//! Every #[sse_topic] option, alone and combined, compiles and registers its route.
use sse_runtime::{Manager, SseTopic, sse_topic};

#[sse_topic("plain")]
#[derive(serde::Serialize)]
struct Plain;

#[sse_topic("with-path", path = "/api/with-path/sse")]
#[derive(serde::Serialize)]
struct WithPath;

#[sse_topic("with-event", event = "named")]
#[derive(serde::Serialize)]
struct WithEvent;

#[sse_topic("dedup", change_detection = true)]
#[derive(serde::Serialize)]
struct Dedup;

#[sse_topic("no-dedup", change_detection = false)]
#[derive(serde::Serialize)]
struct NoDedup;

async fn admitted(_headers: http::HeaderMap) -> Result<(), http::StatusCode> {
    Ok(())
}

#[sse_topic("guarded", guard = admitted)]
#[derive(serde::Serialize)]
struct Guarded;

#[sse_topic("items/{kind}/{id}", path = "/api/items/{kind}/{id}/sse", event = "item", change_detection = true, guard = admitted)]
#[derive(serde::Serialize)]
pub enum Item {
    A,
    B(u8),
}

// Named like the generated mount function's parameter, which must not shadow it.
async fn manager() -> Result<(), http::StatusCode> {
    Ok(())
}

#[sse_topic("hygiene", guard = manager)]
#[derive(serde::Serialize)]
struct Hygiene;

#[sse_topic("kept", history = 10_000, history_bytes = 16_777_216, retention = "2m")]
#[derive(serde::Serialize)]
struct Kept;

fn main() {
    let manager = Manager::new();
    let _router: axum::Router = sse_runtime::routes::router_with(&manager);
    assert_eq!(sse_runtime::routes::registered_routes().len(), 9);
    publish_plain_to(&manager, &Plain);
    publish_with_path_to(&manager, &WithPath);
    publish_with_event_to(&manager, &WithEvent);
    publish_dedup_to(&manager, &Dedup);
    publish_no_dedup_to(&manager, &NoDedup);
    publish_guarded_to(&manager, &Guarded);
    publish_item_to(&manager, "a", 1, &Item::A);
    publish_item_to(&manager, "b", 2, &Item::B(2));
    publish_kept_to(&manager, &Kept);
    assert_eq!(Item::EVENT, Some("item"));
}
