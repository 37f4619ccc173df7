//! Spec: a poller that keeps failing logs its first failure at once (WARN), then at most one
//! summary per `ERROR_LOG_INTERVAL` while it goes on failing, then its recovery (INFO) with
//! the number of failures: a few lines a minute, never one per poll. Subscribers still get
//! every error payload.
//!
//! Time is paused (tokio's test clock), so ten minutes of one-second polls run in moments and
//! the counts are exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sse_integration_tests::Captured;
use sse_runtime::polling::{ERROR_LOG_INTERVAL, Polling};
use sse_runtime::subscription::SubscribeOptions;
use sse_runtime::{Manager, PollError};

#[tokio::test(start_paused = true)]
async fn a_failing_poller_logs_its_first_failure_a_summary_a_minute_and_its_recovery() {
    let captured = Captured::install();

    // Fails for ten minutes of polls (one a second), then succeeds.
    const FAILING_POLLS: u32 = 600;
    let polls = Arc::new(AtomicU32::new(0));
    let counter = polls.clone();
    let polling = Polling::new(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < FAILING_POLLS {
                Err(PollError::new(
                    http::StatusCode::BAD_GATEWAY,
                    "upstream down",
                ))
            } else {
                Ok(n)
            }
        }
    })
    .interval(Duration::from_secs(1));

    let manager = Manager::new();
    let mut sub = manager
        .subscribe_with("/sse/failing", SubscribeOptions::new().polling(polling))
        .unwrap();
    // Every failure still reaches the subscriber (change detection folds identical error
    // payloads, so wait for the first success instead of counting frames).
    loop {
        let frame = sub.recv().await.expect("the stream stays open");
        if !String::from_utf8_lossy(&frame).contains("statusCode") {
            break;
        }
    }
    assert_eq!(polls.load(Ordering::SeqCst), FAILING_POLLS + 1);

    let log = captured.text();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("poll failed"), 1, "{log}");
    let minutes = (FAILING_POLLS as u64 - 1) / ERROR_LOG_INTERVAL.as_secs();
    assert_eq!(count("poll still failing") as u64, minutes, "{log}");
    assert_eq!(count("poll recovered"), 1, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("poll recovered") && l.contains("failures=600")),
        "{log}"
    );
    assert!(log.lines().count() <= 12, "{log}");
}
