//! Two registrations of one path or one topic are refused when the router is built, with a
//! message naming both items. (A test binary of its own: its items conflict on purpose.)

use std::sync::{Arc, Mutex};

use serde::Serialize;
use sse_runtime::{Manager, PollError, sse_poll, sse_topic};

mod billing {
    #[sse_runtime::sse_topic("invoices")]
    #[derive(serde::Serialize)]
    pub struct Invoice(pub u32);
}

mod accounting {
    #[sse_runtime::sse_topic("invoices", path = "/api/invoices/sse")]
    #[derive(serde::Serialize)]
    pub struct Invoice(pub u32);
}

#[sse_topic("status", path = "/sse/health")]
#[derive(Serialize)]
struct Status;

#[sse_poll]
async fn health() -> Result<u8, PollError> {
    Ok(1)
}

#[test]
fn conflicts_name_both_items() {
    let error = sse_runtime::routes::try_router_with::<()>(&Manager::new())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            "topic \"invoices\" is registered by both `macro_conflicts::accounting::Invoice` and `macro_conflicts::billing::Invoice`"
        ),
        "{error}"
    );
    assert!(
        error.contains("path \"/sse/health\" is registered by both `macro_conflicts::Status` and `macro_conflicts::health`"),
        "{error}"
    );
}

#[test]
#[should_panic(expected = "conflicting SSE registrations")]
fn router_panics_on_conflicts() {
    let _ = sse_runtime::routes::router_with::<()>(&Manager::new());
}

/// A conflict is found when the router is built, at start-up: the panic points at that call,
/// in the user's code, not into the runtime.
#[test]
fn the_panic_points_at_the_call_that_builds_the_router() {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let hook = std::panic::take_hook();
    let sink = seen.clone();
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| l.file().to_owned())
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        sink.lock().unwrap().push((location, message));
    }));
    let built = std::panic::catch_unwind(|| sse_runtime::router::<()>());
    std::panic::set_hook(hook);
    assert!(built.is_err(), "the conflicts panic");
    let seen = seen.lock().unwrap();
    let (location, message) = seen
        .iter()
        .find(|(_, message)| message.contains("conflicting SSE registrations"))
        .expect("the conflict's panic was seen");
    assert!(location.ends_with("macro_conflicts.rs"), "{location}");
    assert!(message.contains("its own `path"), "{message}");
}

#[test]
fn the_conflicting_items_still_work_on_their_own() {
    accounting::publish_invoice_to(&Manager::new(), &accounting::Invoice(1));
    billing::publish_invoice_to(&Manager::new(), &billing::Invoice(2));
    let _ = Status;
}
