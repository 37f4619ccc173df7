//! The attribute macros, driven over real HTTP: `#[sse_topic]` types publish through typed
//! helpers to their generated routes; `#[sse_poll]` functions poll while their route has
//! subscribers; `router_with` mounts everything registered in this binary.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query};
use serde::{Deserialize, Serialize};
use sse_integration_tests::{SseClient, TestServer};
use sse_runtime::{CancellationToken, Manager, PollError, SseTopic, sse_poll, sse_topic};

#[sse_topic("alarms", event = "alarm")]
#[derive(Serialize)]
struct Alarm {
    device: String,
    level: u8,
}

#[sse_topic("notices", path = "/api/v1/notices/sse")]
#[derive(Serialize)]
struct Notice(String);

#[sse_topic("devices/{id}")]
#[derive(Serialize)]
enum DeviceState {
    Online,
    Offline,
}

#[sse_topic(
    "rooms/{building}/{room}",
    path = "/api/rooms/{building}/{room}/sse",
    change_detection = true
)]
#[derive(Serialize)]
struct Temperature {
    celsius: i32,
}

#[derive(Clone, Deserialize)]
struct Labels {
    label: String,
}

#[derive(Serialize)]
struct Echo {
    label: String,
    poll: usize,
}

static ECHO_POLLS: AtomicUsize = AtomicUsize::new(0);

#[sse_poll(interval = "50ms")]
async fn echo(Query(q): Query<Labels>) -> Result<Echo, PollError> {
    let poll = ECHO_POLLS.fetch_add(1, Ordering::SeqCst);
    Ok(Echo {
        label: q.label,
        poll,
    })
}

#[sse_poll(
    path = "/api/v1/device/{id}/sse",
    api_version = "v9",
    change_detection = false
)]
async fn device(Path(id): Path<u32>) -> Result<u32, PollError> {
    if id == 404 {
        return Err(PollError::new(
            http::StatusCode::NOT_FOUND,
            format!("device {id} not found"),
        ));
    }
    Ok(id * 10)
}

static COUNTDOWN_STOPS: AtomicUsize = AtomicUsize::new(0);

fn count_stop() {
    COUNTDOWN_STOPS.fetch_add(1, Ordering::SeqCst);
}

#[sse_poll(interval = "10ms", stop_when = |n: &u64| *n >= 3, on_stop = count_stop, change_detection = false)]
async fn countdown(cancel: CancellationToken) -> Result<u64, PollError> {
    assert!(!cancel.is_cancelled(), "the token is live while polling");
    static N: AtomicUsize = AtomicUsize::new(0);
    Ok(N.fetch_add(1, Ordering::SeqCst) as u64 + 1)
}

#[sse_poll(topic = "shared-feed", interval = "20ms")]
async fn shared(Query(q): Query<Labels>) -> Result<String, PollError> {
    Ok(q.label)
}

async fn start(manager: &Manager) -> TestServer {
    TestServer::start(
        sse_runtime::routes::router_with(manager),
        Duration::from_secs(30),
    )
    .await
}

#[tokio::test]
async fn the_type_knows_its_topic_event_and_path() {
    assert_eq!(Alarm::TOPIC, "alarms");
    assert_eq!(Alarm::EVENT, Some("alarm"));
    assert_eq!(Alarm::PATH, "/sse/alarms");
    assert_eq!(Notice::PATH, "/api/v1/notices/sse");
    assert_eq!(<DeviceState as SseTopic>::TOPIC, "devices/{id}");
    assert_eq!(<DeviceState as SseTopic>::PATH, "/sse/devices/{id}");
}

#[tokio::test]
async fn every_annotated_item_is_registered_with_its_module_path() {
    let routes = sse_runtime::routes::registered_routes();
    let listed: Vec<(&str, &str)> = routes.iter().map(|r| (r.path, r.item)).collect();
    assert_eq!(
        listed,
        [
            ("/api/rooms/{building}/{room}/sse", "macros::Temperature"),
            ("/api/v1/device/{id}/sse", "macros::device"),
            ("/api/v1/notices/sse", "macros::Notice"),
            ("/sse/alarms", "macros::Alarm"),
            ("/sse/countdown", "macros::countdown"),
            ("/sse/devices/{id}", "macros::DeviceState"),
            ("/sse/echo", "macros::echo"),
            ("/sse/shared", "macros::shared"),
        ]
    );
    let shared = routes.iter().find(|r| r.item == "macros::shared").unwrap();
    assert_eq!(shared.topic, Some("shared-feed"));
    let echo = routes.iter().find(|r| r.item == "macros::echo").unwrap();
    assert_eq!(echo.topic, None, "URL-derived");
}

#[tokio::test]
async fn a_typed_helper_publishes_to_the_generated_route() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut client = SseClient::connect(&server.url("/sse/alarms")).await;
    publish_alarm_to(
        &manager,
        &Alarm {
            device: "pump-1".into(),
            level: 3,
        },
    );
    let event = client.event().await;
    assert_eq!(event.event, "alarm");
    assert_eq!(event.data, r#"{"device":"pump-1","level":3}"#);
}

#[tokio::test]
async fn a_custom_path_serves_the_topic() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut client = SseClient::connect(&server.url("/api/v1/notices/sse")).await;
    publish_notice_to(&manager, &Notice("maintenance at noon".into()));
    assert_eq!(client.event().await.data, r#""maintenance at noon""#);
}

