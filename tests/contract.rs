//! The event contract (feature `schema`): the AsyncAPI 3.0 document of a binary's routes.
//!
//! Spec: every registered route is a channel at its path, with its placeholders as
//! parameters, and one message per event it sends: its values (named as the route names them,
//! else `message`) with the payload's JSON Schema under `components.schemas`, `reset`, and for
//! a polled route its error event (with the framework's error payload) and, with
//! `end_on_stop`, `end`; one `send` operation per channel lists them. A payload type without
//! `JsonSchema` is served and named by `Contract::missing_schemas`. The document is served on
//! an opt-in route.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::extract::Path;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use sse_integration_tests::{TestServer, asyncapi_parser, tsc};
use sse_runtime::contract::{Contract, HandRoute};
use sse_runtime::{PollError, sse_poll, sse_topic};

#[sse_topic("alarms", event = "alarm")]
#[derive(Serialize, JsonSchema)]
struct Alarm {
    device: String,
    level: Level,
}

#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Level {
    Low,
    High,
}

#[sse_topic("devices/{id}", path = "/sse/devices/{id}")]
#[derive(Serialize, JsonSchema)]
struct DeviceState {
    online: bool,
}

/// No `JsonSchema`: served, and named as missing.
#[sse_topic("notes")]
#[derive(Serialize)]
struct Note {
    text: String,
}

#[derive(Clone, Serialize, JsonSchema)]
struct Build {
    id: u64,
    done: bool,
}

#[sse_poll(
    interval = "250ms",
    path = "/sse/builds/{id}",
    event = "build",
    error_event = "build-error",
    stop_when = |b: &Build| b.done,
    end_on_stop = true
)]
async fn build(Path(id): Path<u64>) -> Result<Build, PollError> {
    Ok(Build { id, done: false })
}

fn document() -> Value {
    Contract::new("Plant", "2.1.0")
        .description("What the plant's pages listen to.")
        .asyncapi()
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

/// Follows a local `$ref` (`#/a/b`) in `document`.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(pointer) => document
            .pointer(pointer.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{pointer} resolves")),
        None => value,
    }
}

#[test]
fn every_route_is_a_channel_at_its_path_with_its_parameters() {
    let document = document();
    assert_eq!(document["asyncapi"], "3.0.0");
    assert_eq!(document["info"]["title"], "Plant");
    assert_eq!(document["info"]["version"], "2.1.0");
    let channels = &document["channels"];
    assert_eq!(
        keys(channels),
        BTreeSet::from(["sse.alarms", "sse.builds.id", "sse.devices.id", "sse.notes"])
    );
    assert_eq!(channels["sse.alarms"]["address"], "/sse/alarms");
    assert_eq!(channels["sse.devices.id"]["address"], "/sse/devices/{id}");
    assert_eq!(
        keys(&channels["sse.devices.id"]["parameters"]),
        BTreeSet::from(["id"])
    );
    assert!(channels["sse.alarms"].get("parameters").is_none());
    assert_eq!(channels["sse.alarms"]["x-sse"]["kind"], "pushed");
    assert_eq!(channels["sse.builds.id"]["x-sse"]["kind"], "polled");
    assert_eq!(channels["sse.builds.id"]["x-sse"]["intervalMs"], 250);
}

#[test]
fn a_pushed_topic_sends_its_values_and_reset_with_their_schemas() {
    let document = document();
    let messages = &document["channels"]["sse.alarms"]["messages"];
    assert_eq!(keys(messages), BTreeSet::from(["alarm", "reset"]));
    let alarm = &messages["alarm"];
    assert_eq!(alarm["name"], "alarm");
    let schema = resolve(&document, &alarm["payload"]);
    assert_eq!(
        keys(&schema["properties"]),
        BTreeSet::from(["device", "level"])
    );
    let level = resolve(&document, &schema["properties"]["level"]);
    assert_eq!(level["enum"], serde_json::json!(["low", "high"]));
    // The schema describes what is sent.
    for level in [Level::Low, Level::High] {
        let sent = serde_json::to_value(Alarm {
            device: "pump-1".into(),
            level,
        })
        .unwrap();
        assert_eq!(keys(&sent), keys(&schema["properties"]));
        assert!(
            resolve(&document, &schema["properties"]["level"])["enum"]
                .as_array()
                .unwrap()
                .contains(&sent["level"])
        );
    }
    // Unnamed values are what a browser dispatches as `message`.
    assert!(document["channels"]["sse.devices.id"]["messages"]["message"]["payload"].is_object());
    let reset = resolve(&document, &messages["reset"]);
    assert_eq!(reset["name"], "reset");
    let reset = resolve(&document, &reset["payload"]);
    assert_eq!(
        reset["required"],
        serde_json::json!(["reason", "continueFrom"])
    );
}

