//! The global manager behind `router()` and the plain `publish_*` helpers, configured once.
//!
//! Spec: `Manager::builder()...install()` configures the global manager before first use;
//! `router()` then serves the macro routes with those settings and the plain helpers publish
//! to them, with nothing counted as unrouted. A second `install`, or one after the global
//! manager was used, is `ConfigError::GlobalInUse`. (Its own binary: the global manager is
//! process-wide.)

use std::time::Duration;

use serde::Serialize;
use sse_integration_tests::{RawClient, SseClient, TestServer};
use sse_runtime::config::ConfigError;
use sse_runtime::{Manager, sse_topic};

#[sse_topic("alerts", event = "alert", history = 3)]
#[derive(Serialize)]
struct Alert {
    level: u8,
}

#[tokio::test]
async fn an_installed_global_configures_the_routes_and_helpers_of_the_macros() {
    let installed = Manager::builder()
        .heartbeat(Duration::from_millis(200))
        .retry(Duration::from_millis(1234))
        .install()
        .expect("first install");
    assert_eq!(
        Manager::builder().install().err(),
        Some(ConfigError::GlobalInUse)
    );
    assert_eq!(Manager::global().heartbeat(), Duration::from_millis(200));

    let server = TestServer::start(sse_runtime::router(), Duration::from_secs(30)).await;
    let mut raw = RawClient::get(server.addr, "/sse/alerts").await;
    assert_eq!(raw.status(), 200);
    let body = String::from_utf8_lossy(&raw.read_until_contains(b"\n\n").await).into_owned();
    let retry: u64 = body
        .split("retry: ")
        .nth(1)
        .and_then(|rest| rest.split('\n').next()?.parse().ok())
        .unwrap_or_else(|| panic!("a retry hint first: {body:?}"));
    assert!(
        (1234..1234 + 617).contains(&retry),
        "the installed 1234 ms plus jitter: {retry}"
    );
    raw.read_until_contains(b":\n\n").await; // a heartbeat within the installed 200 ms

    let mut client = SseClient::connect(&server.url("/sse/alerts")).await;
    publish_alert(&Alert { level: 2 });
    let event = client.event().await;
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("alert", r#"{"level":2}"#)
    );
    assert_eq!(installed.stats().unrouted, 0);
    assert_eq!(installed.stats().published, 1);
}
