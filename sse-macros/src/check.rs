//! The validation pass: every rule about what the attributes' values mean, checked over the
//! parsed models, each error recorded once, spanned on the token it is about. What it accepts
//! it returns as a validated spec (`spec`), the only input of code generation.

use proc_macro2::Span;
use syn::{Item, LitStr};

use crate::ast::{self, PollAttr, TopicAttr};
use crate::attr::Attribute;
use crate::ctxt::Ctxt;
use crate::duration;
use crate::spec::{HistorySpec, PollSpec, TopicSpec};
use crate::template;

/// Names the generated publish helpers use for their own parameters.
const RESERVED: &[&str] = &["manager", "value"];

/// `history`, `history_bytes` and `retention`: integers that fit a `usize`, a duration.
fn history(ctxt: &mut Ctxt, history: ast::History) -> HistorySpec {
    for lit in [&history.events, &history.bytes].into_iter().flatten() {
        if let Err(error) = lit.base10_parse::<u32>() {
            ctxt.error(
                lit,
                format!("expected a count from 0 to {}: {error}", u32::MAX),
            );
        }
    }
    let retention = duration(ctxt, history.retention.as_ref(), duration::parse_retention);
    HistorySpec {
        events: history.events,
        bytes: history.bytes,
        retention,
    }
}

/// A duration option, parsed by `parse`; its error is recorded on the literal.
fn duration(
    ctxt: &mut Ctxt,
    lit: Option<&LitStr>,
    parse: fn(&str) -> Result<std::time::Duration, String>,
) -> Option<std::time::Duration> {
    let lit = lit?;
    parse(&lit.value())
        .map_err(|message| ctxt.error(lit, message))
        .ok()
}

pub(crate) fn topic(ctxt: &mut Ctxt, mut model: TopicAttr) -> Option<TopicSpec> {
    let errors = ctxt.count();
    let history = history(ctxt, std::mem::take(&mut model.history));
    let path = model.path();
    let topic = match (&model.topic, model.topic_lit()) {
        (None, _) => {
            ctxt.error_at(
                Span::call_site(),
                "missing topic: write `#[sse_topic(\"alarms\")]`",
            );
            None
        }
        (Some(value), None) => {
            ctxt.error(
                value,
                "the topic must be a string literal, like `#[sse_topic(\"alarms\")]`",
            );
            None
        }
        (Some(_), Some(lit)) => Some(lit),
    };
    for value in &model.extra {
        ctxt.error(
            value,
            format!(
                "unexpected argument: after the topic, options are `key = value` with key one of {}",
                Attribute::Topic.accepted()
            ),
        );
    }
    if let Some(topic) = &topic {
        if topic.value().is_empty() {
            ctxt.error(topic, "the topic must not be empty");
        }
        template_errors(ctxt, topic, "topic");
        for name in template::placeholders(&topic.value()) {
            if RESERVED.contains(&name.as_str()) {
                ctxt.error(topic, format!("placeholder `{{{name}}}` clashes with a parameter of the generated publish helper; rename it"));
            }
        }
    }
    if let Some(path) = &model.path {
        path_errors(ctxt, path);
        if let Some(topic) = &topic {
            agreement(ctxt, path, topic);
        }
    }
    event_name(ctxt, model.event.as_ref(), "event = \"alarm\"");
    let generics = match &model.item {
        Item::Struct(s) => Some(&s.generics),
        Item::Enum(e) => Some(&e.generics),
        Item::Union(u) => {
            ctxt.error(
                u.union_token,
                "#[sse_topic] goes on a struct or an enum, not a union",
            );
            None
        }
        Item::Fn(f) => {
            ctxt.error(f.sig.fn_token, "#[sse_topic] goes on a struct or an enum; for an async fn that produces events, use #[sse_poll]");
            None
        }
        other => {
            ctxt.error(other, "#[sse_topic] goes on a struct or an enum");
            None
        }
    };
    if let Some(generics) = generics
        && !generics.params.is_empty()
    {
        ctxt.error(
            generics,
            "#[sse_topic] does not support generic types: a topic has one payload type",
        );
    }
    let (ident, vis) = model.ident().map(|(i, v)| (i.clone(), v.clone()))?;
    let TopicAttr {
        item,
        event,
        change_detection,
        guard,
        ..
    } = model;
    let topic = topic?;
    (ctxt.count() == errors).then(|| TopicSpec {
        item,
        ident,
        vis,
        params: template::placeholders(&topic.value()),
        topic,
        path,
        event,
        change_detection: change_detection.unwrap_or(false),
        guard,
        history,
    })
}

