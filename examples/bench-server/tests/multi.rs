//! Spec (issue 27): `bench-server` serves its topic routes together at
//! `GET /sse?topic=...`, so any SSE client can be tried on the multi-topic route from outside:
//! each event's type is its topic's path, and a resume with the composite id gets what was
//! published meanwhile.

mod common;

use common::Node;
use sse_integration_tests::SseClient;

async fn publish(node: &Node, topic: &str, body: &str) {
    let response = reqwest::Client::new()
        .post(node.url(&format!("/publish/{topic}?confirm")))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn several_topics_arrive_on_one_stream_and_resume_together() {
    let node = Node::start(&[]);
    let url = node.url("/sse?topic=/sse/a&topic=/sse/b");
    let mut client = SseClient::connect(&url).await;
    assert_eq!(client.status, 200);
    let (position, _) = client.position().await;
    publish(&node, "a", r#"{"n":1}"#).await;
    publish(&node, "b", r#"{"n":2}"#).await;
    let first = client.event().await;
    let second = client.event().await;
    assert_eq!(
        (first.event.as_str(), first.data.as_str()),
        ("/sse/a", r#"{"n":1}"#)
    );
    assert_eq!(
        (second.event.as_str(), second.data.as_str()),
        ("/sse/b", r#"{"n":2}"#)
    );
    drop(client);

    // From the position before both: both again, in order.
    let mut resumed = SseClient::connect_with(&url, Some(&position)).await;
    let again: Vec<(String, String)> = [resumed.event().await, resumed.event().await]
        .into_iter()
        .map(|e| (e.event, e.data))
        .collect();
    assert_eq!(
        again,
        [
            ("/sse/a".to_owned(), r#"{"n":1}"#.to_owned()),
            ("/sse/b".to_owned(), r#"{"n":2}"#.to_owned())
        ]
    );
}
