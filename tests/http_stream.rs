//! SSE over real HTTP: a real axum server on 127.0.0.1, real clients (reqwest with
//! eventsource-stream, and raw TCP where bytes matter).

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use sse_integration_tests::{RawClient, SseClient, TestServer};
use sse_runtime::{Manager, PollError, SseHandler, handler::topic_of, polling::Polling};

const DEADLINE: Duration = Duration::from_secs(30);

async fn serve(app: Router) -> TestServer {
    TestServer::start(app, DEADLINE).await
}

fn alarms_app(manager: &Manager) -> Router {
    Router::new().route("/alarms", get(SseHandler::new(manager).topic("alarms")))
}

#[tokio::test]
async fn headers_are_flushed_before_any_event() {
    let manager = Manager::new();
    let server = serve(alarms_app(&manager)).await;
    // Nothing is ever published: the head must arrive on its own.
    let mut client = RawClient::get(server.addr, "/alarms").await;
    let head = client.head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(head.contains("cache-control: no-cache\r\n"), "{head}");
    assert!(head.contains("x-accel-buffering: no\r\n"), "{head}");
    let first = client.read_until_contains(b"\n\n").await;
    assert!(
        String::from_utf8_lossy(&first).contains("retry: "),
        "the first bytes are the retry hint, not an event"
    );
}