pub(crate) fn poll(ctxt: &mut Ctxt, mut model: PollAttr) -> Option<PollSpec> {
    let errors = ctxt.count();
    let history = history(ctxt, std::mem::take(&mut model.history));
    let path = model.path();
    for value in &model.positional {
        ctxt.error(
            value,
            format!(
                "#[sse_poll] takes `key = value` options only, with key one of {}",
                Attribute::Poll.accepted()
            ),
        );
    }
    let interval = duration(ctxt, model.interval.as_ref(), duration::parse);
    event_name(ctxt, model.event.as_ref(), "event = \"build\"");
    event_name(
        ctxt,
        model.error_event.as_ref(),
        "error_event = \"build-error\"",
    );
    if let Some(lit) = &model.topic
        && lit.value().is_empty()
    {
        ctxt.error(
            lit,
            "the topic must not be empty; leave `topic` out to use the request's path and query",
        );
    }
    let function = match &model.item {
        Item::Fn(function) => function,
        Item::Struct(s) => {
            ctxt.error(
                s.struct_token,
                "#[sse_poll] goes on an async fn; for an event type, use #[sse_topic]",
            );
            return None;
        }
        other => {
            ctxt.error(other, "#[sse_poll] goes on an async fn");
            return None;
        }
    };
    let sig = &function.sig;
    if sig.asyncness.is_none() {
        ctxt.error(sig.fn_token, "#[sse_poll] needs an `async fn`");
    }
    if let Some(receiver) = sig.receiver() {
        ctxt.error(
            receiver,
            "#[sse_poll] cannot be used on a method with `self`: use a free async fn",
        );
    }
    if !sig.generics.params.is_empty() {
        ctxt.error(
            &sig.generics,
            "#[sse_poll] does not support generic functions",
        );
    }
    let inputs = ast::inputs(function);
    for input in &inputs {
        let ast::Input::Extractor(ty) = input else {
            continue;
        };
        if ast::is_state(ty) {
            ctxt.error(
                ty,
                "`State` needs the router's state type, but the routes of `router()` come from every \
                 crate of the binary and have none: add the value to the router with \
                 `.layer(Extension(value))` and take `Extension<T>` here",
            );
        }
        if let Some(arity) = ast::path_arity(ty) {
            let names = template::placeholders(&path);
            if names.is_empty() {
                ctxt.error(
                    ty,
                    format!(
                        "`Path` reads the route's `{{placeholders}}`, and the path \"{path}\" has none: \
                         add them to `path = \"{path}/{{id}}\"`, or read the query with `Query`"
                    ),
                );
            } else if let Some(arity) = arity.filter(|&n| n != names.len()) {
                let list: Vec<String> = names.iter().map(|n| format!("{{{n}}}")).collect();
                ctxt.error(
                    ty,
                    format!(
                        "this `Path` reads {arity} placeholder{}, and the path \"{path}\" has {}: {}",
                        if arity == 1 { "" } else { "s" },
                        names.len(),
                        list.join(", ")
                    ),
                );
            }
        }
        if let Some(name) = ast::per_subscriber(ty) {
            ctxt.error(
                ty,
                format!(
                    "`{name}` reads one subscriber's headers, cookies or address, but an #[sse_poll] \
                     function runs for every subscriber of its topic and never sees them: put what it \
                     needs in the path or query, and check the caller with `guard = ...`"
                ),
            );
        }
    }
    let output = ast::output(function).cloned();
    if output.is_none() {
        ctxt.error(&sig.ident, "an #[sse_poll] function must return `Result<T, E>` with `T: Serialize` and `E: Into<PollError>`");
    }
    if let Some(path) = &model.path {
        path_errors(ctxt, path);
    }
    if let Some(lit) = model.end_on_stop.as_ref().filter(|lit| lit.value)
        && model.stop_when.is_none()
    {
        ctxt.error(
            lit,
            "`end_on_stop` ends the streams when the poller stops, and without `stop_when` it \
             never stops: add `stop_when = ...`",
        );
    }
    let PollAttr {
        item,
        stop_when,
        on_stop,
        end_on_stop,
        topic,
        api_version,
        event,
        error_event,
        change_detection,
        guard,
        ..
    } = model;
    let (Item::Fn(function), Some(output)) = (item, output) else {
        return None;
    };
    (ctxt.count() == errors).then(|| PollSpec {
        function,
        inputs,
        output,
        interval,
        stop_when,
        on_stop,
        end_on_stop: end_on_stop.is_some_and(|lit| lit.value),
        topic,
        api_version,
        event,
        error_event,
        change_detection: change_detection.unwrap_or(true),
        guard,
        path,
        history,
    })
}

/// An event name: non-empty, on one line.
fn event_name(ctxt: &mut Ctxt, lit: Option<&LitStr>, example: &str) {
    if let Some(lit) = lit {
        let name = lit.value();
        if name.is_empty() || name.contains(['\n', '\r']) {
            ctxt.error(
                lit,
                format!("the event name must be non-empty and on one line, like `{example}`"),
            );
        }
    }
}

/// A route path: it starts with `/` and its placeholders are well formed.
fn path_errors(ctxt: &mut Ctxt, path: &LitStr) {
    let value = path.value();
    if !value.starts_with('/') {
        ctxt.error(
            path,
            format!(
                "the path must start with `/`, like \"/{}\"",
                value.trim_start_matches('/')
            ),
        );
    }
    template_errors(ctxt, path, "path");
}

fn template_errors(ctxt: &mut Ctxt, lit: &LitStr, what: &str) {
    for error in template::scan(&lit.value()).1 {
        ctxt.error(lit, error.message(what));
    }
}

/// The route path captures exactly the topic template's placeholders.
fn agreement(ctxt: &mut Ctxt, path: &LitStr, topic: &LitStr) {
    let path_names = template::placeholders(&path.value());
    let topic_names = template::placeholders(&topic.value());
    let missing: Vec<&String> = topic_names
        .iter()
        .filter(|n| !path_names.contains(n))
        .collect();
    let extra: Vec<&String> = path_names
        .iter()
        .filter(|n| !topic_names.contains(n))
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return;
    }
    let list = |names: &[&String]| {
        names
            .iter()
            .map(|n| format!("{{{n}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut message = String::from("template parameter mismatch between topic and path:");
    if !missing.is_empty() {
        message.push_str(&format!(" the path lacks {}", list(&missing)));
    }
    if !extra.is_empty() {
        if !missing.is_empty() {
            message.push(';');
        }
        message.push_str(&format!(" the topic lacks {}", list(&extra)));
    }
    message.push_str(". Every topic placeholder must be a path parameter and vice versa.");
    ctxt.error(path, message);
}
