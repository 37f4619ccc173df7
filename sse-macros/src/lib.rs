//! Procedural macros of `sse-runtime`: `#[sse_topic]` and `#[sse_poll]`. Depend on
//! `sse-runtime`, which re-exports them; the generated code refers to it.
//!
//! Each attribute goes through three phases, as in serde_derive and thiserror:
//!
//! 1. `attr` and `ast` parse the arguments (against one option table shared by both
//!    attributes) and the annotated item into a typed model;
//! 2. `check` validates the whole model, recording every error in one `Ctxt`, each spanned on
//!    the token it is about, so the user sees them all at once, and returns what it accepted as
//!    a validated spec (`spec`: durations parsed, placeholders listed);
//! 3. `expand` generates code from the spec alone, naming every runtime item through
//!    `::sse_runtime::__private`; it parses nothing again and cannot fail.

use proc_macro::TokenStream;

use crate::ctxt::Ctxt;

mod ast;
mod attr;
mod check;
mod ctxt;
mod duration;
mod expand;
mod spec;
mod template;

/// Gives an event type (a struct or enum that implements `Serialize`) its topic, typed publish
/// helpers and an SSE route.
///
/// `#[sse_topic("alarms")]` on `struct Alarm` generates:
///
/// - `impl SseTopic for Alarm` (`Alarm::TOPIC == "alarms"`, `Alarm::EVENT`, `Alarm::PATH`);
/// - `fn publish_alarm(value: &Alarm)`, publishing on [`Manager::global`], and
///   `fn publish_alarm_to(manager: &Manager, value: &Alarm)`: an event of another type, or to
///   another topic, does not compile;
/// - a route (default path `/sse/<topic>`) that [`router`] mounts.
///
/// Options: `path = "/api/v1/alarms/sse"` (must start with `/`), `event = "alarm"` (the SSE
/// `event:` name, for `addEventListener`), `change_detection = true` (skip a payload identical to
/// the previous one; default `false`), `guard = <path>` (see [guards](../sse_runtime/guard/index.html)),
/// and the topic's history, overriding the manager's: `history = 256` (events kept for
/// resume), `history_bytes = 65536`, `retention = "60s"` (how long the history outlives the
/// last subscriber; `"0s"` for not at all).
///
/// `publish_alarm` publishes into the global manager, which [`router`] serves; configure it
/// once at start-up with `Manager::builder()...install()`. With `router_with(&manager)`, publish
/// with `publish_alarm_to(&manager, ..)`: a plain `publish_alarm` then reaches no route, and is
/// logged as an error and counted in `Stats::unrouted`.
///
/// A topic template, `#[sse_topic("devices/{id}")]`, makes one topic per value: the helpers take
/// the placeholders first (`publish_device(id, &value)`) and the route captures them as path
/// parameters (default path `/sse/devices/{id}`; a custom path must have the same placeholders).
///
/// ```
/// use serde::Serialize;
/// use sse_runtime::{Manager, SseTopic, sse_topic};
///
/// #[sse_topic("alarms", event = "alarm", path = "/api/v1/alarms/sse")]
/// #[derive(Serialize)]
/// pub struct Alarm {
///     pub device: String,
///     pub level: u8,
/// }
///
/// #[sse_topic("devices/{id}")]
/// #[derive(Serialize)]
/// pub enum DeviceState {
///     Online,
///     Offline { since: u64 },
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let manager = Manager::new();
/// let mut sub = manager.subscribe("devices/7").unwrap();
/// publish_device_state_to(&manager, 7, &DeviceState::Online);
/// assert!(sub.recv().await.unwrap().ends_with(b"data: \"Online\"\n\n"));
/// publish_alarm(&Alarm { device: "pump".into(), level: 3 }); // global manager
/// assert_eq!(Alarm::PATH, "/api/v1/alarms/sse");
/// assert_eq!(<DeviceState as SseTopic>::PATH, "/sse/devices/{id}");
/// # }
/// ```
///
/// [`Manager::global`]: ../sse_runtime/manager/struct.Manager.html#method.global
/// [`router`]: ../sse_runtime/routes/fn.router.html
#[proc_macro_attribute]
pub fn sse_topic(attr: TokenStream, item: TokenStream) -> TokenStream {
    pipeline(
        attr,
        item,
        ast::TopicAttr::parse,
        check::topic,
        expand::topic,
    )
}

