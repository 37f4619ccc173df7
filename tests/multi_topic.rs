//! Spec: several topics on one connection (issue 14).
//!
//! - `MultiHandler` on `GET /sse?topic=/sse/a&topic=/sse/b` subscribes to each topic through
//!   its own route (guard, poller, options as on their own) and streams them on one
//!   connection. Each event's type is the topic as named (`/sse/b#note` for an event named
//!   `note`); each id is a composite of every topic's position.
//! - A reconnect with the last composite id resumes every topic with nothing missed and
//!   nothing twice, including a topic the client had received nothing from, and a topic that
//!   had sent nothing at all (its entry is `<epoch>-0`). The stream starts with its position,
//!   an `id:`-only frame, so even a client cut before any event resumes every topic. An empty
//!   entry resets its topic. A reset's `continueFrom` is the topic's entry in the id of its
//!   next event.
//! - With `position=event` the position is an event of type `position` (its data and id the
//!   composite id) instead of an `id:`-only frame, so a client that keeps only the ids of
//!   dispatched events resumes a topic that has sent nothing; any other `position` is a `400`.
//! - A `Last-Event-ID` that is not a composite of these topics gets one `reset` per topic,
//!   then goes on live.
//! - A topic its route refuses refuses the whole request with that route's status, headers
//!   and reason (naming the topic), and keeps nothing subscribed. No topic, too many topics,
//!   a topic twice, a topic that is not a path, a route that serves no topic stream: `400`
//!   with a reason. `HEAD` subscribes to nothing.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use eventsource_stream::Event;
use sse_integration_tests::{SseClient, TestServer, has_key};
use sse_runtime::event_id::EventId;
use sse_runtime::multi::MultiHandler;
use sse_runtime::polling::Polling;
use sse_runtime::{Manager, PollError, SseHandler};

/// Three topic routes and a plain one, with the multi-topic route on `/sse`.
fn app(manager: &Manager) -> Router {
    let topics = Router::new()
        .route("/sse/a", get(SseHandler::new(manager).topic("a")))
        .route("/sse/b", get(SseHandler::new(manager).topic("b")))
        .route(
            "/sse/vault",
            get(SseHandler::new(manager).topic("vault").guard(has_key)),
        )
        .route(
            "/sse/ticks",
            get(SseHandler::new(manager).polling(|_| {
                Polling::new(|_| async { Ok::<_, PollError>("tick") })
                    .interval(Duration::from_secs(3600))
            })),
        )
        .route("/plain", get(|| async { "not a stream" }))
        .route("/sse/nested", get(MultiHandler::new(Router::new())));
    topics
        .clone()
        .route("/sse", get(MultiHandler::new(topics).max_topics(3)))
}

async fn start(manager: &Manager, direct: bool) -> TestServer {
    if direct {
        TestServer::start_direct(app(manager), Duration::from_secs(5)).await
    } else {
        TestServer::start(app(manager), Duration::from_secs(5)).await
    }
}

/// The sequence numbers of a composite id's entries (`None` for an empty entry).
fn sequences(id: &str) -> Vec<Option<u64>> {
    id.split('_')
        .map(|entry| {
            (!entry.is_empty()).then(|| entry.rsplit_once('-').unwrap().1.parse().unwrap())
        })
        .collect()
}

