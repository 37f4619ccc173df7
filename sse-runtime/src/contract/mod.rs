//! The event contract (cargo feature `schema`): every route the macros registered, with its
//! events and their payloads' JSON Schemas, as an [AsyncAPI 3.0] document; from it, the SSE
//! routes for OpenAPI 3.2 ([`Contract::openapi`], and as utoipa's model with the feature
//! `utoipa`, to merge into an application's document) and TypeScript declarations
//! ([`Contract::typescript`]) for the typed browser client ([`CLIENT_JS`]).
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
use std::time::Duration;

use axum::Json;
use axum::routing::{MethodRouter, get};
use serde_json::Value;

use crate::routes::{Payload, RouteInfo, RouteKind, registered_payloads};

mod asyncapi;
mod openapi;
mod typescript;

/// The document's title and version, and how to make it. See the [module](self).
#[derive(Clone, Debug)]
pub struct Contract {
    title: String,
    version: String,
    description: Option<String>,
    /// Routes built by hand, declared with [`with_route`](Self::with_route).
    declared: Vec<(RouteInfo, Option<Payload>)>,
    /// The path of the multi-topic route, if it is in the document.
    multi: Option<&'static str>,
}

/// The typed browser client: an ES module (no build step) that subscribes to any set of
/// routes on one `EventSource` of the multi-topic route, with handlers typed per route and
/// event from the generated `Events` (its declarations are [`CLIENT_DTS`]). Serve it with
/// [`client_route`], or copy it.
pub const CLIENT_JS: &str = include_str!("../../assets/sse-client.js");

/// The TypeScript declarations of [`CLIENT_JS`] (`sse-client.d.ts`).
pub const CLIENT_DTS: &str = include_str!("../../assets/sse-client.d.ts");