#[tokio::test]
async fn published_events_reach_a_real_sse_client() {
    let manager = Manager::new();
    let server = serve(alarms_app(&manager)).await;
    let mut client = SseClient::connect(&server.url("/alarms")).await;
    assert_eq!(client.status, 200);
    assert_eq!(
        manager.subscriber_count("alarms"),
        1,
        "subscribed before the head was sent"
    );
    manager.publish(
        "alarms",
        &serde_json::json!({"device": "pump-1", "level": 3}),
    );
    manager.publish_event(
        "alarms",
        Some("alarm"),
        &serde_json::json!({"device": "pump-2"}),
    );
    let first = client.event().await;
    assert_eq!(first.event, "message");
    assert_eq!(first.data, r#"{"device":"pump-1","level":3}"#);
    assert!(first.id.ends_with("-1"), "{}", first.id);
    let second = client.event().await;
    assert_eq!(second.event, "alarm");
    assert!(second.id.ends_with("-2"), "{}", second.id);
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats_on_the_wire() {
    let manager = Manager::builder()
        .heartbeat(Duration::from_millis(50))
        .build()
        .unwrap();
    let server = serve(alarms_app(&manager)).await;
    let mut client = RawClient::get(server.addr, "/alarms").await;
    let bytes = client.read_until_contains(b":\n\n").await;
    assert!(!String::from_utf8_lossy(&bytes).contains("data:"));
}

#[tokio::test]
async fn the_topic_is_the_path_plus_query_so_each_query_gets_its_own_poller() {
    let manager = Manager::new();
    let app = Router::new().route(
        "/devices/sse",
        get(SseHandler::new(&manager).polling(|request| {
            let topic = topic_of(request);
            Polling::new(move |_| {
                let topic = topic.clone();
                async move { Ok::<_, PollError>(topic) }
            })
        })),
    );
    let server = serve(app).await;
    // The canonical query sorts the parameters: `offset=10&labels=a,b` is `labels=a,b&offset=10`.
    let mut a = SseClient::connect(&server.url("/devices/sse?offset=10&labels=a,b")).await;
    let mut b = SseClient::connect(&server.url("/devices/sse?offset=20")).await;
    let mut a2 = SseClient::connect(&server.url("/devices/sse?offset=10&labels=a,b")).await;
    assert_eq!(
        a.event().await.data,
        r#""/devices/sse?labels=a,b&offset=10""#
    );
    assert_eq!(b.event().await.data, r#""/devices/sse?offset=20""#);
    assert_eq!(
        a2.event().await.data,
        r#""/devices/sse?labels=a,b&offset=10""#
    );
    let stats = manager.stats();
    assert_eq!((stats.topics, stats.subscribers, stats.pollers), (2, 3, 2));
    drop((a, a2, b));
    manager
        .wait_until(|s| s.pollers == 0 && s.topics == 0)
        .await;
}

#[tokio::test]
async fn a_route_with_parameters_gives_one_topic_per_real_path() {
    let manager = Manager::new();
    let app = Router::new().nest(
        "/api",
        Router::new().route("/device/{id}/sse", get(SseHandler::new(&manager))),
    );
    let server = serve(app).await;
    let mut one = SseClient::connect(&server.url("/api/device/1/sse")).await;
    let mut two = SseClient::connect(&server.url("/api/device/2/sse")).await;
    let names: Vec<String> = manager.topics().into_iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        ["/api/device/1/sse", "/api/device/2/sse"],
        "never the template, never the stripped path"
    );
    manager.publish("/api/device/2/sse", &2);
    manager.publish("/api/device/1/sse", &1);
    assert_eq!(one.event().await.data, "1");
    assert_eq!(two.event().await.data, "2");
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_refuses_new_ones() {
    let manager = Manager::new();
    let server = serve(alarms_app(&manager)).await;
    let mut a = SseClient::connect(&server.url("/alarms")).await;
    let mut b = SseClient::connect(&server.url("/alarms")).await;
    manager.shutdown();
    a.until_end().await;
    b.until_end().await;
    // Refused as a 503, in an event stream a browser comes back from (to another instance, in
    // a rolling restart).
    let mut refused = SseClient::connect(&server.url("/alarms")).await;
    assert_eq!(refused.status, 200);
    let event = refused.event().await;
    assert_eq!(event.event, "refused");
    let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(data["status"], 503);
    assert_eq!(data["reason"], "the SSE manager has been shut down");
    refused.until_end().await;
    // With its streams ended, the server's graceful shutdown completes promptly.
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_topic_is_refused_with_414() {
    let manager = Manager::new();
    let app = Router::new().route("/feed", get(SseHandler::new(&manager)));
    let server = serve(app).await;
    let long = format!(
        "/feed?q={}",
        "a".repeat(sse_runtime::handler::MAX_TOPIC_LEN)
    );
    let response = reqwest::get(server.url(&long)).await.unwrap();
    assert_eq!(response.status(), 414);
    assert_eq!(manager.stats().topics, 0, "nothing was created");
}

#[tokio::test]
async fn a_client_resumes_after_its_last_event_id() {
    let manager = Manager::new();
    let server = serve(alarms_app(&manager)).await;
    let mut first = SseClient::connect(&server.url("/alarms")).await;
    manager.publish("alarms", &1);
    let seen = first.event().await;
    // Keep the topic alive while the client is away, as another subscriber would.
    let _other = manager.subscribe("alarms").unwrap();
    drop(first);
    manager.publish("alarms", &2);
    manager.publish("alarms", &3);
    let mut again = SseClient::connect_with(&server.url("/alarms"), Some(&seen.id)).await;
    assert_eq!(again.event().await.data, "2");
    assert_eq!(again.event().await.data, "3");
    manager.publish("alarms", &4);
    assert_eq!(
        again.event().await.data,
        "4",
        "then live, without a gap or a duplicate"
    );
}

#[tokio::test]
async fn a_malformed_last_event_id_gets_a_reset_event_then_the_live_stream() {
    let manager = Manager::new();
    let server = serve(alarms_app(&manager)).await;
    let mut client = SseClient::connect_with(&server.url("/alarms"), Some("not-an-id")).await;
    assert_eq!(client.status, 200);
    let reset = client.event().await;
    assert_eq!(reset.event, "reset");
    let data: serde_json::Value = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(data["reason"], "malformed-last-event-id");
    manager.publish("alarms", &"live");
    let live = client.event().await;
    assert_eq!(live.data, "\"live\"");
    assert_eq!(data["continueFrom"], live.id.as_str());
}
