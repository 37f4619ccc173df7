//! The caps, tried from outside: bench-server reads `MAX_STREAMS_PER_IP`, `MAX_POLLERS`,
//! `MAX_TOPICS` and `MAX_STREAMS` from its environment, refuses what is over them (`429` per
//! IP, `503` otherwise, with `Retry-After`; as those statuses with `REFUSALS=status`, else as
//! a `200` event stream holding a `refused` event), counts the refusals in `/stats`, and
//! serves again once the clients have left.

use sse_integration_tests::PATIENCE;

mod common;
use common::{Node, stats_until};

async fn status(url: &str) -> (u16, Option<String>, reqwest::Response) {
    let response = tokio::time::timeout(PATIENCE, reqwest::get(url))
        .await
        .expect("answer in time")
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), retry_after, response)
}

#[tokio::test]
async fn distinct_polled_urls_beyond_max_pollers_are_refused_and_served_again_later() {
    // The explosion of issue 13: one poller per distinct URL, without a bound.
    let node = Node::start(&[("MAX_POLLERS", "10"), ("REFUSALS", "status")]);
    let mut open = Vec::new();
    let mut refused = 0;
    for n in 0..50 {
        let (code, retry_after, response) = status(&node.url(&format!("/poll/p{n}"))).await;
        match code {
            200 => open.push(response),
            503 => {
                assert_eq!(retry_after.as_deref(), Some("5"));
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((open.len(), refused), (10, 40));
    let stats = node.stats().await;
    assert_eq!(stats["pollers"], 10, "{stats}");
    assert_eq!(stats["topics"], 10, "{stats}");
    assert_eq!(stats["refused"]["pollers"], 40, "{stats}");

    drop(open);
    stats_until(&node, |s| s["pollers"] == 0 && s["topics"] == 0).await;
    let (code, _, _) = status(&node.url("/poll/p49")).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn streams_beyond_max_streams_per_ip_get_429() {
    let node = Node::start(&[
        ("MAX_STREAMS_PER_IP", "2"),
        ("MAX_TOPICS", "100"),
        ("REFUSALS", "status"),
    ]);
    let (a, _, _first) = status(&node.url("/sse/a")).await;
    let (b, _, _second) = status(&node.url("/sse/b")).await;
    let (c, retry_after, third) = status(&node.url("/sse/c")).await;
    assert_eq!((a, b, c), (200, 200, 429));
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert_eq!(
        third.text().await.unwrap(),
        "too many open SSE streams from this client"
    );
    let stats = node.stats().await;
    assert_eq!(stats["refused"]["per_client"], 1, "{stats}");
    assert_eq!(stats["subscribers"], 2, "{stats}");
}

/// A GET carrying `X-Forwarded-For: forwarded`, as a proxy on 127.0.0.1 sends it.
async fn forwarded_status(url: &str, forwarded: &str) -> (u16, reqwest::Response) {
    let request = reqwest::Client::new()
        .get(url)
        .header("x-forwarded-for", forwarded)
        .send();
    let response = tokio::time::timeout(PATIENCE, request)
        .await
        .expect("answer in time")
        .unwrap();
    (response.status().as_u16(), response)
}

#[tokio::test]
async fn behind_trusted_proxies_the_cap_counts_each_forwarded_client() {
    let node = Node::start(&[
        ("MAX_STREAMS_PER_IP", "1"),
        ("TRUSTED_PROXIES", "127.0.0.1/32, ::1/128"),
        ("REFUSALS", "status"),
    ]);
    let (a, _first) = forwarded_status(&node.url("/sse/a"), "198.51.100.1").await;
    let (b, _second) = forwarded_status(&node.url("/sse/b"), "198.51.100.2").await;
    let (again, _third) = forwarded_status(&node.url("/sse/c"), "198.51.100.1").await;
    assert_eq!((a, b, again), (200, 200, 429));
    let stats = node.stats().await;
    assert_eq!(stats["subscribers"], 2, "{stats}");
}

#[tokio::test]
async fn by_default_a_refusal_is_an_event_stream_a_browser_comes_back_from() {
    let node = Node::start(&[("MAX_STREAMS", "1")]);
    let (a, _, _first) = status(&node.url("/sse/a")).await;
    let (b, retry_after, refused) = status(&node.url("/sse/b")).await;
    assert_eq!((a, b), (200, 200));
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert_eq!(refused.headers()["content-type"], "text/event-stream");
    let body = refused.text().await.unwrap();
    assert!(
        body.starts_with("retry: ")
            && body.contains("event: refused\ndata: {\"status\":503,\"reason\":\"too many open SSE streams on this server\"")
            && body.ends_with("}\n\n"),
        "{body:?}"
    );
    let stats = node.stats().await;
    assert_eq!(
        (
            stats["refused"]["streams"].as_u64(),
            stats["subscribers"].as_u64()
        ),
        (Some(1), Some(1)),
        "{stats}"
    );
}
