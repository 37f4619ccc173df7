//! The event contract (cargo feature `schema`): every route the macros registered, with its
//! events and their payloads' JSON Schemas, as an [AsyncAPI 3.0] document.
//!
//! A payload type gets its schema from `#[derive(schemars::JsonSchema)]` next to its
//! `Serialize`; one without is still served, and the document says that its payload has no
//! schema ([`Contract::missing_schemas`] lists them, for a test that wants none). That is not
//! a compile error on purpose: cargo enables a feature for every crate of a build once one
//! crate asks for it, and a feature must not turn code that compiles into an error.
//!
//! Each route is a channel (its path, with its `{placeholders}` as parameters) with one message
//! per event it sends: its values (named by `event = "..."`, else `message`, the name a browser
//! dispatches unnamed events under), `reset` (a `Last-Event-ID` it could not resume from),
//! and, for a polled route, its failed polls (`poll-error` unless `error_event` renames it) and,
//! with `end_on_stop`, `end`. An operation per channel says the application sends them.
//!
//! (The examples are crates of their own: the document holds every route of its binary.)
//!
//! ```standalone_crate
//! use serde::Serialize;
//! use sse_runtime::contract::Contract;
//! use sse_runtime::sse_topic;
//!
//! #[sse_topic("alarms", event = "alarm")]
//! #[derive(Serialize, schemars::JsonSchema)]
//! struct Alarm {
//!     device: String,
//!     level: u8,
//! }
//!
//! let document = Contract::new("Plant", "1.0.0").asyncapi();
//! assert_eq!(document["asyncapi"], "3.0.0");
//! let channel = &document["channels"]["sse.alarms"];
//! assert_eq!(channel["address"], "/sse/alarms");
//! assert_eq!(channel["messages"]["alarm"]["name"], "alarm");
//! let alarm = &document["components"]["schemas"]["Alarm"];
//! assert_eq!(alarm["properties"]["level"]["type"], "integer");
//! ```
//!
//! [AsyncAPI 3.0]: https://www.asyncapi.com/docs/reference/specification/v3.0.0

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::routing::{MethodRouter, get};
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::routes::{RouteInfo, RouteKind, registered_payloads};

/// The document's title and version, and how to make it. See the [module](self).
#[derive(Clone, Debug)]
pub struct Contract {
    title: String,
    version: String,
    description: Option<String>,
}

impl Contract {
    /// The contract of every registered route, for an application named `title` at `version`
    /// (the application's version, not the framework's).
    pub fn new(title: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            version: version.into(),
            description: None,
        }
    }

    /// A description for the document's `info`.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// The items whose payload has no JSON Schema (their type does not derive
    /// `schemars::JsonSchema`), with their module path. Empty in an application whose
    /// contract is complete:
    ///
    /// ```standalone_crate
    /// let contract = sse_runtime::contract::Contract::new("Plant", "1.0.0");
    /// assert_eq!(contract.missing_schemas(), Vec::<&str>::new());
    /// ```
    pub fn missing_schemas(&self) -> Vec<&'static str> {
        registered_payloads()
            .into_iter()
            .filter(|(_, payload)| payload.is_none())
            .map(|(route, _)| route.item)
            .collect()
    }

    /// The AsyncAPI 3.0 document, as JSON.
    pub fn asyncapi(&self) -> Value {
        let mut generator = SchemaSettings::draft07()
            .with(|settings| settings.definitions_path = "/components/schemas".into())
            .for_serialize()
            .into_generator();
        let mut channels = Map::new();
        let mut operations = Map::new();
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        for (route, payload) in registered_payloads() {
            let id = channel_id(route.path, &mut ids);
            let payload = payload.map(|payload| Value::from((payload.schema)(&mut generator)));
            let (channel, message_ids) = channel(&route, payload);
            let messages: Vec<Value> = message_ids
                .iter()
                .map(|message| json!({ "$ref": format!("#/channels/{id}/messages/{message}") }))
                .collect();
            operations.insert(
                format!("{id}.send"),
                json!({
                    "action": "send",
                    "channel": { "$ref": format!("#/channels/{id}") },
                    "summary": format!("The events of {}", route.path),
                    "messages": messages,
                }),
            );
            channels.insert(id, channel);
        }
        let mut schemas = generator.take_definitions(true);
        for (name, schema) in framework_schemas() {
            schemas.insert(name.to_owned(), schema);
        }
        let mut info = json!({ "title": self.title, "version": self.version });
        if let Some(description) = &self.description {
            info["description"] = Value::from(description.clone());
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

    /// A `GET` route serving the document (as `application/json`), made once, on first
    /// request:
    ///
    /// ```standalone_crate
    /// use sse_runtime::contract::Contract;
    ///
    /// let app: axum::Router = sse_runtime::router()
    ///     .route("/asyncapi.json", Contract::new("Plant", "1.0.0").route());
    /// ```
    pub fn route<S: Clone + Send + Sync + 'static>(self) -> MethodRouter<S> {
        let document: Arc<OnceLock<Value>> = Arc::default();
        get(move || {
            let document = document.clone();
            let contract = self.clone();
            async move { Json(document.get_or_init(|| contract.asyncapi()).clone()) }
        })
    }
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
                "Polled every {} ms while subscribed (`#[sse_poll]` on `{}`); a new value is sent when it changed.",
                interval.as_millis(),
                route.item
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

/// The schemas of the framework's own payloads.
fn framework_schemas() -> [(&'static str, Value); 3] {
    [
        (
            "SseReset",
            json!({
                "type": "object",
                "description": "The stream could not resume from the client's Last-Event-ID; what was missed must be fetched another way.",
                "properties": {
                    "reason": {
                        "type": "string",
                        "enum": ["malformed-last-event-id", "unknown-epoch", "history-expired", "history-exceeded", "unknown-sequence"],
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
