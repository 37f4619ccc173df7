//! Spec (issue 33, part 2): a poll function's library error (`?` on a `std::io::Error`) reaches
//! every subscriber as a generic `500` `internal error`, while its full text, with its
//! `source()` chain, goes to the log: paths, host names and queries stay on the server.
//! `PollError::new(status, message)` is what clients are told.

use std::time::Duration;

use axum::extract::Path;
use sse_integration_tests::{Captured, SseClient, TestServer};
use sse_runtime::{Manager, PollError, sse_poll};

/// An I/O error whose source names a file, as a database or file library reports it.
#[derive(Debug)]
struct ReportMissing(std::io::Error);

impl std::fmt::Display for ReportMissing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot read the report")
    }
}

impl std::error::Error for ReportMissing {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[sse_poll(path = "/sse/reports/{id}", interval = "1h")]
async fn report(Path(id): Path<u32>) -> Result<u32, PollError> {
    if id == 404 {
        return Err(PollError::new(
            http::StatusCode::NOT_FOUND,
            "no such report",
        ));
    }
    let path = format!("/srv/secret/reports/{id}.json");
    std::fs::read(&path)
        .map_err(|e| ReportMissing(std::io::Error::new(e.kind(), format!("{path}: {e}"))))?;
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_error_reaches_subscribers_as_a_generic_500_and_the_log_holds_its_text() {
    let captured = Captured::install();
    let manager = Manager::new();
    let server = TestServer::start_direct(
        sse_runtime::routes::router_with(&manager),
        Duration::from_secs(30),
    )
    .await;

    let mut client = SseClient::connect(&server.url("/sse/reports/7")).await;
    let event = client.event().await;
    let payload: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({"apiVersion": "v1", "statusCode": 500, "message": "internal error"})
    );
    assert!(!event.data.contains("/srv"), "{}", event.data);
    let log = captured.text();
    assert!(
        log.contains("cannot read the report: /srv/secret/reports/7.json: No such file"),
        "the log keeps the error and its source: {log}"
    );
    assert!(
        log.contains("sse_poller{topic=/sse/reports/7}"),
        "in the poller's span: {log}"
    );

    // What the function says to clients on purpose reaches them as written.
    let mut client = SseClient::connect(&server.url("/sse/reports/404")).await;
    let payload: serde_json::Value = serde_json::from_str(&client.event().await.data).unwrap();
    assert_eq!(
        (payload["statusCode"].as_u64(), payload["message"].as_str()),
        (Some(404), Some("no such report"))
    );
}
