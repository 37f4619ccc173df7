//! Change detection: a topic does not resend a payload identical to its previous one. Its events
//! are states, so a subscriber that does not resume (a newcomer, or one reset) starts on the
//! newest event, under its original id: it gets the current state at once, never twice. On by
//! default for polled topics only.

mod common;

use common::{assert_nothing_pending, next_events};
use sse_runtime::{Manager, subscription::SubscribeOptions};

fn detecting(manager: &Manager, topic: &str) -> sse_runtime::subscription::Subscription {
    manager
        .subscribe_with(topic, SubscribeOptions::new().change_detection(true))
        .unwrap()
}

#[tokio::test]
async fn an_identical_payload_is_not_resent() {
    let manager = Manager::new();
    let mut sub = detecting(&manager, "t");
    manager.publish("t", &"same");
    assert_eq!(next_events(&mut sub).await[0].data, "\"same\"");
    manager.publish("t", &"same");
    assert_nothing_pending(&mut sub).await;
    assert_eq!(manager.stats().duplicates, 1);
    manager.publish("t", &"different");
    let events = next_events(&mut sub).await;
    assert_eq!(events[0].data, "\"different\"");
    assert_eq!(events[0].sequence(), 2, "the duplicate used no id");
}

#[tokio::test]
async fn only_consecutive_duplicates_are_skipped() {
    let manager = Manager::new();
    let mut sub = detecting(&manager, "t");
    for value in ["a", "b", "a"] {
        manager.publish("t", &value);
    }
    let events = common::take_events(&mut sub, 3).await;
    assert_eq!(
        events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["\"a\"", "\"b\"", "\"a\""]
    );
}

#[tokio::test]
async fn a_subscriber_that_joins_gets_the_newest_state_at_once() {
    let manager = Manager::new();
    let mut early = detecting(&manager, "t");
    manager.publish("t", &"state");
    let first = next_events(&mut early).await.remove(0);
    // Nothing more is published: the state is what the newcomer is owed (a poller that stopped
    // publishes nothing more).
    let mut late = manager.subscribe("t").unwrap();
    let got = next_events(&mut late).await;
    assert_eq!(got, [first], "the same event, id included");
    manager.publish("t", &"state"); // identical: skipped for both
    assert_nothing_pending(&mut early).await;
    assert_nothing_pending(&mut late).await;
}

#[tokio::test]
async fn a_newcomer_with_pending_events_is_not_served_twice() {
    let manager = Manager::new();
    let _keep = detecting(&manager, "t");
    manager.publish("t", &"x");
    let mut late = manager.subscribe("t").unwrap();
    manager.publish("t", &"y");
    manager.publish("t", &"y"); // duplicate while `late` still has "y" pending
    let events = next_events(&mut late).await;
    assert_eq!(
        events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["\"x\"", "\"y\""],
        "the state when it joined, then the one change"
    );
    assert_nothing_pending(&mut late).await;
}

#[tokio::test]
async fn off_by_default_for_topics_without_a_poller() {
    let manager = Manager::new();
    let mut sub = manager.subscribe("t").unwrap();
    manager.publish("t", &"same");
    manager.publish("t", &"same");
    assert_eq!(common::take_events(&mut sub, 2).await.len(), 2);
}

#[tokio::test]
async fn the_subscriber_that_creates_the_topic_decides() {
    let manager = Manager::new();
    let mut first = manager.subscribe("t").unwrap(); // off
    let _second = detecting(&manager, "t"); // too late to turn it on
    manager.publish("t", &1);
    manager.publish("t", &1);
    assert_eq!(common::take_events(&mut first, 2).await.len(), 2);
}
