//! The AsyncAPI 3.0 document: one walk over the registry.

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::routes::{Payload, RouteInfo, RouteKind};

/// The document of every registered route, for the application `title` at `version`.
pub(super) fn document(
    title: &str,
    version: &str,
    description: Option<&str>,
    routes: Vec<(RouteInfo, Option<Payload>)>,
    multi: Option<&str>,
) -> Value {
    let mut generator = SchemaSettings::draft07()
        .with(|settings| settings.definitions_path = "/components/schemas".into())
        .for_serialize()
        .into_generator();
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    // Each route's messages as the multi-topic stream names them: `<path>#<event>`.
    let mut multiplexed = Map::new();
    for (route, payload) in routes {
        let id = channel_id(route.path, &mut ids);
        let payload = payload.map(|payload| Value::from((payload.schema)(&mut generator)));
        let (channel, message_ids) = channel(&route, payload);
        if multi.is_some() {
            for (message_id, message) in channel["messages"].as_object().into_iter().flatten() {
                let mut message = resolve_message(message);
                let name = message["name"].as_str().unwrap_or("message").to_owned();
                message["name"] = Value::from(if name == "message" {
                    route.path.to_owned()
                } else {
                    format!("{}#{name}", route.path)
                });
                multiplexed.insert(format!("{id}.{message_id}"), message);
            }
        }
        let summary = format!("The events of {}", route.path);
        operations.insert(format!("{id}.send"), send(&id, &message_ids, &summary));
        channels.insert(id, channel);
    }
    if let Some(path) = multi {
        let id = channel_id(path, &mut ids);
        let message_ids: Vec<String> = multiplexed.keys().cloned().collect();
        let summary = format!("The events of every topic subscribed at {path}");
        operations.insert(format!("{id}.send"), send(&id, &message_ids, &summary));
        channels.insert(
            id,
            json!({
                "address": path,
                "title": "Several topics on one stream",
                "description": format!(
                    "`GET {path}?topic=<uri>&topic=<uri>`: the topics of the routes above on one stream, each subscribed through its own route (a `<uri>` is a route's path with its placeholders and query filled in, `/sse/devices/7`). An event of topic T named E arrives as `T#E`, as `T` when unnamed (the names below use the routes' paths); its id is a composite of every topic's position."
                ),
                "messages": multiplexed,
                "x-sse": { "kind": "multi" },
            }),
        );
    }
    let mut schemas = generator.take_definitions(true);
    for (name, schema) in framework_schemas() {
        schemas.insert(name.to_owned(), schema);
    }
    let mut info = json!({ "title": title, "version": version });
    if let Some(description) = description {
        info["description"] = Value::from(description);
    }
    json!({
        "asyncapi": "3.0.0",
        "info": info,
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": framework_messages(),
        },
    })
}

/// The operation by which the application sends the messages `message_ids` of channel `id`.
fn send(id: &str, message_ids: &[String], summary: &str) -> Value {
    let messages: Vec<Value> = message_ids
        .iter()
        .map(|message| json!({ "$ref": format!("#/channels/{id}/messages/{message}") }))
        .collect();
    json!({
        "action": "send",
        "channel": { "$ref": format!("#/channels/{id}") },
        "summary": summary,
        "messages": messages,
    })
}

/// A channel id for `path`: its segments joined by dots, placeholders by their names
/// (`/sse/devices/{id}` is `sse.devices.id`), unique in the document.
fn channel_id(path: &str, seen: &mut BTreeMap<String, usize>) -> String {
    let base: String = path
        .trim_matches('/')
        .chars()
        .filter_map(|c| match c {
            '/' => Some('.'),
            '{' | '}' => None,
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' => Some(c),
            _ => Some('_'),
        })
        .collect();
    let count = seen.entry(base.clone()).or_insert(0);
    *count += 1;
    if *count == 1 {
        base
    } else {
        format!("{base}-{count}")
    }
}

