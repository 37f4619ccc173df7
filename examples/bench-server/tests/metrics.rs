//! `GET /metrics` after a known workload: the numbers a Prometheus scrape sees are the ones the
//! workload made.
//!
//! Spec: with the `metrics` feature and a recorder installed (bench-server installs
//! metrics-exporter-prometheus), the runtime records open streams, live topics and running
//! pollers as gauges; published and delivered events, delivered bytes, refusals by reason,
//! disconnects by reason and resumes by outcome as counters; poll durations and
//! publish-to-write latency as histograms. Labels are the route template and a reason, never
//! the topic.

use std::collections::BTreeMap;

use sse_integration_tests::SseClient;

mod common;
use common::{Node, reqwest_get, stats_until};

/// A scrape as `name{sorted labels}` -> value.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let key = match series.split_once('{') {
                Some((name, labels)) => {
                    let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                    labels.sort_unstable();
                    format!("{name}{{{}}}", labels.join(","))
                }
                None => series.to_owned(),
            };
            (key, value.parse().expect("a number"))
        })
        .collect()
}

async fn publish(node: &Node, topic: &str, n: u64) {
    let response = reqwest::Client::new()
        .post(node.url(&format!("/publish/{topic}")))
        .header("content-type", "application/json")
        .body(format!("{{\"n\":{n}}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_a_known_workload_shows_its_numbers() {
    let node = Node::start(&[("MAX_TOPICS", "2"), ("REFUSALS", "status")]);
    let route = r#"route="/sse/{topic}""#;

    // Three subscribers, five events: 15 deliveries.
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(SseClient::connect(&node.url("/sse/a")).await);
    }
    for n in 0..5 {
        publish(&node, "a", n).await;
    }
    let mut ids = Vec::new();
    for client in &mut clients {
        ids = Vec::new();
        for _ in 0..5 {
            ids.push(client.event().await.id);
        }
    }
    // A polled topic (the second), then a third topic, over MAX_TOPICS: refused.
    let mut polled = SseClient::connect(&node.url("/poll/p")).await;
    polled.event().await;
    let refused = reqwest::get(node.url("/sse/b")).await.unwrap();
    assert_eq!(refused.status(), 503);

    // One subscriber leaves; two reconnect: one resumes after event 3 (2 replayed), one
    // with an id that is not one.
    drop(clients.pop());
    stats_until(&node, |stats| stats["subscribers"] == 3).await;
    let mut resumed = SseClient::connect_with(&node.url("/sse/a"), Some(&ids[2])).await;
    assert_eq!(resumed.event().await.id, ids[3]);
    assert_eq!(resumed.event().await.id, ids[4]);
    let mut reset = SseClient::connect_with(&node.url("/sse/a"), Some("nonsense")).await;
    assert_eq!(reset.event().await.event, "reset");

    let scrape = parse(&reqwest_get(&node.url("/metrics")).await);
    let get = |key: &str| -> f64 {
        *scrape
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in the scrape: {scrape:#?}"))
    };
    // The poller goes on polling: a poll is timed just before its event is published.
    let polls = get("sse_poll_duration_seconds_count");
    let published = get("sse_events_published_total");
    assert!(
        (5.0 + polls - 1.0..=5.0 + polls).contains(&published),
        "5 + one per poll ({polls}): {published}"
    );
    assert_eq!(get(&format!("sse_events_delivered_total{{{route}}}")), 17.0);
    assert_eq!(
        get(&format!("sse_streams{{{route}}}")),
        4.0,
        "2 + resumed + reset"
    );
    assert_eq!(get(r#"sse_streams{route="/poll/{topic}"}"#), 1.0);
    assert_eq!(get("sse_topics"), 2.0);
    assert_eq!(get("sse_pollers"), 1.0);
    assert_eq!(get(r#"sse_refusals_total{reason="topics"}"#), 1.0);
    assert_eq!(
        get(&format!(
            r#"sse_disconnects_total{{reason="client_gone",{route}}}"#
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            r#"sse_resumes_total{{outcome="replayed",reason="none",{route}}}"#
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            r#"sse_resumes_total{{outcome="reset",reason="malformed-last-event-id",{route}}}"#
        )),
        1.0
    );
    assert!(get(&format!("sse_bytes_delivered_total{{{route}}}")) > 17.0 * 10.0);
    assert!(get(&format!("sse_publish_to_write_seconds_count{{{route}}}")) >= 1.0);
    assert!(get("sse_poll_duration_seconds_count") >= 1.0);
    assert!(
        !scrape
            .keys()
            .any(|key| key.contains("/sse/a") || key.contains("\"p\"")),
        "no topic in a label"
    );
    drop((clients, polled, resumed, reset));
}
