//! The SSE routes for OpenAPI 3.2 (cargo feature `openapi`): made from the AsyncAPI document,
//! as the TypeScript declarations are, so the three artifacts cannot disagree.
//!
//! Each channel is a `GET` path whose `200` answer is `text/event-stream` with an `itemSchema`
//! (OpenAPI 3.2, the field made for sequential media types): one of the route's events, each an
//! object with the SSE fields `event`, `data` and `id`, where `data` is JSON text whose schema
//! is the payload's (`contentMediaType` and `contentSchema`, as OpenAPI 3.2's own
//! `text/event-stream` example has it). The payload schemas go to `components/schemas`, where
//! the AsyncAPI document has them.

use serde_json::{Map, Value, json};

use super::asyncapi::resolve_message;

/// The OpenAPI 3.2 document of the channels of `asyncapi`.
pub(super) fn document(asyncapi: &Value) -> Value {
    let mut paths = Map::new();
    let channels = asyncapi["channels"].as_object().into_iter().flatten();
    for (id, channel) in channels {
        let Some(address) = channel["address"].as_str() else {
            continue;
        };
        let multi = channel["x-sse"]["kind"] == "multi";
        let items: Vec<Value> = channel["messages"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, message)| item(&resolve_message(message)))
            .collect();
        let mut parameters: Vec<Value> = channel["parameters"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, parameter)| {
                json!({
                    "name": name,
                    "in": "path",
                    "required": true,
                    "description": parameter["description"],
                    "schema": { "type": "string" },
                })
            })
            .collect();
        if multi {
            parameters.extend(multi_parameters());
        }
        parameters.extend(resume_parameters());
        let mut responses = json!({
            "200": {
                "description": "The event stream. A refusal that passes (a cap, shutting down) is also a 200 stream by default: one `refused` event `{status, reason, retryAfterMs}` and `retry:`, which keeps a browser's EventSource retrying (`RefusalAnswer::EventStream`).",
                "content": {
                    "text/event-stream": {
                        "itemSchema": { "oneOf": items },
                    },
                },
            },
            "429": { "description": "Over the per-client cap, with `Retry-After`, where refusals are answered with a status (`RefusalAnswer::Status`)." },
            "503": { "description": "Over a cap or shutting down, with `Retry-After`, where refusals are answered with a status (`RefusalAnswer::Status`)." },
        });
        if multi {
            responses["400"] = json!({ "description": "A malformed or over-long topic list, a topic twice, a `position` other than `event`." });
        }
        if channel["x-sse"]["guarded"] == true {
            responses["401"] = json!({ "description": "Refused by the route's guard: no credentials, or expired ones." });
            responses["403"] = json!({ "description": "Refused by the route's guard." });
        }
        let mut operation = json!({
            "operationId": id,
            "summary": channel["title"],
            "tags": ["sse"],
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(description) = channel.get("description") {
            operation["description"] = description.clone();
        }
        paths.insert(address.to_owned(), json!({ "get": operation }));
    }
    json!({
        "openapi": "3.2.0",
        "info": asyncapi["info"],
        "paths": paths,
        "components": { "schemas": asyncapi["components"]["schemas"] },
    })
}

/// One event of a stream, as an item of `text/event-stream`: its name in `event` (absent for
/// `message`, the name a browser gives an unnamed event), its payload as JSON text in `data`.
fn item(message: &Value) -> Value {
    let name = message["name"].as_str().unwrap_or("message");
    let mut data = json!({ "type": "string", "contentMediaType": "application/json" });
    if let Some(payload) = message.get("payload") {
        data["contentSchema"] = payload.clone();
    }
    let mut item = json!({
        "type": "object",
        "properties": {
            // A one-value `enum` rather than `const`, which utoipa's model drops.
            "event": { "type": "string", "enum": [name] },
            "data": data,
            "id": {
                "type": "string",
                "description": "The event's position, for Last-Event-ID: `<epoch>-<sequence>`, a composite of every topic's on the multi-topic route.",
            },
        },
        "required": if name == "message" { json!(["data"]) } else { json!(["event", "data"]) },
    });
    if let Some(title) = message.get("title") {
        item["title"] = title.clone();
    }
    if let Some(description) = message.get("description") {
        item["description"] = description.clone();
    }
    item
}

/// The multi-topic route's own query parameters.
fn multi_parameters() -> [Value; 2] {
    [
        json!({
            "name": "topic",
            "in": "query",
            "required": true,
            "description": "A topic of the stream: a route's path with its placeholders and query filled in (`/sse/devices/7`), once per topic.",
            "schema": { "type": "array", "items": { "type": "string" } },
            "style": "form",
            "explode": true,
        }),
        json!({
            "name": crate::multi::POSITION_QUERY,
            "in": "query",
            "required": false,
            "description": "`event`: the stream's starting position comes as a `position` event (its data and id the composite id), for clients that keep dispatched ids only.",
            "schema": { "type": "string", "enum": ["event"] },
        }),
    ]
}

/// Where a stream resumes from: the browser's header, or the query parameter for clients that
/// cannot set headers.
fn resume_parameters() -> [Value; 2] {
    [
        json!({
            "name": "Last-Event-ID",
            "in": "header",
            "required": false,
            "description": "Resume after this event: the events since are replayed, or one `reset` says why not.",
            "schema": { "type": "string" },
        }),
        json!({
            "name": crate::handler::LAST_EVENT_ID_QUERY,
            "in": "query",
            "required": false,
            "description": "As `Last-Event-ID`, for clients that cannot set headers (the header wins).",
            "schema": { "type": "string" },
        }),
    ]
}