/// The channel of `route` and the ids of its messages.
fn channel(route: &RouteInfo, payload: Option<Value>) -> (Value, Vec<String>) {
    let values = route.event.unwrap_or("message");
    let item = route.item.rsplit("::").next().unwrap_or(route.item);
    let mut messages = Map::new();
    let mut value_message = json!({
        "name": values,
        "title": item,
        "contentType": "application/json",
    });
    match payload {
        Some(schema) => value_message["payload"] = schema,
        None => {
            value_message["description"] = Value::from(format!(
                "{} has no JSON Schema: derive `schemars::JsonSchema` on its payload type",
                route.item
            ));
        }
    }
    messages.insert(values.to_owned(), value_message);
    messages.insert(
        "reset".to_owned(),
        json!({ "$ref": "#/components/messages/reset" }),
    );
    let mut sse = json!({
        "item": route.item,
        "guarded": route.guarded,
        "changeDetection": route.change_detection,
    });
    if let Some(topic) = route.topic {
        sse["topic"] = Value::from(topic);
    }
    let description = match route.kind {
        RouteKind::Pushed => {
            sse["kind"] = Value::from("pushed");
            format!(
                "Events published to {} (`#[sse_topic]` on `{}`).",
                route.path, route.item
            )
        }
        RouteKind::Polled {
            interval,
            error_event,
            end_on_stop,
        } => {
            sse["kind"] = Value::from("polled");
            sse["intervalMs"] = Value::from(interval.as_millis() as u64);
            sse["endOnStop"] = Value::from(end_on_stop);
            messages.insert(
                error_event.to_owned(),
                json!({
                    "name": error_event,
                    "title": "Poll error",
                    "contentType": "application/json",
                    "payload": { "$ref": "#/components/schemas/SsePollError" },
                }),
            );
            if end_on_stop {
                messages.insert(
                    crate::frame::END_EVENT.to_owned(),
                    json!({ "$ref": "#/components/messages/end" }),
                );
            }
            format!(
                "Polled every {} ms while subscribed (`#[sse_poll]` on `{}`); {}.",
                interval.as_millis(),
                route.item,
                if route.change_detection {
                    "a value is sent when it differs from the one before"
                } else {
                    "every value is sent"
                }
            )
        }
    };
    let mut channel = json!({
        "address": route.path,
        "title": item,
        "description": description,
        "messages": messages,
        "x-sse": sse,
    });
    let params = route.path_params();
    if !params.is_empty() {
        let parameters: Map<String, Value> = params
            .into_iter()
            .map(|name| {
                let description = format!("The `{{{name}}}` segment of the path.");
                (name.to_owned(), json!({ "description": description }))
            })
            .collect();
        channel["parameters"] = Value::Object(parameters);
    }
    let ids = messages.keys().cloned().collect();
    (channel, ids)
}

/// `message`, or the framework message it refers to.
pub(super) fn resolve_message(message: &Value) -> Value {
    let framework = framework_messages();
    message
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|pointer| pointer.strip_prefix("#/components/messages/"))
        .and_then(|name| framework.get(name))
        .unwrap_or(message)
        .clone()
}

/// The schemas of the framework's own payloads.
fn framework_schemas() -> [(&'static str, Value); 3] {
    [
        (
            "SseReset",
            json!({
                "type": "object",
                "description": "The stream could not resume from the client's Last-Event-ID, or (history-lost) the broker lost the topic's history under the open stream; what was missed must be fetched another way.",
                "properties": {
                    "reason": {
                        "type": "string",
                        "enum": ["malformed-last-event-id", "unknown-epoch", "history-expired", "history-exceeded", "unknown-sequence", "history-lost"],
                    },
                    "continueFrom": { "type": "string", "description": "The id of the first event the stream sends next." },
                },
                "required": ["reason", "continueFrom"],
            }),
        ),
        (
            "SsePollError",
            json!({
                "type": "object",
                "description": "A poll that failed: an HTTP-style status and a message.",
                "properties": {
                    "apiVersion": { "type": "string" },
                    "statusCode": { "type": "integer", "minimum": 100, "maximum": 599 },
                    "message": { "type": "string" },
                },
                "required": ["apiVersion", "statusCode", "message"],
            }),
        ),
        (
            "SseEnd",
            json!({
                "type": "object",
                "description": "The topic is done: the stream ends after this event.",
                "properties": { "reason": { "type": "string", "enum": ["finished"] } },
                "required": ["reason"],
            }),
        ),
    ]
}

/// The framework's messages that every channel (`reset`) or some (`end`) refer to.
fn framework_messages() -> Value {
    json!({
        "reset": {
            "name": "reset",
            "title": "Reset",
            "contentType": "application/json",
            "payload": { "$ref": "#/components/schemas/SseReset" },
        },
        "end": {
            "name": crate::frame::END_EVENT,
            "title": "End",
            "contentType": "application/json",
            "payload": { "$ref": "#/components/schemas/SseEnd" },
        },
    })
}