/// A `GET` route serving [`CLIENT_JS`] as `text/javascript`:
///
/// ```
/// let app: axum::Router = axum::Router::new()
///     .route("/sse-client.js", sse_runtime::contract::client_route());
/// ```
pub fn client_route<S: Clone + Send + Sync + 'static>() -> MethodRouter<S> {
    get(|| async {
        (
            [(http::header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            CLIENT_JS,
        )
    })
}

/// A route built by hand with [`SseHandler`](crate::SseHandler), declared to the contract
/// with its payload type (the macros' routes declare themselves):
///
/// ```standalone_crate
/// use std::time::Duration;
/// use sse_runtime::contract::{Contract, HandRoute};
///
/// #[derive(serde::Serialize, schemars::JsonSchema)]
/// struct Tick {
///     n: u64,
/// }
///
/// let contract = Contract::new("Clock", "1.0.0")
///     .with_route(HandRoute::pushed::<Tick>("/sse/{topic}").event("tick"));
/// let document = contract.asyncapi();
/// assert_eq!(document["channels"]["sse.topic"]["messages"]["tick"]["payload"]["$ref"], "#/components/schemas/Tick");
/// ```
#[derive(Clone, Debug)]
pub struct HandRoute {
    info: RouteInfo,
    payload: Payload,
}

impl HandRoute {
    fn new<T: schemars::JsonSchema>(path: &'static str, kind: RouteKind) -> Self {
        Self {
            info: RouteInfo {
                item: std::any::type_name::<T>(),
                path,
                topic: None,
                event: None,
                kind,
                guarded: false,
                change_detection: false,
            },
            payload: Payload::of::<T>(),
        }
    }

    /// A route at `path` whose events the application publishes, with payloads of type `T`.
    pub fn pushed<T: schemars::JsonSchema>(path: &'static str) -> Self {
        Self::new::<T>(path, RouteKind::Pushed)
    }

    /// A route at `path` with a poller of `T` values every `interval` (its failed polls are
    /// `poll-error` events, see [`error_event`](Self::error_event)).
    pub fn polled<T: schemars::JsonSchema>(path: &'static str, interval: Duration) -> Self {
        let kind = RouteKind::Polled {
            interval,
            error_event: crate::producer::DEFAULT_ERROR_EVENT,
            end_on_stop: false,
        };
        let mut route = Self::new::<T>(path, kind);
        route.info.change_detection = true;
        route
    }

    /// The event name of its values (else they are unnamed: `message` in a browser).
    #[must_use]
    pub fn event(mut self, name: &'static str) -> Self {
        self.info.event = Some(name);
        self
    }

    /// The event name of a polled route's failed polls.
    #[must_use]
    pub fn error_event(mut self, name: &'static str) -> Self {
        if let RouteKind::Polled { error_event, .. } = &mut self.info.kind {
            *error_event = name;
        }
        self
    }

    /// A polled route whose streams end when the poller stops (`end` event).
    #[must_use]
    pub fn end_on_stop(mut self) -> Self {
        if let RouteKind::Polled { end_on_stop, .. } = &mut self.info.kind {
            *end_on_stop = true;
        }
        self
    }

    /// Whether a value identical to the one before is skipped.
    #[must_use]
    pub fn change_detection(mut self, on: bool) -> Self {
        self.info.change_detection = on;
        self
    }

    /// A route with a guard.
    #[must_use]
    pub fn guarded(mut self) -> Self {
        self.info.guarded = true;
        self
    }
}

impl Contract {
    /// The contract of every registered route, for an application named `title` at `version`
    /// (the application's version, not the framework's).
    pub fn new(title: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            version: version.into(),
            description: None,
            declared: Vec::new(),
            multi: None,
        }
    }

    /// Puts the multi-topic route ([`MultiHandler`](crate::multi::MultiHandler)) mounted at
    /// `path` in the document: a channel whose messages are every route's, named as that
    /// stream names them (`/sse/alarms#alarm`).
    #[must_use]
    pub fn multi_topic_route(mut self, path: &'static str) -> Self {
        self.multi = Some(path);
        self
    }

    /// Adds a route built by hand: the macros' routes are in the contract by themselves.
    #[must_use]
    pub fn with_route(mut self, route: HandRoute) -> Self {
        self.declared.push((route.info, Some(route.payload)));
        self
    }

    /// Every route: the registered ones and the declared, sorted by path.
    fn routes(&self) -> Vec<(RouteInfo, Option<Payload>)> {
        let mut routes = registered_payloads();
        routes.extend(self.declared.iter().cloned());
        routes.sort_by(|(a, _), (b, _)| (a.path, a.item).cmp(&(b.path, b.item)));
        routes
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
        self.routes()
            .into_iter()
            .filter(|(_, payload)| payload.is_none())
            .map(|(route, _)| route.item)
            .collect()
    }

    /// The AsyncAPI 3.0 document, as JSON.
    pub fn asyncapi(&self) -> Value {
        asyncapi::document(
            &self.title,
            &self.version,
            self.description.as_deref(),
            self.routes(),
            self.multi,
        )
    }

    /// The SSE routes as an OpenAPI 3.2 document, as JSON: a `GET` path per route whose `200`
    /// answer is `text/event-stream` with an `itemSchema` of its events (each `event`, `data`
    /// as JSON text with the payload's schema, `id`), its path parameters, `Last-Event-ID`
    /// (header, or the `last_event_id` query parameter), the multi-topic route's `topic` list
    /// and the refusals' statuses; the payload schemas in `components/schemas`. Made from the
    /// [AsyncAPI document](Self::asyncapi), so the two cannot disagree. To merge it into an
    /// application's document built with utoipa, see [`utoipa`](Self::utoipa); aide's
    /// `OpenApi` deserializes it too.
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
    /// let document = Contract::new("Plant", "1.0.0").openapi();
    /// assert_eq!(document["openapi"], "3.2.0");
    /// let answer = &document["paths"]["/sse/alarms"]["get"]["responses"]["200"];
    /// let events = &answer["content"]["text/event-stream"]["itemSchema"]["oneOf"];
    /// assert_eq!(events[0]["properties"]["event"]["enum"][0], "alarm");
    /// let data = &events[0]["properties"]["data"];
    /// assert_eq!(data["contentSchema"]["$ref"], "#/components/schemas/Alarm");
    /// ```
    pub fn openapi(&self) -> Value {
        openapi::document(&self.asyncapi())
    }

    /// The [OpenAPI document](Self::openapi) as utoipa's model (cargo feature `utoipa`, utoipa
    /// 6, which models OpenAPI 3.2's `itemSchema`), to merge into the application's own:
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
    /// // The application's document (here by hand; usually `#[derive(OpenApi)]`).
    /// let api = utoipa::openapi::OpenApiBuilder::new()
    ///     .openapi(utoipa::openapi::OpenApiVersion::Version32)
    ///     .build();
    /// let api = api.merge_from(Contract::new("Plant", "1.0.0").utoipa().unwrap());
    /// assert!(api.paths.paths.contains_key("/sse/alarms"));
    /// ```
    ///
    /// # Errors
    ///
    /// A payload schema that utoipa's model cannot hold.
    #[cfg(feature = "utoipa")]
    #[cfg_attr(docsrs, doc(cfg(feature = "utoipa")))]
    pub fn utoipa(&self) -> Result<utoipa::openapi::OpenApi, serde_json::Error> {
        serde_json::from_value(self.openapi())
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
        self.served(Self::asyncapi)
    }

    /// A `GET` route serving the [OpenAPI document](Self::openapi), as [`route`](Self::route)
    /// serves the AsyncAPI one:
    ///
    /// ```standalone_crate
    /// use sse_runtime::contract::Contract;
    ///
    /// let app: axum::Router = sse_runtime::router()
    ///     .route("/openapi.json", Contract::new("Plant", "1.0.0").openapi_route());
    /// ```
    pub fn openapi_route<S: Clone + Send + Sync + 'static>(self) -> MethodRouter<S> {
        self.served(Self::openapi)
    }

    /// A `GET` route serving the document `make` makes, once, on first request.
    fn served<S: Clone + Send + Sync + 'static>(self, make: fn(&Self) -> Value) -> MethodRouter<S> {
        let document: Arc<OnceLock<Value>> = Arc::default();
        get(move || {
            let document = document.clone();
            let contract = self.clone();
            async move { Json(document.get_or_init(|| make(&contract)).clone()) }
        })
    }
}