#[tokio::test]
async fn a_topic_template_gives_each_value_its_own_topic() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut one = SseClient::connect(&server.url("/sse/devices/1")).await;
    let mut two = SseClient::connect(&server.url("/sse/devices/2")).await;
    assert_eq!(manager.subscriber_count("devices/1"), 1);
    publish_device_state_to(&manager, 2, &DeviceState::Offline);
    publish_device_state_to(&manager, 1, &DeviceState::Online);
    assert_eq!(one.event().await.data, r#""Online""#);
    assert_eq!(two.event().await.data, r#""Offline""#);
}

#[tokio::test]
async fn a_multi_parameter_template_with_a_custom_path_and_change_detection() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut client = SseClient::connect(&server.url("/api/rooms/b1/r204/sse")).await;
    publish_temperature_to(&manager, "b1", "r204", &Temperature { celsius: 21 });
    publish_temperature_to(&manager, "b1", "r204", &Temperature { celsius: 21 });
    publish_temperature_to(&manager, "b1", "r204", &Temperature { celsius: 22 });
    publish_temperature_to(&manager, "b2", "r204", &Temperature { celsius: 99 });
    assert_eq!(client.event().await.data, r#"{"celsius":21}"#);
    assert_eq!(
        client.event().await.data,
        r#"{"celsius":22}"#,
        "the repeat was skipped"
    );
    assert_eq!(manager.stats().duplicates, 1);
}

#[tokio::test]
async fn a_polled_route_gets_one_poller_per_query_string() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut a = SseClient::connect(&server.url("/sse/echo?label=a")).await;
    let mut b = SseClient::connect(&server.url("/sse/echo?label=b")).await;
    let mut a2 = SseClient::connect(&server.url("/sse/echo?label=a")).await;
    for (client, label) in [(&mut a, "a"), (&mut b, "b"), (&mut a2, "a")] {
        let data: serde_json::Value = serde_json::from_str(&client.event().await.data).unwrap();
        assert_eq!(data["label"], label);
    }
    assert_eq!(manager.stats().pollers, 2);
    // Polls keep coming, in order. (Their timing is specified with a
    // paused clock in sse-runtime's polling tests; a wall-clock bound here failed under load.)
    let mut polls = Vec::new();
    for _ in 0..3 {
        let data: serde_json::Value = serde_json::from_str(&b.event().await.data).unwrap();
        polls.push(data["poll"].as_u64().unwrap());
    }
    assert!(polls.windows(2).all(|w| w[1] > w[0]), "{polls:?}");
    drop((a, a2, b));
    manager
        .wait_until(|s| s.pollers == 0 && s.topics == 0)
        .await;
}

#[tokio::test]
async fn a_path_extractor_and_error_payloads_with_the_api_version() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut seven = SseClient::connect(&server.url("/api/v1/device/7/sse")).await;
    let value = seven.event().await;
    assert_eq!(
        (value.event.as_str(), value.data.as_str()),
        ("message", "70")
    );
    let mut missing = SseClient::connect(&server.url("/api/v1/device/404/sse")).await;
    let failed = missing.event().await;
    assert_eq!(
        failed.event, "poll-error",
        "an error is its own event, apart from the values"
    );
    let error: serde_json::Value = serde_json::from_str(&failed.data).unwrap();
    assert_eq!(
        error,
        serde_json::json!({"apiVersion": "v9", "statusCode": 404, "message": "device 404 not found"})
    );
}

#[tokio::test]
async fn a_request_the_extractors_reject_gets_a_4xx_and_creates_nothing() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let no_label = reqwest::get(server.url("/sse/echo")).await.unwrap();
    assert_eq!(no_label.status(), 400);
    let not_a_number = reqwest::get(server.url("/api/v1/device/seven/sse"))
        .await
        .unwrap();
    assert_eq!(not_a_number.status(), 400);
    assert_eq!(manager.stats().topics, 0);
}

#[tokio::test]
async fn stop_when_and_on_stop_end_polling_after_the_condition() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut client = SseClient::connect(&server.url("/sse/countdown")).await;
    let values: Vec<String> = [
        client.event().await,
        client.event().await,
        client.event().await,
    ]
    .into_iter()
    .map(|e| e.data)
    .collect();
    assert_eq!(values, ["1", "2", "3"]);
    // The condition held on 3: the loop ended by itself and called on_stop once.
    while COUNTDOWN_STOPS.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    drop(client);
    manager.wait_until(|s| s.pollers == 0).await;
    assert_eq!(COUNTDOWN_STOPS.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_fixed_topic_makes_every_request_share_one_poller() {
    let manager = Manager::new();
    let server = start(&manager).await;
    let mut first = SseClient::connect(&server.url("/sse/shared?label=first")).await;
    let polled = first.event().await;
    assert_eq!(polled.data, r#""first""#);
    let mut second = SseClient::connect(&server.url("/sse/shared?label=second")).await;
    // The poller of the first request feeds both; the newcomer gets its newest result at once,
    // under its original id (change detection skips the repeats that follow).
    let newest = second.event().await;
    assert_eq!(newest.data, r#""first""#);
    assert_eq!(newest.id, polled.id, "the same event");
    let stats = manager.stats();
    assert_eq!((stats.topics, stats.pollers), (1, 1));
    assert_eq!(manager.topics()[0].name, "shared-feed");
}

#[tokio::test]
async fn router_and_the_plain_helpers_use_the_global_manager() {
    let server = TestServer::start(sse_runtime::router(), Duration::from_secs(30)).await;
    let mut client = SseClient::connect(&server.url("/sse/alarms")).await;
    publish_alarm(&Alarm {
        device: "global".into(),
        level: 1,
    });
    assert_eq!(
        client.event().await.data,
        r#"{"device":"global","level":1}"#
    );
    assert_eq!(Manager::global().subscriber_count("alarms"), 1);
}