/// Turns an async fn into a poller with its own SSE route: the function runs on an interval
/// while the route's topic has subscribers, and each result is published to them.
///
/// The function returns `Result<T, E>` (`T: Serialize`; `E` a `PollError`, or any
/// `std::error::Error`, which subscribers see as a generic `500`: see `PollError`) and may take axum
/// extractors (`Path`, `Query`, `Extension`, ... anything `FromRequestParts<()>`, but nothing
/// that reads one subscriber's headers, cookies or address: the poller is shared), run
/// before every poll, and a `CancellationToken`, cancelled when polling stops. The topic is
/// made of what the function reads: the request's path (decoded), plus, for each `Query<T>` it
/// takes, the query parameters `T` reads (decoded, sorted, re-encoded), so a parameter it never
/// reads never starts a poller of its own (`/sse/builds/7?junk=1` and `?junk=2` share one),
/// different values of one it reads get different pollers, and equal ones share one. A function
/// that takes an extractor that may read the query its own way (`RawQuery`, `OriginalUri`, one
/// of yours) keeps the whole canonical query in its topic. `topic = "..."` fixes the topic.
///
/// Options: `interval = "5s"` (a positive duration with a unit, checked at compile time;
/// default 5 s), `stop_when = <closure or path>` (a `Fn(&T) -> bool`; polling stops after
/// publishing a value for which it holds), `on_stop = <closure or path>` (a `Fn()`, called once
/// per start), `path = "/api/v1/devices/sse"` (default `/sse/<fn name>`), `topic = "devices"`,
/// `api_version = "v2"` (for error payloads; default `v1`), `change_detection = false` (default
/// `true`), `guard = <path>`, and `history`, `history_bytes`, `retention` as on `#[sse_topic]`.
///
/// **After `stop_when` holds**, the value that met it is published and the poller stops (and
/// `on_stop` runs). The streams stay open, with heartbeats only, for as long as their clients
/// keep them; a client that subscribes meanwhile gets that final value at once, under its id
/// (with change detection on, the default, a newcomer starts on the topic's newest event). A
/// new poller starts once every subscriber has left and the linger has passed. A page that
/// has what it waited for closes its `EventSource` itself (`source.close()` on the final
/// value), which frees its connection.
///
/// ```
/// use axum::extract::Query;
/// use serde::{Deserialize, Serialize};
/// use sse_runtime::{PollError, sse_poll};
///
/// #[derive(Clone, Deserialize)]
/// struct DeviceQuery {
///     label: String,
/// }
///
/// #[derive(Serialize)]
/// struct Devices {
///     online: Vec<String>,
///     total: usize,
/// }
///
/// impl Devices {
///     fn all_online(&self) -> bool {
///         self.online.len() == self.total
///     }
/// }
///
/// #[sse_poll(interval = "2s", stop_when = Devices::all_online, path = "/api/v1/devices/sse")]
/// async fn devices(Query(q): Query<DeviceQuery>) -> Result<Devices, PollError> {
///     Ok(Devices { online: vec![q.label], total: 2 })
/// }
///
/// let app: axum::Router = sse_runtime::router(); // GET /api/v1/devices/sse?label=a
/// ```
#[proc_macro_attribute]
pub fn sse_poll(attr: TokenStream, item: TokenStream) -> TokenStream {
    pipeline(attr, item, ast::PollAttr::parse, check::poll, expand::poll)
}

/// Parse, check, expand: the model of what the user wrote, the spec of what the check pass
/// accepted, the code generated from the spec alone. Every error of the first two passes is
/// reported, together, with the item left as written (so the user's code still resolves).
fn pipeline<M, S>(
    attr: TokenStream,
    item: TokenStream,
    parse: fn(&mut Ctxt, proc_macro2::TokenStream, proc_macro2::TokenStream) -> syn::Result<M>,
    check: fn(&mut Ctxt, M) -> Option<S>,
    expand: fn(S) -> proc_macro2::TokenStream,
) -> TokenStream {
    let original = proc_macro2::TokenStream::from(item.clone());
    let mut ctxt = Ctxt::default();
    let checked = parse(&mut ctxt, attr.into(), item.into()).map(|model| check(&mut ctxt, model));
    match (checked, ctxt.finish()) {
        (Ok(Some(spec)), Ok(())) => expand(spec).into(),
        (Ok(None), Ok(())) => with_item(
            syn::Error::new(
                proc_macro2::Span::call_site(),
                "internal error in sse-macros: the item was refused without a reason; please report it",
            ),
            original,
        ),
        (Ok(_), Err(errors)) => with_item(errors, original),
        (Err(mut error), errors) => {
            if let Err(errors) = errors {
                error.combine(errors);
            }
            with_item(error, original)
        }
    }
}

fn with_item(error: syn::Error, item: proc_macro2::TokenStream) -> TokenStream {
    let error = error.to_compile_error();
    quote::quote!(#error #item).into()
}
