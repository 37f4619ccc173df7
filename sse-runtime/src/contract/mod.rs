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

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::routing::{MethodRouter, get};
use serde_json::Value;

use crate::routes::registered_payloads;

mod asyncapi;
mod typescript;

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
        asyncapi::document(&self.title, &self.version, self.description.as_deref())
    }

    /// TypeScript declarations of the contract: every payload type, and `Events`, the map
    /// from each route's path to its events and their payload types, for a typed client:
    ///
    /// ```standalone_crate
    /// use sse_runtime::contract::Contract;
    ///
    /// #[sse_runtime::sse_topic("alarms", event = "alarm")]
    /// #[derive(serde::Serialize, schemars::JsonSchema)]
    /// struct Alarm {
    ///     level: u8,
    /// }
    ///
    /// let declarations = Contract::new("Plant", "1.0.0").typescript();
    /// assert!(declarations.contains("export interface Alarm {\n  level: number;\n}"));
    /// assert!(declarations.contains("\"/sse/alarms\": {\n    alarm: Alarm;"));
    /// ```
    pub fn typescript(&self) -> String {
        typescript::declarations(&self.asyncapi())
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
