//! The topic registry: one broadcaster per topic, created by the first subscriber, removed by
//! the last; publishing is fire-and-forget. (Ports the Go package's manager tests.)

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{assert_nothing_pending, next_events, take_events};
use serde::Serialize;
use sse_runtime::{
    CancellationToken, Manager, subscription::EndReason, subscription::SubscribeError,
};
use tokio::sync::Barrier;

#[tokio::test]
async fn publish_to_an_unknown_topic_is_a_no_op_that_creates_nothing() {
    let manager = Manager::new();
    manager.publish("nobody", &serde_json::json!({"x": 1}));
    let stats = manager.stats();
    assert_eq!(
        (stats.topics, stats.subscribers, stats.published),
        (0, 0, 0)
    );
    assert!(manager.topics().is_empty());
}

#[tokio::test]
async fn subscribe_creates_the_broadcaster() {
    let manager = Manager::new();
    let sub = manager.subscribe("alarms").unwrap();
    assert_eq!(sub.topic(), "alarms");
    let topics = manager.topics();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].name, "alarms");
    assert_eq!(topics[0].subscribers, 1);
    assert_eq!(manager.subscriber_count("alarms"), 1);
}

#[tokio::test]
async fn publish_reaches_the_subscriber_with_id_and_data() {
    let manager = Manager::new();
    let mut sub = manager.subscribe("alarms").unwrap();
    manager.publish("alarms", &serde_json::json!({"device": "pump", "level": 3}));
    let events = next_events(&mut sub).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].json(),
        serde_json::json!({"device": "pump", "level": 3})
    );
    assert_eq!(events[0].sequence(), 1);
    assert_eq!(events[0].event, None);
    assert_eq!(manager.stats().published, 1);
}

#[tokio::test]
async fn named_events_carry_the_event_field() {
    let manager = Manager::new();
    let mut sub = manager.subscribe("alarms").unwrap();
    manager.publish_event("alarms", Some("alarm"), &1);
    let events = next_events(&mut sub).await;
    assert_eq!(events[0].event.as_deref(), Some("alarm"));
}

#[tokio::test]
async fn raw_data_is_sent_line_by_line() {
    let manager = Manager::new();
    let mut sub = manager.subscribe("t").unwrap();
    manager.publish_raw("t", None, "line one\nline two");
    assert_eq!(next_events(&mut sub).await[0].data, "line one\nline two");
}