#[test]
fn a_polled_route_also_sends_its_error_event_and_end() {
    let document = document();
    let messages = &document["channels"]["sse.builds.id"]["messages"];
    assert_eq!(
        keys(messages),
        BTreeSet::from(["build", "build-error", "end", "reset"])
    );
    let build = resolve(&document, &messages["build"]["payload"]);
    assert_eq!(keys(&build["properties"]), BTreeSet::from(["done", "id"]));
    let error = resolve(&document, &messages["build-error"]["payload"]);
    assert_eq!(
        keys(&error["properties"]),
        BTreeSet::from(["apiVersion", "message", "statusCode"])
    );
    let end = resolve(&document, &messages["end"]);
    assert_eq!(end["name"], "end");
}

#[test]
fn each_channel_has_one_send_operation_listing_its_messages() {
    let document = document();
    let operations = document["operations"].as_object().unwrap();
    assert_eq!(operations.len(), 4);
    for (id, operation) in operations {
        assert_eq!(operation["action"], "send", "{id}");
        let channel = resolve(&document, &operation["channel"]);
        let names: BTreeSet<&str> = operation["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| resolve(&document, m))
            .map(|m| resolve(&document, m)["name"].as_str().unwrap())
            .collect();
        let listed: BTreeSet<&str> = channel["messages"]
            .as_object()
            .unwrap()
            .values()
            .map(|m| resolve(&document, m)["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, listed, "{id}");
    }
}

#[test]
fn a_payload_without_a_schema_is_served_and_named() {
    let contract = Contract::new("Plant", "2.1.0");
    assert_eq!(contract.missing_schemas(), vec!["contract::Note"]);
    let note = &contract.asyncapi()["channels"]["sse.notes"]["messages"]["message"];
    assert!(note.get("payload").is_none());
    assert!(note["description"].as_str().unwrap().contains("JsonSchema"));
}

#[tokio::test]
async fn the_document_is_served_on_the_route_it_is_mounted_at() {
    let manager = sse_runtime::Manager::new();
    let app = sse_runtime::routes::router_with(&manager)
        .route("/asyncapi.json", Contract::new("Plant", "2.1.0").route());
    let server = TestServer::start_direct(app, Duration::from_secs(5)).await;
    let response = reqwest::get(server.url("/asyncapi.json")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let expected = Contract::new("Plant", "2.1.0").asyncapi();
    assert_eq!(served["channels"], expected["channels"]);
    assert_eq!(served["components"], expected["components"]);
}

#[test]
fn the_document_is_valid_asyncapi_for_the_official_parser() {
    let (valid, diagnostics) = asyncapi_parser(&document());
    assert!(valid, "{diagnostics}");
    // And the parser does reject: a channel without its address's parameter, a dangling ref.
    let mut broken = document();
    broken["channels"]["sse.devices.id"]
        .as_object_mut()
        .unwrap()
        .remove("parameters");
    broken["operations"]["sse.alarms.send"]["channel"]["$ref"] = "#/channels/nowhere".into();
    let (valid, diagnostics) = asyncapi_parser(&broken);
    assert!(!valid, "a broken document passed: {diagnostics}");
    assert!(diagnostics.contains("\"severity\":0"), "{diagnostics}");
}

/// `tsc` on the consumers of `tests/ts/`, as trybuild does for Rust: each of `pass/` compiles
/// against the declarations of this binary's contract, each of `fail/` fails with exactly the
/// errors of its reviewed `.expected` file (`TS_OVERWRITE=1` writes them, to be reviewed).
#[test]
fn typescript_consumers_compile_or_fail_as_expected() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("sse-ts-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("events.d.ts"),
        Contract::new("Plant", "2.1.0").typescript(),
    )
    .unwrap();
    std::fs::write(
        work.join("sse-client.d.ts"),
        sse_runtime::contract::CLIENT_DTS,
    )
    .unwrap();
    // The client itself is checked too, as JavaScript with its JSDoc types.
    std::fs::write(work.join("sse-client.js"), sse_runtime::contract::CLIENT_JS).unwrap();
    let (valid, errors) = tsc(
        &work,
        &["--strict", "--allowJs", "--checkJs", "sse-client.js"],
    );
    assert!(valid, "sse-client.js: {errors}");
    let overwrite = std::env::var_os("TS_OVERWRITE").is_some();
    let mut problems = Vec::new();
    let mut cases = 0;
    for kind in ["pass", "fail"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join("tests/ts").join(kind))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "ts"))
            .collect();
        files.sort();
        for file in files {
            cases += 1;
            let name = file.file_name().unwrap().to_str().unwrap().to_owned();
            std::fs::copy(&file, work.join(&name)).unwrap();
            let (compiled, errors) =
                tsc(&work, &["--strict", "--moduleResolution", "bundler", &name]);
            match kind {
                "pass" if !compiled => {
                    problems.push(format!("{name} should compile:\n{errors}"));
                }
                "fail" => {
                    let expected_file = file.with_extension("expected");
                    if overwrite {
                        std::fs::write(&expected_file, format!("{errors}\n")).unwrap();
                    }
                    let expected = std::fs::read_to_string(&expected_file).unwrap_or_default();
                    if compiled || errors != expected.trim() {
                        problems.push(format!(
                            "{name}: expected\n{}\ngot\n{errors}",
                            expected.trim()
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    assert!(cases >= 4, "the consumers of tests/ts/ were found");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn a_route_built_by_hand_is_declared_with_its_payload() {
    let contract = Contract::new("Plant", "2.1.0").with_route(
        HandRoute::polled::<Build>("/poll/{topic}", Duration::from_millis(100))
            .event("tick")
            .error_event("tick-error"),
    );
    let document = contract.asyncapi();
    let channel = &document["channels"]["poll.topic"];
    assert_eq!(channel["address"], "/poll/{topic}");
    assert_eq!(keys(&channel["parameters"]), BTreeSet::from(["topic"]));
    assert_eq!(
        keys(&channel["messages"]),
        BTreeSet::from(["reset", "tick", "tick-error"])
    );
    assert_eq!(channel["x-sse"]["intervalMs"], 100);
    let tick = resolve(&document, &channel["messages"]["tick"]["payload"]);
    assert_eq!(keys(&tick["properties"]), BTreeSet::from(["done", "id"]));
    assert!(contract.typescript().contains("\"/poll/{topic}\": {\n    reset: SseReset;\n    tick: Build;\n    \"tick-error\": SsePollError;"));
    let (valid, diagnostics) = asyncapi_parser(&document);
    assert!(valid, "{diagnostics}");
}

#[test]
fn the_multi_topic_route_names_every_routes_events_as_its_stream_does() {
    let contract = Contract::new("Plant", "2.1.0").multi_topic_route("/sse");
    let document = contract.asyncapi();
    let channel = &document["channels"]["sse"];
    assert_eq!(channel["address"], "/sse");
    assert_eq!(channel["x-sse"]["kind"], "multi");
    let names: BTreeSet<&str> = channel["messages"]
        .as_object()
        .unwrap()
        .values()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for name in [
        "/sse/alarms#alarm",
        "/sse/alarms#reset",
        "/sse/devices/{id}",
        "/sse/builds/{id}#build",
        "/sse/builds/{id}#build-error",
        "/sse/builds/{id}#end",
    ] {
        assert!(names.contains(name), "{name} in {names:?}");
    }
    let alarm = channel["messages"]["sse.alarms.alarm"]["payload"].clone();
    assert_eq!(alarm["$ref"], "#/components/schemas/Alarm");
    assert_eq!(
        document["operations"]["sse.send"]["messages"]
            .as_array()
            .unwrap()
            .len(),
        names.len()
    );
    let declarations = contract.typescript();
    assert!(declarations.contains("export interface MultiEvents {"));
    assert!(declarations.contains("\"/sse/alarms#alarm\": Alarm;"));
    let routes = declarations
        .split("export interface MultiEvents")
        .next()
        .unwrap();
    assert!(!routes.contains("\"/sse\": {"), "Events holds routes only");
    let (valid, diagnostics) = asyncapi_parser(&document);
    assert!(valid, "{diagnostics}");
}

/// The events a path's `200` answer streams: its `text/event-stream` items, by their `event`.
fn stream_items(operation: &Value) -> BTreeMap<String, Value> {
    let items = &operation["responses"]["200"]["content"]["text/event-stream"]["itemSchema"];
    items["oneOf"]
        .as_array()
        .expect("one of the route's events")
        .iter()
        .map(|item| {
            let name = item["properties"]["event"]["enum"][0].as_str().unwrap();
            (name.to_owned(), item.clone())
        })
        .collect()
}

/// Spec (issue 27, part 2): the SSE routes as OpenAPI 3.2, from the same walk as the AsyncAPI
/// document: a `GET` path per route (its path parameters, `Last-Event-ID` as header or query),
/// whose `200` answer is `text/event-stream` with an `itemSchema` of its events, each event's
/// `data` JSON text of its payload's schema (OpenAPI 3.2's own SSE form); the multi-topic
/// route with its `topic` list and every route's events; a payload without a schema named.
#[test]
fn the_openapi_document_streams_each_routes_events_as_typed_items() {
    let contract = Contract::new("Plant", "2.1.0").multi_topic_route("/sse");
    let document = contract.openapi();
    assert_eq!(document["openapi"], "3.2.0");
    assert_eq!(document["info"]["title"], "Plant");
    assert_eq!(
        keys(&document["paths"]),
        BTreeSet::from([
            "/sse",
            "/sse/alarms",
            "/sse/builds/{id}",
            "/sse/devices/{id}",
            "/sse/notes"
        ])
    );

    let builds = &document["paths"]["/sse/builds/{id}"]["get"];
    let parameters: Vec<(&str, &str)> = builds["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["in"].as_str().unwrap()))
        .collect();
    assert_eq!(
        parameters,
        [
            ("id", "path"),
            ("Last-Event-ID", "header"),
            ("last_event_id", "query")
        ]
    );
    let items = stream_items(builds);
    assert_eq!(
        items.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["build", "build-error", "end", "reset"])
    );
    let data = &items["build"]["properties"]["data"];
    assert_eq!(data["contentMediaType"], "application/json");
    let build = resolve(&document, &data["contentSchema"]);
    assert_eq!(keys(&build["properties"]), BTreeSet::from(["done", "id"]));
    let reset = &items["reset"]["properties"]["data"]["contentSchema"];
    assert_eq!(reset["$ref"], "#/components/schemas/SseReset");

    // Unnamed values: the SSE frame has no `event:` line, a browser dispatches `message`.
    let devices = stream_items(&document["paths"]["/sse/devices/{id}"]["get"]);
    assert_eq!(devices["message"]["required"], serde_json::json!(["data"]));
    let notes = stream_items(&document["paths"]["/sse/notes"]["get"]);
    assert!(
        notes["message"]["properties"]["data"]
            .get("contentSchema")
            .is_none()
    );
    assert!(
        notes["message"]["description"]
            .as_str()
            .unwrap()
            .contains("has no JSON Schema")
    );

    let multi = &document["paths"]["/sse"]["get"];
    let topic = &multi["parameters"][0];
    assert_eq!(
        (&topic["name"], &topic["in"]),
        (&"topic".into(), &"query".into())
    );
    assert_eq!(topic["schema"]["type"], "array");
    let items = stream_items(multi);
    for name in [
        "/sse/alarms#alarm",
        "/sse/devices/{id}",
        "/sse/builds/{id}#end",
    ] {
        assert!(items.contains_key(name), "{name} in {:?}", items.keys());
    }
    assert!(multi["responses"].get("400").is_some());
}

/// Spec (issue 27, part 2): the OpenAPI document is utoipa's model without losing a field
/// (utoipa 6 models OpenAPI 3.2's `itemSchema`), and merges into an application's document
/// next to its own paths.
#[test]
fn the_openapi_document_merges_into_an_applications_utoipa_document_losslessly() {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::{OpenApiBuilder, OpenApiVersion, PathsBuilder};

    let contract = Contract::new("Plant", "2.1.0").multi_topic_route("/sse");
    let model = contract
        .utoipa()
        .expect("utoipa's model holds the document");
    assert_eq!(
        serde_json::to_value(&model).unwrap(),
        contract.openapi(),
        "nothing lost on the way through utoipa"
    );
    let own = PathItem::new(HttpMethod::Get, OperationBuilder::new().build());
    let api = OpenApiBuilder::new()
        .openapi(OpenApiVersion::Version32)
        .paths(PathsBuilder::new().path("/api/thresholds", own))
        .build()
        .merge_from(model);
    let merged = serde_json::to_value(&api).unwrap();
    assert!(merged["paths"].get("/api/thresholds").is_some());
    let alarms = stream_items(&merged["paths"]["/sse/alarms"]["get"]);
    let alarm = resolve(
        &merged,
        &alarms["alarm"]["properties"]["data"]["contentSchema"],
    );
    assert_eq!(
        keys(&alarm["properties"]),
        BTreeSet::from(["device", "level"])
    );
}
