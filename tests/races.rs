//! One regression test per race class (docs/ARCHITECTURE.md, "Race classes").
//! Concurrency classes run many iterations on a multi-threaded runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use parking_lot::Mutex;
use sse_integration_tests::{
    Frame, PATIENCE, RawClient, SseClient, TestServer, data_of, frames, sequences_of,
};
use sse_runtime::{
    Manager, PollError, SseHandler, polling::Polling, polling::PollingService, polling::Publisher,
    polling::StopFuture, polling::TopicPublisher, subscription::EndReason,
    subscription::SubscribeOptions,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::Barrier;

/// Every iteration of a stress loop must finish within this.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A manager whose pollers stop with their topic's last subscriber (no linger): the classes
/// below are about the broadcaster that goes at once.
/// Pollers stop with their last subscriber, and an emptied topic keeps no history: each round's
/// broadcaster starts afresh (a newcomer to a revived history of a polled topic would be given
/// its newest value, the previous poller's, before its own poller's first one).
fn without_linger() -> Manager {
    Manager::builder()
        .poller_linger(Duration::ZERO)
        .retention(Duration::ZERO)
        .build()
        .unwrap()
}

/// A poller that counts its starts and publishes `label` on every poll.
fn labelled(label: usize, starts: &Arc<AtomicUsize>) -> impl PollingService + use<> {
    let starts = starts.clone();
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    Polling::new(move |_| {
        if !started.swap(true, Ordering::SeqCst) {
            starts.fetch_add(1, Ordering::SeqCst);
        }
        async move { Ok::<_, PollError>(label) }
    })
    .interval(Duration::from_millis(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_01_the_poller_is_bound_to_the_broadcaster_its_subscriber_created() {
    let manager = without_linger();
    let starts = Arc::new(AtomicUsize::new(0));
    for round in 0..100 {
        // The creating subscriber's poller (label = round) runs; the joiner's (label 999) never.
        let mut creator = manager
            .subscribe_with(
                "t",
                SubscribeOptions::new().polling(labelled(round, &starts)),
            )
            .unwrap();
        let mut joiner = manager
            .subscribe_with("t", SubscribeOptions::new().polling(labelled(999, &starts)))
            .unwrap();
        for sub in [&mut creator, &mut joiner] {
            let chunk = within("first poll", sub.recv()).await.unwrap();
            assert_eq!(data_of(&chunk)[0], round.to_string(), "round {round}");
        }
        drop((creator, joiner));
        assert_eq!(manager.stats().topics, 0);
    }
    within("pollers stopped", manager.wait_until(|s| s.pollers == 0)).await;
    assert_eq!(
        starts.load(Ordering::SeqCst),
        100,
        "one poller per broadcaster, the new one's"
    );
}

#[tokio::test]
async fn race_02_the_topic_is_the_real_path_not_the_route_template() {
    let manager = Manager::new();
    let app = Router::new().route("/x/{id}", get(SseHandler::new(&manager)));
    let server = TestServer::start(app, Duration::from_secs(30)).await;
    let mut one = SseClient::connect(&server.url("/x/1")).await;
    let mut two = SseClient::connect(&server.url("/x/2")).await;
    assert_eq!(manager.stats().topics, 2, "resources do not share a topic");
    manager.publish("/x/1", &"for one");
    manager.publish("/x/2", &"for two");
    assert_eq!(one.event().await.data, "\"for one\"");
    assert_eq!(two.event().await.data, "\"for two\"");
    assert_eq!(manager.subscriber_count("/x/{id}"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_03_change_detection_state_under_concurrent_publish_and_subscribe() {
    for round in 0..20 {
        // Subscribers read only at the end: let them lag behind all 800 publishes.
        let manager = Manager::builder().max_lag(10_000).build().unwrap();
        let _anchor = manager
            .subscribe_with("t", SubscribeOptions::new().change_detection(true))
            .unwrap();
        let barrier = Arc::new(Barrier::new(8));
        let publishers: Vec<_> = (0..4)
            .map(|p| {
                let (manager, barrier) = (manager.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    for i in 0..200 {
                        manager.publish("t", &((i + p) % 3));
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let subscribers: Vec<_> = (0..4)
            .map(|_| {
                let (manager, barrier) = (manager.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    manager.subscribe("t").unwrap()
                })
            })
            .collect();
        for p in publishers {
            p.await.unwrap();
        }
        let mut subs = Vec::new();
        for s in subscribers {
            subs.push(s.await.unwrap());
        }
        manager.publish("t", &"end");
        manager.publish("t", &"end"); // a duplicate: owed only to those with nothing yet
        for sub in &mut subs {
            let (mut ids, mut data) = (Vec::new(), Vec::new());
            while data.last().map(String::as_str) != Some("\"end\"") {
                let chunk = within("end marker", sub.recv()).await.unwrap();
                ids.extend(sequences_of(&chunk));
                data.extend(data_of(&chunk));
            }
            assert!(
                ids.windows(2).all(|w| w[1] == w[0] + 1),
                "round {round}: contiguous {ids:?}"
            );
            assert!(
                data.windows(2).all(|w| w[0] != w[1]),
                "round {round}: no repeat {data:?}"
            );
            let polled = futures_util::poll!(std::pin::pin!(sub.recv()));
            assert!(polled.is_pending(), "round {round}: \"end\" exactly once");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_04_counts_are_consistent_while_subscribers_churn() {
    let manager = Manager::new();
    let churn: Vec<_> = (0..8)
        .map(|t| {
            let manager = manager.clone();
            tokio::spawn(async move {
                for i in 0..300 {
                    let sub = manager
                        .subscribe(&format!("topic-{}", (t + i) % 4))
                        .unwrap();
                    tokio::task::yield_now().await;
                    drop(sub);
                }
            })
        })
        .collect();
    let mut observed = 0;
    while !churn.iter().all(|t| t.is_finished()) {
        for topic in manager.topics() {
            assert!(
                topic.subscribers >= 1,
                "a listed topic always has a subscriber: {topic:?}"
            );
        }
        let stats = manager.stats();
        assert!(
            stats.subscribers <= 8,
            "never more than the live subscriptions: {stats:?}"
        );
        observed += 1;
        tokio::task::yield_now().await;
    }
    for t in churn {
        t.await.unwrap();
    }
    assert!(observed > 0);
    let stats = manager.stats();
    assert_eq!((stats.topics, stats.subscribers), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_05_a_stalled_client_never_holds_up_the_others_and_is_dropped() {
    let deadline = Duration::from_millis(300);
    let manager = Manager::builder().heartbeat(deadline).build().unwrap();
    let app = Router::new().route("/t", get(SseHandler::new(&manager).topic("t")));
    let server = TestServer::start(app, deadline).await;
    let stalled = sse_integration_tests::stalled_client(server.addr, "/t").await;
    let mut fast = SseClient::connect(&server.url("/t")).await;
    within(
        "both subscribed",
        manager.wait_until(|s| s.subscribers == 2),
    )
    .await;
    // Each event is awaited by the fast client before the next is published: the pace is the
    // fast client's, and it never waits for the stalled one (12.5 MiB in all, far more than
    // the stalled connection's socket buffers).
    let payload = "x".repeat(32 * 1024);
    for i in 0..400 {
        manager.publish("t", &(i, &payload));
        let (n, _): (u32, String) = serde_json::from_str(&fast.event().await.data).unwrap();
        assert_eq!(n, i, "every event, in order");
    }
    // hyper never polls the stalled stream again (its socket is full): only the write
    // deadline can end it. Without WriteDeadline this wait times out.
    let stats = within(
        "stalled client dropped",
        manager.wait_until(|s| s.subscribers == 1),
    )
    .await;
    assert_eq!(stats.topics, 1, "the fast client stays subscribed");
    drop(stalled);
}

#[tokio::test]
async fn race_06_a_write_error_after_the_stream_started_ends_it_quietly() {
    let manager = Manager::new();
    let app = Router::new().route("/t", get(SseHandler::new(&manager).topic("t")));
    let server = TestServer::start(app, Duration::from_secs(30)).await;
    let mut raw = RawClient::get(server.addr, "/t").await;
    assert!(raw.head.starts_with("HTTP/1.1 200"));
    raw.read_until_contains(b"\n\n").await;
    raw.reader.get_mut().shutdown().await.unwrap();
    drop(raw);
    for i in 0..100 {
        manager.publish("t", &i);
    }
    let stats = within("released", manager.wait_until(|s| s.subscribers == 0)).await;
    assert_eq!(stats.topics, 0);
    let mut next = SseClient::connect(&server.url("/t")).await;
    assert_eq!(next.status, 200, "the server is unharmed");
    manager.publish("t", &"after");
    assert_eq!(next.event().await.data, "\"after\"");
}

#[tokio::test(start_paused = true)]
async fn race_07_poll_errors_are_published_and_the_first_poll_does_not_wait() {
    let manager = Manager::new();
    let started = tokio::time::Instant::now();
    let polling = Polling::new(|_| async {
        Err::<(), _>(PollError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "down",
        ))
    });
    let mut sub = manager
        .subscribe_with("t", SubscribeOptions::new().polling(polling))
        .unwrap();
    let chunk = sub.recv().await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
    let payload: serde_json::Value = serde_json::from_str(&data_of(&chunk)[0]).unwrap();
    assert_eq!(payload["statusCode"], 503);
    assert_eq!(payload["message"], "down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_08_a_stop_condition_met_at_once_racing_the_stop() {
    let manager = without_linger();
    let stops = Arc::new(AtomicUsize::new(0));
    for round in 0..300u32 {
        let polling = Polling::new(|_| async { Ok::<_, PollError>(1) })
            .stop_when(|_: &i32| true)
            .on_stop({
                let stops = stops.clone();
                move || {
                    stops.fetch_add(1, Ordering::SeqCst);
                }
            });
        let sub = manager
            .subscribe_with("t", SubscribeOptions::new().polling(polling))
            .unwrap();
        if round.is_multiple_of(2) {
            tokio::task::yield_now().await; // sometimes let the first poll run first
        }
        drop(sub);
    }
    within("pollers stopped", manager.wait_until(|s| s.pollers == 0)).await;
    assert_eq!(
        stops.load(Ordering::SeqCst),
        300,
        "exactly once per start, whoever stopped it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_09_concurrent_find_or_create_makes_one_broadcaster_and_one_poller() {
    for round in 0..50 {
        let manager = Manager::new();
        let starts = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(32));
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let (manager, barrier, starts) = (manager.clone(), barrier.clone(), starts.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let polling = labelled(i, &starts);
                    manager
                        .subscribe_with("t", SubscribeOptions::new().polling(polling))
                        .unwrap()
                })
            })
            .collect();
        let mut subs = Vec::new();
        for t in tasks {
            subs.push(t.await.unwrap());
        }
        assert_eq!(manager.stats().topics, 1, "round {round}");
        assert_eq!(manager.stats().pollers, 1, "round {round}");
        let mut labels = Vec::new();
        for sub in &mut subs {
            labels.push(data_of(&within("poll result", sub.recv()).await.unwrap())[0].clone());
        }
        labels.dedup();
        assert_eq!(
            labels.len(),
            1,
            "every subscriber is fed by the same poller: {labels:?}"
        );
        assert_eq!(starts.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_10_cleanup_never_removes_a_broadcaster_a_new_subscriber_joined() {
    let manager = without_linger();
    let starts = Arc::new(AtomicUsize::new(0));
    for round in 0..200 {
        let mut sub = manager
            .subscribe_with(
                "t",
                SubscribeOptions::new().polling(labelled(round, &starts)),
            )
            .unwrap();
        // The previous broadcaster's poller may still be stopping in the background; this
        // subscriber's own poller must run and feed it.
        let chunk = within("own poller's event", sub.recv()).await.unwrap();
        assert_eq!(data_of(&chunk)[0], round.to_string());
        assert_eq!(manager.subscriber_count("t"), 1);
        drop(sub);
    }
    within(
        "pollers stopped",
        manager.wait_until(|s| s.pollers == 0 && s.topics == 0),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_11_publish_racing_the_final_unsubscribe() {
    let manager = Manager::new();
    let stop = sse_runtime::CancellationToken::new();
    let publishers: Vec<_> = (0..3)
        .map(|_| {
            let (manager, stop) = (manager.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.is_cancelled() {
                    manager.publish("t", &n);
                    n += 1;
                    if n.is_multiple_of(16) {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for _ in 0..2000 {
        let sub = manager.subscribe("t").unwrap();
        tokio::task::yield_now().await;
        drop(sub); // the final unsubscribe, while publishes are in flight
        assert_eq!(manager.subscriber_count("t"), 0);
    }
    stop.cancel();
    for p in publishers {
        p.await.unwrap();
    }
    assert_eq!(
        manager.stats().topics,
        0,
        "no publish revived the removed topic"
    );
}

/// A polling service that keeps the publisher it was given, to misuse it later.
#[derive(Clone, Default)]
struct Hoarder(Arc<Mutex<Option<TopicPublisher>>>);

impl PollingService for Hoarder {
    fn start(&self, publisher: TopicPublisher) {
        *self.0.lock() = Some(publisher);
    }
    fn stop(&self) -> StopFuture<'_> {
        Box::pin(async {})
    }
}

#[tokio::test]
async fn race_12_a_kept_publisher_cannot_reach_a_later_broadcaster() {
    let manager = without_linger();
    let hoarder = Hoarder::default();
    let sub = manager
        .subscribe_with("t", SubscribeOptions::new().polling(hoarder.clone()))
        .unwrap();
    let stale = hoarder.0.lock().clone().unwrap();
    assert!(!stale.is_closed());
    assert_eq!(stale.topic().as_deref(), Some("t"));
    drop(sub);
    assert!(stale.is_closed());
    let mut fresh = manager.subscribe("t").unwrap();
    stale.publish(&"from the old broadcaster's poller");
    manager.publish("t", &"current");
    let chunk = within("current event", fresh.recv()).await.unwrap();
    assert_eq!(data_of(&chunk), ["\"current\""]);
    assert_eq!(manager.stats().published, 1);
}

#[tokio::test]
async fn race_13_an_ended_subscription_is_never_unsubscribed_twice() {
    // Lagging ends a subscription (which unsubscribes it); its slot is reused by the next
    // subscriber; dropping the ended one later must not remove that one.
    let manager = Manager::builder().max_lag(2).history(0).build().unwrap();
    let _anchor = manager.subscribe("t").unwrap();
    let mut laggard = manager.subscribe("t").unwrap();
    for i in 0..5 {
        manager.publish("t", &i);
    }
    assert_eq!(laggard.recv().await, None);
    assert_eq!(laggard.end_reason(), Some(EndReason::Lagged));
    assert_eq!(manager.stats().lagged, 1);
    let mut reuser = manager.subscribe("t").unwrap();
    drop(laggard);
    assert_eq!(manager.subscriber_count("t"), 2);
    manager.publish("t", &"still subscribed");
    assert_eq!(
        data_of(&reuser.recv().await.unwrap()),
        ["\"still subscribed\""]
    );
    // Explicit unsubscribe then (implicit) drop: counted once.
    reuser.unsubscribe();
    assert_eq!(manager.stats().subscribers, 1);
    // Stopping a poller that was never started is harmless.
    Polling::new(|_| async { Ok::<_, PollError>(()) })
        .stop()
        .await;
}

/// The resume gap: a publisher runs while the only subscriber leaves and comes back. Spec:
/// every value published is either received before leaving or replayed after coming back, in
/// order, with consecutive ids: a publish that races the last unsubscribe lands in the retained
/// history, never nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_14_publishes_racing_the_last_unsubscribe_are_kept_for_the_returning_client() {
    let manager = Manager::new();
    for round in 0..300u64 {
        let topic = format!("t{round}");
        let mut sub = manager.subscribe(&topic).unwrap();
        manager.publish(&topic, &0u64);
        let publisher = tokio::spawn({
            let (manager, topic) = (manager.clone(), topic.clone());
            async move {
                for value in 1..=200u64 {
                    manager.publish(&topic, &value);
                    if value % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
        let mut seen: Vec<Frame> = Vec::new();
        while seen.len() as u64 <= round % 5 {
            let chunk = within("live events", sub.recv()).await.unwrap();
            seen.extend(frames(&chunk));
        }
        drop(sub);
        within("publisher", publisher).await.unwrap();
        let last = seen.last().unwrap().id.clone().unwrap();
        let mut back = manager
            .subscribe_with(&topic, SubscribeOptions::new().last_event_id(&last))
            .unwrap();
        while seen.last().unwrap().data != "200" {
            let chunk = within("replay", back.recv()).await.unwrap();
            seen.extend(frames(&chunk));
        }
        for (n, frame) in seen.iter().enumerate() {
            assert_eq!(
                (frame.sequence(), frame.data.as_str()),
                (n as u64 + 1, n.to_string().as_str()),
                "round {round}: no reset, no gap"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_15_a_lingering_topic_is_either_rejoined_or_removed_never_both() {
    // A linger of 1 ms, so its end races the joins of eight tasks that subscribe and leave
    // in a loop. A subscriber must never land on a topic the linger's end removes: each one
    // gets an event from a running poller. Every start is stopped; nothing is left.
    let manager = Manager::builder()
        .poller_linger(Duration::from_millis(1))
        .build()
        .unwrap();
    let starts = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let (manager, starts) = (manager.clone(), starts.clone());
            tokio::spawn(async move {
                for i in 0..100u32 {
                    let polling = labelled(task, &starts);
                    let mut sub = manager
                        .subscribe_with("t", SubscribeOptions::new().polling(polling))
                        .unwrap();
                    within("an event from the running poller", sub.recv())
                        .await
                        .expect("the topic is live");
                    if i.is_multiple_of(3) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    drop(sub);
                }
            })
        })
        .collect();
    for task in tasks {
        within("subscribe loop", task).await.unwrap();
    }
    let stats = within(
        "linger ends",
        manager.wait_until(|s| s.topics == 0 && s.pollers == 0),
    )
    .await;
    assert_eq!(stats.pollers_started, stats.pollers_stopped);
    assert!(stats.pollers_started >= 1);
    assert!(
        stats.pollers_started < 8 * 100,
        "lingering pollers were rejoined"
    );
}