#[tokio::test]
async fn ids_increase_by_one_per_event_of_a_topic() {
    let manager = Manager::new();
    let mut sub = manager.subscribe("t").unwrap();
    for i in 0..5 {
        manager.publish("t", &i);
    }
    let events = take_events(&mut sub, 5).await;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence()).collect();
    assert_eq!(sequences, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn last_unsubscribe_removes_the_broadcaster_at_once() {
    let manager = Manager::new();
    let sub = manager.subscribe("t").unwrap();
    drop(sub);
    // Synchronous: no await between the drop and the check.
    assert_eq!(manager.stats().topics, 0);
    assert_eq!(manager.stats().subscribers, 0);
    assert_eq!(manager.subscriber_count("t"), 0);
}

#[tokio::test]
async fn two_subscribers_share_one_broadcaster() {
    let manager = Manager::new();
    let mut a = manager.subscribe("t").unwrap();
    let mut b = manager.subscribe("t").unwrap();
    assert_eq!(manager.stats().topics, 1);
    assert_eq!(manager.subscriber_count("t"), 2);
    manager.publish("t", &"hello");
    let (ea, eb) = (next_events(&mut a).await, next_events(&mut b).await);
    assert_eq!(ea, eb, "same event, same id");
    drop(a);
    assert_eq!(manager.stats().topics, 1, "b still subscribed");
    manager.publish("t", &"still here");
    assert_eq!(next_events(&mut b).await[0].data, "\"still here\"");
}

#[tokio::test]
async fn without_retention_a_fresh_broadcaster_after_cleanup_has_a_new_epoch() {
    let manager = Manager::builder()
        .retention(Duration::ZERO)
        .build()
        .unwrap();
    let mut first = manager.subscribe("t").unwrap();
    manager.publish("t", &1);
    let old = next_events(&mut first).await.remove(0);
    drop(first);
    assert_eq!(manager.stats().retained, 0);
    let mut second = manager.subscribe("t").unwrap();
    manager.publish("t", &2);
    let new = next_events(&mut second).await.remove(0);
    assert_eq!(
        new.data, "2",
        "nothing of the old broadcaster leaks into the new one"
    );
    let old_id: sse_runtime::event_id::EventId = old.id.unwrap().parse().unwrap();
    let new_id: sse_runtime::event_id::EventId = new.id.unwrap().parse().unwrap();
    assert_eq!(new_id.sequence(), 1);
    assert_ne!(old_id.epoch(), new_id.epoch());
}

#[tokio::test]
async fn within_retention_a_new_broadcaster_continues_the_history() {
    let manager = Manager::new(); // default retention: 30 s
    let mut first = manager.subscribe("t").unwrap();
    manager.publish("t", &1);
    let old = next_events(&mut first).await.remove(0);
    drop(first);
    let stats = manager.stats();
    assert_eq!(
        (stats.topics, stats.retained),
        (0, 1),
        "the broadcaster is gone, its history kept"
    );
    assert!(stats.retained_bytes > 0);
    let mut second = manager.subscribe("t").unwrap();
    assert_eq!(
        manager.stats().retained,
        0,
        "taken over by the new broadcaster"
    );
    manager.publish("t", &2);
    let new = next_events(&mut second).await.remove(0);
    assert_eq!(
        new.data, "2",
        "a live subscriber starts with the next event"
    );
    let old_id: sse_runtime::event_id::EventId = old.id.unwrap().parse().unwrap();
    let new_id: sse_runtime::event_id::EventId = new.id.unwrap().parse().unwrap();
    assert_eq!(
        (new_id.epoch(), new_id.sequence()),
        (old_id.epoch(), 2),
        "ids go on"
    );
}

#[tokio::test(start_paused = true)]
async fn retained_history_expires_after_the_retention_time() {
    let manager = Manager::builder()
        .retention(Duration::from_secs(5))
        .build()
        .unwrap();
    let sub = manager.subscribe("t").unwrap();
    manager.publish("t", &1);
    drop(sub);
    tokio::time::sleep(Duration::from_secs(6)).await; // virtual time
    let mut again = manager.subscribe("t").unwrap();
    manager.publish("t", &2);
    assert_eq!(
        next_events(&mut again).await[0].sequence(),
        1,
        "a new history"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_subscribes_make_exactly_one_broadcaster() {
    for round in 0..50 {
        let manager = Manager::new();
        let barrier = Arc::new(Barrier::new(64));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (manager, barrier) = (manager.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    manager.subscribe("shared").unwrap()
                })
            })
            .collect();
        let mut subs = Vec::new();
        for task in tasks {
            subs.push(task.await.unwrap());
        }
        assert_eq!(manager.stats().topics, 1, "round {round}");
        assert_eq!(manager.subscriber_count("shared"), 64, "round {round}");
        manager.publish("shared", &round);
        for sub in &mut subs {
            assert_eq!(
                next_events(sub).await[0].data,
                round.to_string(),
                "nobody orphaned"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_racing_subscribe_unsubscribe_churn_and_the_final_unsubscribe() {
    let manager = Manager::new();
    let publishing = CancellationToken::new();
    let publisher = {
        let (manager, stop) = (manager.clone(), publishing.clone());
        tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.is_cancelled() {
                manager.publish("churn", &sent);
                sent += 1;
                tokio::task::yield_now().await;
            }
            sent
        })
    };
    let churners: Vec<_> = (0..32)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    let mut sub = manager.subscribe("churn").unwrap();
                    // Whatever arrives is in order and gapless.
                    if let Ok(Some(chunk)) =
                        tokio::time::timeout(Duration::from_millis(1), sub.recv()).await
                    {
                        let seqs: Vec<u64> =
                            common::parse(&chunk).iter().map(|e| e.sequence()).collect();
                        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
                    }
                    drop(sub);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for churner in churners {
        churner.await.unwrap();
    }
    publishing.cancel();
    assert!(publisher.await.unwrap() > 0);
    let stats = manager.stats();
    assert_eq!(
        (stats.topics, stats.subscribers),
        (0, 0),
        "final unsubscribe cleaned up"
    );
    manager.publish("churn", &"after the end");
    assert_eq!(manager.stats().topics, 0, "a late publish creates nothing");
}

#[tokio::test]
async fn shutdown_ends_every_subscription_and_refuses_new_ones() {
    let manager = Manager::new();
    let mut a = manager.subscribe("a").unwrap();
    let mut b = manager.subscribe("b").unwrap();
    manager.shutdown();
    assert_eq!(common::next_chunk(&mut a).await, None);
    assert_eq!(common::next_chunk(&mut b).await, None);
    assert_eq!(a.end_reason(), Some(EndReason::ShutDown));
    assert_eq!(manager.stats().subscribers, 0);
    assert_eq!(
        manager.subscribe("c").unwrap_err(),
        SubscribeError::ShutDown
    );
    assert!(manager.is_shut_down());
    manager.shutdown(); // idempotent
}

#[tokio::test]
async fn cancelling_the_parent_token_shuts_the_manager_down() {
    let parent = CancellationToken::new();
    let manager = Manager::builder()
        .cancellation_token(parent.clone())
        .build()
        .unwrap();
    let mut sub = manager.subscribe("t").unwrap();
    parent.cancel();
    assert_eq!(common::next_chunk(&mut sub).await, None);
    assert_eq!(sub.end_reason(), Some(EndReason::ShutDown));
}

#[tokio::test]
async fn shutting_the_manager_down_leaves_the_parent_token_alone() {
    let parent = CancellationToken::new();
    let manager = Manager::builder()
        .cancellation_token(parent.clone())
        .build()
        .unwrap();
    manager.shutdown();
    drop(manager);
    assert!(!parent.is_cancelled());
}

#[tokio::test]
async fn a_payload_that_fails_to_serialize_is_skipped_and_the_stream_goes_on() {
    let manager = Manager::new();
    let mut sub = manager.subscribe("t").unwrap();
    // JSON object keys must be strings: this map cannot be serialized.
    let bad: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
    manager.publish("t", &bad);
    assert_eq!(manager.stats().serialize_errors, 1);
    assert_nothing_pending(&mut sub).await;
    manager.publish("t", &"fine");
    let events = next_events(&mut sub).await;
    assert_eq!(events[0].data, "\"fine\"");
    assert_eq!(events[0].sequence(), 1, "the failed payload used no id");
}

#[tokio::test]
async fn invalid_heartbeat_is_rejected() {
    for bad in [Duration::ZERO, Duration::from_micros(999)] {
        let error = Manager::builder().heartbeat(bad).build().unwrap_err();
        assert!(
            error.to_string().contains("heartbeat must be at least 1ms"),
            "{error}"
        );
    }
    let manager = Manager::builder()
        .heartbeat(Duration::from_millis(1))
        .build()
        .unwrap();
    assert_eq!(manager.heartbeat(), Duration::from_millis(1));
    assert_eq!(Manager::new().heartbeat(), Duration::from_secs(30));
}

#[tokio::test]
async fn zero_lag_limit_is_rejected() {
    assert!(Manager::builder().max_lag(0).build().is_err());
    assert!(Manager::builder().max_lag_bytes(0).build().is_err());
}

#[tokio::test]
async fn introspection_reports_topics_subscribers_and_last_ids() {
    #[derive(Serialize)]
    struct Reading {
        value: f64,
    }
    let manager = Manager::new();
    let _a1 = manager.subscribe("a").unwrap();
    let _a2 = manager.subscribe("a").unwrap();
    let _b = manager.subscribe("b").unwrap();
    manager.publish("a", &Reading { value: 1.5 });
    let topics = manager.topics();
    assert_eq!(
        topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(topics[0].subscribers, 2);
    assert_eq!(topics[0].last_event_id.unwrap().sequence(), 1);
    assert_eq!(topics[1].last_event_id, None);
    assert!(!topics[0].polled);
    let stats = manager.stats();
    assert_eq!((stats.topics, stats.subscribers, stats.pollers), (2, 3, 0));
    let json = serde_json::to_value(&topics[0]).unwrap();
    assert_eq!(json["subscribers"], 2);
    assert!(json["last_event_id"].as_str().unwrap().ends_with("-1"));
}

#[tokio::test]
async fn wait_until_wakes_on_lifecycle_changes() {
    let manager = Manager::new();
    let waiter = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.wait_until(|s| s.subscribers == 3).await })
    };
    let subs: Vec<_> = (0..3)
        .map(|i| manager.subscribe(&i.to_string()).unwrap())
        .collect();
    assert_eq!(waiter.await.unwrap().topics, 3);
    drop(subs);
}

/// Counts how often it is serialized.
struct Counted<'a>(&'a std::sync::atomic::AtomicUsize);

impl Serialize for Counted<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        serializer.serialize_str("counted")
    }
}

#[tokio::test]
async fn a_payload_is_serialized_once_whatever_the_number_of_subscribers() {
    let serialized = std::sync::atomic::AtomicUsize::new(0);
    let manager = Manager::new();
    manager.publish("t", &Counted(&serialized));
    assert_eq!(
        serialized.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nobody subscribed: not even serialized"
    );
    let mut subs: Vec<_> = (0..1000).map(|_| manager.subscribe("t").unwrap()).collect();
    manager.publish("t", &Counted(&serialized));
    assert_eq!(serialized.load(std::sync::atomic::Ordering::SeqCst), 1);
    let first = common::next_chunk(&mut subs[0]).await.unwrap();
    for sub in &mut subs[1..] {
        let chunk = common::next_chunk(sub).await.unwrap();
        assert_eq!(
            chunk.as_ptr(),
            first.as_ptr(),
            "every subscriber shares one encoded frame"
        );
    }
}
