//! Event ids and resume: a client that reconnects with `Last-Event-ID` gets exactly what it
//! missed, in order, once; an id that cannot be resumed from gets an explicit `reset` event;
//! slow clients are disconnected and resume, and memory stays bounded whatever clients do.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use sse_integration_tests::faults::{
    assert_followed_everything, cut_until_done, follow, publish_paced,
};
use sse_integration_tests::{
    CuttableListener, CuttingProxy, PATIENCE, SseClient, TestServer, data_of, frames,
};
use sse_runtime::{Manager, SseHandler, event_id::EventId, subscription::SubscribeOptions};

fn feed(manager: &Manager) -> Router {
    Router::new().route("/feed", get(SseHandler::new(manager).topic("feed")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_gets_every_event_exactly_once_while_connections_are_cut() {
    fault_injection(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_under_sse_runtime_serve() {
    fault_injection(true).await;
}

/// 100 clients follow 10 000 events while a random 10 % of connections is cut every 100 ms.
async fn fault_injection(direct: bool) {
    const CLIENTS: usize = 100;
    const EVENTS: usize = 10_000;
    let manager = Manager::builder().history(EVENTS).build().unwrap();
    let _anchor = manager.subscribe("feed").unwrap(); // the topic outlives any one client
    let (listener, cutter) = CuttableListener::bind(0x5eed).await;
    let server = if direct {
        TestServer::serve_direct(listener, feed(&manager))
    } else {
        TestServer::serve(listener, feed(&manager))
    };

    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(follow(vec![server.url("/feed")], EVENTS, i as u64)))
        .collect();
    manager.wait_until(|s| s.subscribers == CLIENTS + 1).await;

    let publisher = publish_paced(manager.clone(), "feed", EVENTS);
    let cuts = cut_until_done(&[cutter], &clients).await;
    publisher.await.unwrap();
    let reconnects = assert_followed_everything(clients, EVENTS).await;
    eprintln!(
        "{CLIENTS} clients x {EVENTS} events: {cuts} connections cut, {reconnects} reconnects"
    );
    assert!(
        cuts >= 10 && reconnects >= 10,
        "the run was disturbed: {cuts} cuts, {reconnects} reconnects"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_published_during_the_replay_are_neither_lost_nor_duplicated() {
    for round in 0..50 {
        let manager = Manager::builder()
            .history(10_000)
            .max_lag(10_000)
            .build()
            .unwrap();
        let mut first = manager.subscribe("t").unwrap();
        manager.publish("t", &0);
        let chunk = first.recv().await.unwrap();
        let last = frames(&chunk)[0].id.clone().unwrap();
        let _anchor = manager.subscribe("t").unwrap();
        drop(first);
        for value in 1..=500 {
            manager.publish("t", &value);
        }
        // Replay of 500 and live publishing of 1 000 more race each other.
        let publisher = tokio::spawn({
            let manager = manager.clone();
            async move {
                for value in 501..=1500 {
                    manager.publish("t", &value);
                    if value % 100 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
        let mut resumed = manager
            .subscribe_with("t", SubscribeOptions::new().last_event_id(&last))
            .unwrap();
        let mut values = Vec::new();
        while values.len() < 1500 {
            let chunk = tokio::time::timeout(PATIENCE, resumed.recv())
                .await
                .unwrap()
                .unwrap();
            values.extend(data_of(&chunk).iter().map(|v| v.parse::<u32>().unwrap()));
        }
        publisher.await.unwrap();
        assert_eq!(values, (1..=1500).collect::<Vec<_>>(), "round {round}");
    }
}

#[tokio::test]
async fn a_lagging_subscriber_is_disconnected_counted_and_resumes_without_loss() {
    let manager = Manager::builder()
        .max_lag(10)
        .history(1000)
        .build()
        .unwrap();
    let mut slow = manager.subscribe("t").unwrap();
    let _anchor = manager.subscribe("t").unwrap();
    manager.publish("t", &1);
    let chunk = slow.recv().await.unwrap();
    let last = frames(&chunk)[0].id.clone().unwrap();
    for value in 2..=50 {
        manager.publish("t", &value);
    }
    assert_eq!(
        slow.recv().await,
        None,
        "49 behind with a limit of 10: disconnected"
    );
    assert_eq!(manager.stats().lagged, 1);
    drop(slow);
    let mut again = manager
        .subscribe_with("t", SubscribeOptions::new().last_event_id(&last))
        .unwrap();
    let chunk = again.recv().await.unwrap();
    let values: Vec<u32> = data_of(&chunk).iter().map(|v| v.parse().unwrap()).collect();
    assert_eq!(
        values,
        (2..=50).collect::<Vec<_>>(),
        "a resumed backlog is not held against it"
    );
}

/// Connects with a raw `Last-Event-ID` header value and returns the first event.
async fn first_event_with(server: &TestServer, last_event_id: &[u8]) -> eventsource_stream::Event {
    let value = reqwest::header::HeaderValue::from_bytes(last_event_id).unwrap();
    let response = reqwest::Client::new()
        .get(server.url("/feed"))
        .header("last-event-id", value)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "never a 4xx/5xx for a bad id: {last_event_id:?}"
    );
    let mut events = response.bytes_stream().eventsource();
    tokio::time::timeout(PATIENCE, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

fn reset_reason(event: &eventsource_stream::Event) -> String {
    assert_eq!(event.event, "reset", "{event:?}");
    let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    data["reason"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn ids_that_cannot_be_resumed_from_get_a_reset_event_naming_the_reason() {
    let manager = Manager::builder().history(10).build().unwrap();
    let server = TestServer::start(feed(&manager), Duration::from_secs(30)).await;
    let mut watcher = SseClient::connect(&server.url("/feed")).await;
    manager.publish("feed", &0);
    let first_id: EventId = watcher.event().await.id.parse().unwrap();
    for value in 1..=50 {
        manager.publish("feed", &value);
    }
    let epoch = first_id.epoch();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (format!("{epoch:x}-1").into_bytes(), "history-exceeded"),
        (
            // A second before this process numbered anything: an earlier process's id.
            format!("{:x}-45", epoch - 1_000_000).into_bytes(),
            "unknown-epoch",
        ),
        (format!("{epoch:x}-999").into_bytes(), "unknown-sequence"),
        (b"".to_vec(), "malformed-last-event-id"),
        (b"-1".to_vec(), "malformed-last-event-id"),
        (
            format!("{epoch:x}--1").into_bytes(),
            "malformed-last-event-id",
        ),
        (
            b"99999999999999999999999999-99999999999999999999999999".to_vec(),
            "malformed-last-event-id",
        ),
        ("é-1".as_bytes().to_vec(), "malformed-last-event-id"),
        (b"42".to_vec(), "malformed-last-event-id"),
    ];
    for (id, reason) in cases {
        let event = first_event_with(&server, &id).await;
        assert_eq!(
            reset_reason(&event),
            reason,
            "for {:?}",
            String::from_utf8_lossy(&id)
        );
        let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data["continueFrom"], format!("{epoch:x}-52"));
        assert_eq!(
            event.id,
            format!("{epoch:x}-51"),
            "a reconnect after the reset resumes from here"
        );
    }
    // A reset client continues live with the next event.
    let mut reset = SseClient::connect_with(&server.url("/feed"), Some("garbage")).await;
    assert_eq!(reset.event().await.event, "reset");
    manager.publish("feed", &"next");
    assert_eq!(reset.event().await.data, "\"next\"");
}

#[tokio::test]
async fn the_query_parameter_resumes_clients_that_cannot_set_headers() {
    let manager = Manager::new();
    let app = Router::new().route("/feed", get(SseHandler::new(&manager)));
    let server = TestServer::start(app, Duration::from_secs(30)).await;
    let mut first = SseClient::connect(&server.url("/feed?room=1")).await;
    manager.publish("/feed?room=1", &1);
    let id = first.event().await.id;
    drop(first);
    manager.wait_until(|s| s.subscribers == 0).await;
    manager.publish("/feed?room=1", &"kept by retention");
    let mut again =
        SseClient::connect(&server.url(&format!("/feed?room=1&last_event_id={id}"))).await;
    assert_eq!(
        manager.topics()[0].name,
        "/feed?room=1",
        "the parameter is not part of the topic"
    );
    manager.publish("/feed?room=1", &2);
    assert_eq!(
        again.event().await.data,
        "\"kept by retention\"",
        "resumed right after 1"
    );
    assert_eq!(again.event().await.data, "2");
}

/// The histories of emptied topics go when their retention time has passed, on a timer: not
/// only when somebody subscribes again (a client that made thousands of topics and left would
/// otherwise leave their histories in memory until the next subscribe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_histories_expire_on_a_timer_without_further_activity() {
    const TOPICS: usize = 20;
    let manager = Manager::builder()
        .retention(Duration::from_millis(300))
        .build()
        .unwrap();
    let app = Router::new().route("/t/{name}", get(SseHandler::new(&manager)));
    let server = TestServer::start(app, PATIENCE).await;
    let mut clients = Vec::new();
    for n in 0..TOPICS {
        clients.push(SseClient::connect(&server.url(&format!("/t/{n}"))).await);
    }
    for n in 0..TOPICS {
        manager.publish(&format!("/t/{n}"), &n);
    }
    for client in &mut clients {
        client.event().await;
    }
    drop(clients);
    let stats = tokio::time::timeout(PATIENCE, manager.wait_until(|s| s.topics == 0))
        .await
        .expect("every topic emptied");
    assert_eq!(stats.retained, TOPICS, "each history is kept for a while");
    assert!(stats.retained_bytes > 0);

    // Nothing else happens: no subscribe, no publish.
    let stats = tokio::time::timeout(PATIENCE, manager.wait_until(|s| s.retained == 0))
        .await
        .expect("the histories are swept once their retention time has passed");
    assert_eq!(stats.retained_bytes, 0);
}

/// Stress for the sweeper's hand-off: topics emptied while the sweeper is finding none left
/// and ending must still be swept (the sweeper clears its flag under the registry lock, and
/// the emptying side checks it under the same lock). 2 000 rounds on 4 tasks, then nothing
/// may remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_retained_while_the_sweeper_ends_are_still_swept() {
    let manager = Manager::builder()
        .retention(Duration::from_millis(1))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for task in 0..4 {
        let manager = manager.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..500 {
                let topic = format!("t{task}-{}", round % 7);
                let subscription = manager.subscribe(&topic).unwrap();
                manager.publish(&topic, &round);
                drop(subscription);
                if round % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = tokio::time::timeout(PATIENCE, manager.wait_until(|s| s.retained == 0))
        .await
        .expect("every retained history is swept in the end");
    assert_eq!((stats.topics, stats.retained_bytes), (0, 0));
}

#[tokio::test]
async fn a_page_reload_within_the_retention_time_resumes() {
    let manager = Manager::new();
    let server = TestServer::start(feed(&manager), Duration::from_secs(30)).await;
    let mut page = SseClient::connect(&server.url("/feed")).await;
    manager.publish("feed", &1);
    let id = page.event().await.id;
    drop(page);
    manager
        .wait_until(|s| s.topics == 0 && s.retained == 1)
        .await;
    // Published while no page was open: recorded in the retained history.
    manager.publish("feed", &2);
    let mut reloaded = SseClient::connect_with(&server.url("/feed"), Some(&id)).await;
    manager.publish("feed", &3);
    for expected in [2, 3] {
        let event = reloaded.event().await;
        assert_eq!(event.data, expected.to_string());
        assert_eq!(event.id.parse::<EventId>().unwrap().sequence(), expected);
    }
}

#[tokio::test]
async fn change_detection_keeps_duplicates_out_of_the_history() {
    let manager = Manager::new();
    let mut sub = manager
        .subscribe_with("t", SubscribeOptions::new().change_detection(true))
        .unwrap();
    for value in ["a", "a", "b", "b", "c"] {
        manager.publish("t", &value);
    }
    let first = frames(&sub.recv().await.unwrap());
    assert_eq!(first.len(), 3, "a, b, c: {first:?}");
    let first_id = first[0].id.clone().unwrap();
    let mut resumed = manager
        .subscribe_with("t", SubscribeOptions::new().last_event_id(&first_id))
        .unwrap();
    let data = data_of(&resumed.recv().await.unwrap());
    assert_eq!(
        data,
        ["\"b\"", "\"c\""],
        "the replay is what live subscribers saw"
    );
}

/// The only subscriber of a topic is cut off by a proxy, events are published while it is away,
/// and it reconnects through the proxy with its last id, as every SSE client does. Spec: a topic
/// whose history is retained keeps recording publishes while nobody is subscribed, so the
/// returning client gets exactly what it missed, with ids that leave no gap; when its history
/// cannot cover the gap the client gets a `reset`, never consecutive ids over missing events.
async fn the_only_subscriber_is_cut_off(direct: bool, manager: Manager) -> Vec<(String, String)> {
    let server = if direct {
        TestServer::start_direct(feed(&manager), Duration::from_secs(30)).await
    } else {
        TestServer::start(feed(&manager), Duration::from_secs(30)).await
    };
    let proxy = CuttingProxy::start(server.addr).await;
    let mut seen = Vec::new();

    let mut client = SseClient::connect(&proxy.url("/feed")).await;
    for value in 1..=5 {
        manager.publish("feed", &value);
    }
    for _ in 1..=5 {
        let event = client.event().await;
        seen.push((event.id, event.data));
    }
    assert_eq!(proxy.cut_all(), 1);
    client.until_dropped().await;
    manager.wait_until(|s| s.subscribers == 0).await;

    for value in 6..=10 {
        manager.publish("feed", &value);
    }
    let last_id = seen.last().unwrap().0.clone();
    let mut client = SseClient::connect_with(&proxy.url("/feed"), Some(&last_id)).await;
    manager.wait_until(|s| s.subscribers == 1).await;
    for value in 11..=15 {
        manager.publish("feed", &value);
    }
    loop {
        let event = client.event().await;
        let done = event.data == "15";
        let what = match event.event.as_str() {
            "message" => event.data,
            other => format!("{other}{}", event.data),
        };
        seen.push((event.id, what));
        if done {
            return seen;
        }
    }
}

/// Asserts that `seen` holds the values 1..=15 in order with consecutive sequence numbers.
fn assert_complete(seen: &[(String, String)]) {
    let values: Vec<&str> = seen.iter().map(|(_, data)| data.as_str()).collect();
    let expected: Vec<String> = (1..=15).map(|v| v.to_string()).collect();
    assert_eq!(values, expected, "every event, in order, once");
    for (n, (id, _)) in seen.iter().enumerate() {
        let id: EventId = id.parse().unwrap();
        assert_eq!(id.sequence(), n as u64 + 1, "ids follow the events");
    }
}

#[tokio::test]
async fn the_only_subscriber_reconnecting_through_a_cutting_proxy_gets_what_it_missed() {
    assert_complete(&the_only_subscriber_is_cut_off(false, Manager::new()).await);
}

#[tokio::test]
async fn the_same_under_sse_runtime_serve_gets_what_it_missed() {
    assert_complete(&the_only_subscriber_is_cut_off(true, Manager::new()).await);
}

#[tokio::test]
async fn missing_more_than_the_history_holds_is_a_reset_not_a_silent_gap() {
    let manager = Manager::builder().history(3).build().unwrap();
    let seen = the_only_subscriber_is_cut_off(true, manager).await;
    let after: Vec<&str> = seen[5..].iter().map(|(_, data)| data.as_str()).collect();
    assert!(
        after[0].starts_with("reset{\"reason\":\"history-exceeded\""),
        "{after:?}"
    );
    // The history kept the newest three of the five missed events; the reset says where the
    // client continues from, and its id is not mistaken for the missed events.
    let reset_id: EventId = seen[5].0.parse().unwrap();
    assert_eq!(
        reset_id.sequence(),
        10,
        "the reset's id is the newest event's"
    );
    assert_eq!(&after[1..], ["11", "12", "13", "14", "15"]);
}

#[tokio::test]
async fn without_retention_the_returning_client_is_told_the_topic_started_over() {
    let manager = Manager::builder()
        .retention(Duration::ZERO)
        .build()
        .unwrap();
    let seen = the_only_subscriber_is_cut_off(false, manager.clone()).await;
    let after: Vec<&str> = seen[5..].iter().map(|(_, data)| data.as_str()).collect();
    assert!(
        after[0].starts_with("reset{\"reason\":\"history-expired\""),
        "this server numbered the id, and its history went with the last subscriber: {after:?}"
    );
    assert_eq!(&after[1..], ["11", "12", "13", "14", "15"]);
    assert_eq!(
        manager.stats().published,
        10,
        "publishing to a topic with neither subscribers nor history is a no-op"
    );
}

// Lossless from the first byte (issue 32, part 1). Spec: every stream tells its client where it
// is when it opens: a live start sends the topic's position as an `id:`-only frame (the client
// keeps it as its last event id and dispatches nothing; `<epoch>-0` before the topic's first
// event), a reset's own id is that position. A topic keeps its position through the retention
// time even if it never sent anything, so a client cut before its first event resumes from
// there and gets exactly what was published meanwhile, or a `reset` once the position is gone.
// Never a silent gap.

/// The only subscriber of a quiet topic is cut before any event, two events are published while
/// it is away, and it reconnects with the last event id its stream gave it.
/// Returns the position, the reconnected client, and the server and proxy it goes through.
async fn cut_before_the_first_event(
    direct: bool,
    manager: &Manager,
) -> (String, SseClient, (TestServer, CuttingProxy)) {
    let server = if direct {
        TestServer::start_direct(feed(manager), Duration::from_secs(30)).await
    } else {
        TestServer::start(feed(manager), Duration::from_secs(30)).await
    };
    let proxy = CuttingProxy::start(server.addr).await;
    let mut client = SseClient::connect(&proxy.url("/feed")).await;
    let (position, events) = client.position().await;
    assert!(
        events.is_empty(),
        "the position dispatches no event: {events:?}"
    );
    assert_eq!(
        position.parse::<EventId>().unwrap().sequence(),
        0,
        "before the topic's first event: {position}"
    );
    assert_eq!(proxy.cut_all(), 1);
    client.until_dropped().await;
    manager
        .wait_until(|s| s.subscribers == 0 && s.topics == 0)
        .await;
    manager.publish("feed", &1);
    manager.publish("feed", &2);
    let resumed = SseClient::connect_with(&proxy.url("/feed"), Some(&position)).await;
    (position, resumed, (server, proxy))
}

async fn a_sole_subscriber_cut_before_the_first_event_gets_what_was_published(direct: bool) {
    let manager = Manager::new();
    let (position, mut client, _server) = cut_before_the_first_event(direct, &manager).await;
    let epoch = position.parse::<EventId>().unwrap().epoch();
    for expected in [1, 2] {
        let event = client.event().await;
        assert_eq!(
            (event.event.as_str(), event.data),
            ("message", expected.to_string())
        );
        let id: EventId = event.id.parse().unwrap();
        assert_eq!(
            (id.epoch(), id.sequence()),
            (epoch, expected),
            "resumed in the same epoch, nothing before"
        );
    }
}

#[tokio::test]
async fn a_sole_subscriber_cut_before_the_first_event_gets_what_was_published_meanwhile() {
    a_sole_subscriber_cut_before_the_first_event_gets_what_was_published(false).await;
}

#[tokio::test]
async fn the_same_under_sse_runtime_serve_before_the_first_event() {
    a_sole_subscriber_cut_before_the_first_event_gets_what_was_published(true).await;
}

#[tokio::test]
async fn a_position_before_the_first_event_that_outlived_its_retention_is_a_reset() {
    let manager = Manager::builder()
        .retention(Duration::ZERO)
        .build()
        .unwrap();
    let (_position, mut client, _server) = cut_before_the_first_event(true, &manager).await;
    let reset = client.event().await;
    assert_eq!(reset.event, "reset");
    assert_eq!(reset_reason(&reset), "history-expired");
    manager.publish("feed", &3);
    assert_eq!(client.event().await.data, "3");
}

#[tokio::test]
async fn a_live_start_tells_the_client_the_position_of_the_newest_event() {
    let manager = Manager::new();
    let _anchor = manager.subscribe("feed").unwrap();
    for value in 1..=3 {
        manager.publish("feed", &value);
    }
    let server = TestServer::start_direct(feed(&manager), Duration::from_secs(30)).await;
    let mut client = SseClient::connect(&server.url("/feed")).await;
    let (position, _) = client.position().await;
    assert_eq!(position.parse::<EventId>().unwrap().sequence(), 3);
    manager.publish("feed", &4);
    let event = client.event().await;
    assert_eq!(event.id.parse::<EventId>().unwrap().sequence(), 4);
}

/// A topic that detects changes carries states (a poller's): a newcomer, and a client whose id
/// could not be resumed from, get the newest state at once, under its original id, which is the
/// reset's `continueFrom`; the next different state follows, a duplicate never does.
#[tokio::test]
async fn a_newcomer_to_a_change_detecting_topic_gets_the_newest_state_at_once() {
    let manager = Manager::new();
    let mut anchor = manager
        .subscribe_with("feed", SubscribeOptions::new().change_detection(true))
        .unwrap();
    manager.publish("feed", &"a");
    manager.publish("feed", &"b");
    anchor.recv().await.unwrap();
    let server = TestServer::start_direct(feed(&manager), Duration::from_secs(30)).await;

    let mut newcomer = SseClient::connect(&server.url("/feed")).await;
    let newest = newcomer.event().await;
    assert_eq!(
        (
            newest.data.as_str(),
            newest.id.parse::<EventId>().unwrap().sequence()
        ),
        ("\"b\"", 2)
    );

    let mut reset = SseClient::connect_with(&server.url("/feed"), Some("nonsense")).await;
    let announced = reset.event().await;
    assert_eq!(announced.event, "reset");
    let continue_from: serde_json::Value = serde_json::from_str(&announced.data).unwrap();
    let next = reset.event().await;
    assert_eq!(
        (next.data.as_str(), next.id.as_str()),
        ("\"b\"", continue_from["continueFrom"].as_str().unwrap()),
        "the next event is the one the reset said the client continues from"
    );

    manager.publish("feed", &"b");
    manager.publish("feed", &"c");
    for client in [&mut newcomer, &mut reset] {
        let event = client.event().await;
        assert_eq!(
            (
                event.data.as_str(),
                event.id.parse::<EventId>().unwrap().sequence()
            ),
            ("\"c\"", 3),
            "the duplicate is skipped"
        );
    }
}