fn seen(event: &Event) -> (String, String, Vec<Option<u64>>) {
    (
        event.event.clone(),
        event.data.clone(),
        sequences(&event.id),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_names_its_topic_and_carries_every_topics_position() {
    for direct in [false, true] {
        let manager = Manager::new();
        let server = start(&manager, direct).await;
        let mut client = SseClient::connect(&server.url("/sse?topic=/sse/a&topic=/sse/b")).await;
        assert_eq!(client.status, 200);
        assert_eq!(client.headers["content-type"], "text/event-stream");
        manager.wait_until(|s| s.subscribers == 2).await;

        manager.publish("a", &"a1");
        let first = client.event().await;
        manager.publish_event("b", Some("note"), &"b1");
        let second = client.event().await;
        manager.publish("a", &"a2");
        let third = client.event().await;
        assert_eq!(
            [seen(&first), seen(&second), seen(&third)],
            [
                ("/sse/a".into(), "\"a1\"".into(), vec![Some(1), Some(0)]),
                (
                    "/sse/b#note".into(),
                    "\"b1\"".into(),
                    vec![Some(1), Some(1)]
                ),
                ("/sse/a".into(), "\"a2\"".into(), vec![Some(2), Some(1)]),
            ],
            "under {}",
            if direct { "serve" } else { "axum::serve" }
        );
        drop(client);
        manager.wait_until(|s| s.subscribers == 0).await;
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_the_last_composite_id_resumes_every_topic_without_a_gap() {
    let manager = Manager::builder()
        .retention(Duration::from_secs(60))
        .build()
        .unwrap();
    // `b` has sent two events before the client joins; it will receive none of them live.
    let early = manager.subscribe("b").unwrap();
    manager.publish("b", &"b-before-1");
    manager.publish("b", &"b-before-2");
    let server = start(&manager, true).await;
    let url = server.url("/sse?topic=/sse/a&topic=/sse/b");

    let mut client = SseClient::connect(&url).await;
    manager.wait_until(|s| s.subscribers == 3).await;
    manager.publish("a", &"a1");
    let last = client.event().await;
    assert_eq!(
        seen(&last).2,
        vec![Some(1), Some(2)],
        "b's position is where it joined"
    );
    drop(client);
    drop(early);
    manager.wait_until(|s| s.subscribers == 0).await;

    // While the client is away, both topics go on (into their retained histories).
    for i in 2..=4 {
        manager.publish("a", &format!("a{i}"));
        manager.publish("b", &format!("b{i}"));
    }

    let mut client = SseClient::connect_with(&url, Some(&last.id)).await;
    let mut got = Vec::new();
    for _ in 0..6 {
        let event = client.event().await;
        got.push((event.event, event.data));
    }
    let of = |topic: &str| -> Vec<String> {
        got.iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, d)| d.clone())
            .collect()
    };
    assert_eq!(of("/sse/a"), ["\"a2\"", "\"a3\"", "\"a4\""]);
    assert_eq!(of("/sse/b"), ["\"b2\"", "\"b3\"", "\"b4\""]);
    assert!(got.iter().all(|(t, _)| !t.ends_with("#reset")), "{got:?}");

    // And live from there, with no event twice.
    manager.publish("a", &"a5");
    let live = client.event().await;
    assert_eq!(
        seen(&live),
        ("/sse/a".into(), "\"a5\"".into(), vec![Some(5), Some(5)])
    );
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_event_id_that_is_not_a_composite_of_these_topics_resets_each_topic() {
    let manager = Manager::new();
    let server = start(&manager, false).await;
    let url = server.url("/sse?topic=/sse/a&topic=/sse/b");
    for stale in ["18c2f0a9d3e00-4", "nonsense", "1-1_2-2_3-3"] {
        let mut client = SseClient::connect_with(&url, Some(stale)).await;
        let mut resets = Vec::new();
        for _ in 0..2 {
            let event = client.event().await;
            let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(data["reason"], "malformed-last-event-id", "{stale}");
            resets.push(event.event);
        }
        assert_eq!(resets, ["/sse/a#reset", "/sse/b#reset"], "{stale}");
        manager.wait_until(|s| s.subscribers == 2).await;
        manager.publish("b", &"live");
        let live = client.event().await;
        assert_eq!(
            (live.event.as_str(), live.data.as_str()),
            ("/sse/b", "\"live\"")
        );
        drop(client);
        manager.wait_until(|s| s.subscribers == 0).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_its_route_refuses_refuses_the_whole_request_and_keeps_nothing() {
    let manager = Manager::builder()
        .max_streams_per_client(2)
        .build()
        .unwrap();
    let server = start(&manager, true).await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(server.url(path)).send();

    // The guard of /sse/vault refuses; /sse/a, subscribed first, is released.
    let refused = get("/sse?topic=/sse/a&topic=/sse/vault%3Fkey%3Dguess")
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.text().await.unwrap(),
        "topic /sse/vault?key=guess: wrong key"
    );
    let stats = manager.wait_until(|s| s.subscribers == 0).await;
    assert_eq!((stats.topics, stats.refused.guard), (0, 1));

    // Three topics from one client over its cap of two: the cap's refusal (429, answered as an
    // event stream a browser comes back from), naming the topic, with Retry-After.
    let over = "/sse?topic=/sse/a&topic=/sse/b&topic=/sse/vault%3Fkey%3Dsesame";
    let mut refused = SseClient::connect(&server.url(over)).await;
    assert_eq!(refused.status, 200);
    assert!(refused.headers.contains_key("retry-after"));
    let event = refused.event().await;
    assert_eq!(event.event, "refused");
    let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(data["status"], 429);
    assert!(
        data["reason"]
            .as_str()
            .unwrap()
            .starts_with("topic /sse/vault?key=sesame: too many open SSE streams"),
        "{data}"
    );
    refused.until_end().await;
    manager.wait_until(|s| s.subscribers == 0).await;

    // With the key, the vault streams next to another topic.
    let mut client =
        SseClient::connect(&server.url("/sse?topic=/sse/a&topic=/sse/vault%3Fkey%3Dsesame")).await;
    assert_eq!(client.status, 200);
    manager.wait_until(|s| s.subscribers == 2).await;
    manager.publish("vault", &"gold");
    let event = client.event().await;
    assert_eq!(event.event, "/sse/vault?key=sesame");
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_handler_cannot_serve_are_refused_with_a_reason() {
    let manager = Manager::new();
    let server = start(&manager, true).await;
    let http = reqwest::Client::new();
    for (path, status, reason) in [
        ("/sse", 400, "name the topics to stream"),
        (
            "/sse?topic=/sse/a&topic=/sse/b&topic=/sse/ticks&topic=/plain",
            400,
            "at most 3 topics per stream; this request names 4",
        ),
        (
            "/sse?topic=/sse/a&topic=/sse/a",
            400,
            "topic /sse/a is named twice",
        ),
        ("/sse?topic=alarms", 400, "topic \"alarms\" is not a path"),
        ("/sse?topic=http://elsewhere/sse/a", 400, "is not a path"),
        ("/sse?topic=/sse/nope", 404, "topic /sse/nope: "),
        (
            "/sse?topic=/plain",
            400,
            "topic /plain: its route does not serve a topic stream",
        ),
        (
            "/sse?topic=/sse/nested%3Ftopic%3D/sse/a",
            400,
            "cannot name another multi-topic route",
        ),
    ] {
        let response = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains(reason), "{path}: {body:?}");
    }
    let long = format!("/sse?topic=/{}", "x".repeat(3000));
    assert_eq!(
        http.get(server.url(&long)).send().await.unwrap().status(),
        414
    );

    let head = http
        .head(server.url("/sse?topic=/sse/a&topic=/sse/ticks"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "text/event-stream");
    let stats = manager.stats();
    assert_eq!(
        (stats.topics, stats.subscribers, stats.pollers_started),
        (0, 0, 0)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polled_topic_in_a_multi_topic_stream_shares_the_poller_of_its_route() {
    let manager = Manager::new();
    let server = start(&manager, true).await;
    let mut direct = SseClient::connect(&server.url("/sse/ticks")).await;
    assert_eq!(direct.event().await.data, "\"tick\"");
    let mut multi = SseClient::connect(&server.url("/sse?topic=/sse/ticks&topic=/sse/a")).await;
    let stats = manager.wait_until(|s| s.subscribers == 3).await;
    assert_eq!((stats.pollers, stats.pollers_started), (1, 1));
    // A newcomer to a polled topic gets its newest value at once, under its original id.
    let newest = multi.event().await;
    assert_eq!(
        (newest.event.as_str(), newest.data.as_str()),
        ("/sse/ticks", "\"tick\"")
    );
    assert_eq!(sequences(&newest.id), [Some(1), Some(0)]);
    manager.publish("a", &"a1");
    let event = multi.event().await;
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("/sse/a", "\"a1\"")
    );
    drop((direct, multi));
    server.stop().await;
}

/// The entry of topic `index` in a composite id, as the topic's own id (a delta entry's epoch
/// added to the previous entry's).
fn entry(id: &str, index: usize) -> String {
    let mut epoch = 0;
    let mut entries = id.split('_').map(|entry| {
        let (delta, text) = match entry.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        let id: EventId = text.parse().unwrap();
        epoch = if delta {
            epoch + id.epoch()
        } else {
            id.epoch()
        };
        format!("{epoch:x}-{}", id.sequence())
    });
    entries.nth(index).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_that_had_sent_nothing_resumes_from_its_entry_without_a_gap() {
    for direct in [false, true] {
        let manager = Manager::new();
        let server = start(&manager, direct).await;
        let url = server.url("/sse?topic=/sse/a&topic=/sse/b");
        let mut client = SseClient::connect(&url).await;
        manager.wait_until(|s| s.subscribers == 2).await;
        manager.publish("a", &"a1");
        let last = client.event().await;
        assert_eq!(sequences(&last.id), [Some(1), Some(0)]);
        drop(client);
        manager.wait_until(|s| s.topics == 0).await;

        // Published to the quiet topic while the client is away.
        manager.publish("b", &"b1");
        let mut client = SseClient::connect_with(&url, Some(&last.id)).await;
        let event = client.event().await;
        assert_eq!(
            seen(&event),
            ("/sse/b".into(), "\"b1\"".into(), vec![Some(1), Some(1)]),
            "under {}",
            if direct { "serve" } else { "axum::serve" }
        );
        drop(client);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_before_any_event_resumes_every_topic_from_the_streams_position() {
    let manager = Manager::new();
    let early = manager.subscribe("b").unwrap();
    manager.publish("b", &"b-before");
    let server = start(&manager, true).await;
    let url = server.url("/sse?topic=/sse/a&topic=/sse/b");
    let mut client = SseClient::connect(&url).await;
    let (position, events) = client.position().await;
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(sequences(&position), [Some(0), Some(1)]);
    drop(client);
    drop(early);
    manager.wait_until(|s| s.topics == 0).await;

    manager.publish("a", &"a1");
    manager.publish("b", &"b2");
    let mut client = SseClient::connect_with(&url, Some(&position)).await;
    let mut got = vec![seen(&client.event().await), seen(&client.event().await)];
    got.sort();
    assert_eq!(
        got,
        [
            ("/sse/a".into(), "\"a1\"".into(), vec![Some(1), Some(1)]),
            ("/sse/b".into(), "\"b2\"".into(), vec![Some(1), Some(2)]),
        ]
    );
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_position_event_a_client_that_keeps_dispatched_ids_only_resumes_a_quiet_topic() {
    let manager = Manager::new();
    let server = start(&manager, true).await;
    let url = server.url("/sse?topic=/sse/a&topic=/sse/b&position=event");
    // eventsource-stream, like npm `eventsource` 3, reports the ids of dispatched events only.
    let mut client = SseClient::connect(&url).await;
    let position = client.event().await;
    assert_eq!(position.event, "position");
    assert_eq!(position.data, position.id, "its data is its id");
    assert_eq!(sequences(&position.id), [Some(0), Some(0)]);
    drop(client);
    manager.wait_until(|s| s.topics == 0).await;

    // Published while nobody was subscribed: the position says both topics had sent nothing.
    manager.publish("b", &"b1");
    let mut client = SseClient::connect_with(&url, Some(&position.id)).await;
    let resumed = client.event().await;
    assert_eq!(
        (&resumed.event[..], &resumed.id),
        ("position", &position.id)
    );
    assert_eq!(
        seen(&client.event().await),
        ("/sse/b".into(), "\"b1\"".into(), vec![Some(0), Some(1)])
    );
    drop(client);

    let refused = reqwest::get(server.url("/sse?topic=/sse/a&position=first"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("position=event"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_entry_resets_its_topic_and_the_reset_says_the_next_events_entry() {
    let manager = Manager::new();
    let anchor = manager.subscribe("a").unwrap();
    manager.publish("a", &"a1");
    let server = start(&manager, false).await;
    let url = server.url("/sse?topic=/sse/a&topic=/sse/b");
    let mut first = SseClient::connect(&url).await;
    let (position, _) = first.position().await;
    drop(first);
    // `a` resumes from its entry; `b`'s is left out, as no stream writes it.
    let holed = format!("{}_", entry(&position, 0));
    let mut client = SseClient::connect_with(&url, Some(&holed)).await;
    let reset = client.event().await;
    assert_eq!(reset.event, "/sse/b#reset");
    let data: serde_json::Value = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(data["reason"], "malformed-last-event-id");
    manager.wait_until(|s| s.subscribers == 3).await;
    manager.publish("b", &"b1");
    let next = client.event().await;
    assert_eq!(next.event, "/sse/b");
    assert_eq!(
        entry(&next.id, 1),
        data["continueFrom"].as_str().unwrap(),
        "the reset names the entry its topic's next event carries"
    );
    assert_eq!(entry(&next.id, 0), entry(&position, 0));
    drop((client, anchor));
    server.stop().await;
}

/// A polled topic detects changes: a client reset on it gets the newest value at once, whose
/// entry is the reset's `continueFrom` (it was the event after it before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_on_a_polled_topic_continues_from_its_newest_value() {
    let manager = Manager::new();
    let server = start(&manager, true).await;
    let url = server.url("/sse?topic=/sse/ticks&topic=/sse/a");
    let mut first = SseClient::connect(&url).await;
    let tick = first.event().await;
    assert_eq!(sequences(&tick.id), [Some(1), Some(0)]);
    let mut client = SseClient::connect_with(&url, Some("nonsense")).await;
    let mut resets = Vec::new();
    for _ in 0..2 {
        let reset = client.event().await;
        let data: serde_json::Value = serde_json::from_str(&reset.data).unwrap();
        resets.push((
            reset.event,
            data["continueFrom"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(resets[0].0, "/sse/ticks#reset");
    let newest = client.event().await;
    assert_eq!(
        (newest.event.as_str(), newest.data.as_str()),
        ("/sse/ticks", "\"tick\"")
    );
    assert_eq!(entry(&newest.id, 0), resets[0].1, "{resets:?}");
    drop((first, client));
    server.stop().await;
}
