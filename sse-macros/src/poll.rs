//! `#[sse_poll(...)]`: its arguments and the function it annotates, parsed into a checked model.

use std::time::Duration;

use proc_macro2::TokenStream;
use syn::{Expr, FnArg, Item, ItemFn, LitBool, LitStr, ReturnType, Type};

use crate::args::{self, Arg};
use crate::ctxt::Ctxt;
use crate::duration;
use crate::template;

const INTERVAL: &str = "interval";
const STOP_WHEN: &str = "stop_when";
const ON_STOP: &str = "on_stop";
const PATH: &str = "path";
const TOPIC: &str = "topic";
const API_VERSION: &str = "api_version";
const CHANGE_DETECTION: &str = "change_detection";
const ACCEPTED: &str =
    "`interval`, `stop_when`, `on_stop`, `path`, `topic`, `api_version`, `change_detection`";

/// One argument of the polled function.
pub(crate) enum Input {
    /// Built from the request by this axum extractor (`FromRequestParts`), once per request.
    Extractor(Box<Type>),
    /// The poll's cancellation token.
    Cancellation,
}

/// A checked `#[sse_poll]`.
pub(crate) struct PollModel {
    pub(crate) function: ItemFn,
    pub(crate) inputs: Vec<Input>,
    /// The declared return type (for spans of errors about it).
    pub(crate) output: Type,
    pub(crate) interval: Option<Duration>,
    pub(crate) stop_when: Option<Expr>,
    pub(crate) on_stop: Option<Expr>,
    pub(crate) path: String,
    pub(crate) topic: Option<LitStr>,
    pub(crate) api_version: Option<LitStr>,
    pub(crate) change_detection: bool,
}

pub(crate) fn parse(attr: TokenStream, item: TokenStream) -> syn::Result<PollModel> {
    let mut ctxt = Ctxt::default();
    let args = args::parse(attr)?;
    let item: Item = syn::parse2(item)?;

    let mut interval: Option<Option<Duration>> = None;
    let mut stop_when: Option<Expr> = None;
    let mut on_stop: Option<Expr> = None;
    let mut path: Option<LitStr> = None;
    let mut topic: Option<LitStr> = None;
    let mut api_version: Option<LitStr> = None;
    let mut change_detection: Option<LitBool> = None;
    for arg in &args {
        match arg {
            Arg::Positional(value) => ctxt.error(
                value,
                format!("#[sse_poll] takes `key = value` options only, with key one of {ACCEPTED}"),
            ),
            Arg::Named { key, value } => match key.to_string().as_str() {
                INTERVAL => {
                    let parsed = args::lit_str(&mut ctxt, key, value, "\"5s\"")
                        .map(|lit| duration::parse(&mut ctxt, &lit));
                    args::set_once(&mut ctxt, &mut interval, key, parsed);
                }
                STOP_WHEN => args::set_once(&mut ctxt, &mut stop_when, key, Some(value.clone())),
                ON_STOP => args::set_once(&mut ctxt, &mut on_stop, key, Some(value.clone())),
                PATH => {
                    let lit = args::lit_str(&mut ctxt, key, value, "\"/api/v1/devices/sse\"");
                    args::set_once(&mut ctxt, &mut path, key, lit);
                }
                TOPIC => {
                    let lit = args::lit_str(&mut ctxt, key, value, "\"devices\"");
                    args::set_once(&mut ctxt, &mut topic, key, lit);
                }
                API_VERSION => {
                    let lit = args::lit_str(&mut ctxt, key, value, "\"v2\"");
                    args::set_once(&mut ctxt, &mut api_version, key, lit);
                }
                CHANGE_DETECTION => {
                    let lit = args::lit_bool(&mut ctxt, key, value);
                    args::set_once(&mut ctxt, &mut change_detection, key, lit);
                }
                _ => ctxt.error(key, format!("unknown option `{key}`; accepted: {ACCEPTED}")),
            },
        }
    }
    if let Some(lit) = &topic
        && lit.value().is_empty()
    {
        ctxt.error(
            lit,
            "the topic must not be empty; leave `topic` out to use the request's path and query",
        );
    }

    let function = match item {
        Item::Fn(function) => function,
        Item::Struct(s) => {
            ctxt.error(
                s.struct_token,
                "#[sse_poll] goes on an async fn; for an event type, use #[sse_topic]",
            );
            return Err(ctxt.finish().expect_err("an error was recorded"));
        }
        other => {
            ctxt.error(other, "#[sse_poll] goes on an async fn");
            return Err(ctxt.finish().expect_err("an error was recorded"));
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
    let output = match &sig.output {
        ReturnType::Type(_, ty) => (**ty).clone(),
        ReturnType::Default => {
            ctxt.error(&sig.ident, "an #[sse_poll] function must return `Result<T, E>` with `T: Serialize` and `E: Into<PollError>`");
            syn::parse_quote!(())
        }
    };
    let inputs = sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(typed) if is_cancellation_token(&typed.ty) => Some(Input::Cancellation),
            FnArg::Typed(typed) => Some(Input::Extractor(typed.ty.clone())),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let path_value = match &path {
        Some(lit) => {
            args::check_path(&mut ctxt, lit);
            template::placeholders(&mut ctxt, lit, "path");
            lit.value()
        }
        None => format!("/sse/{}", sig.ident),
    };
    ctxt.finish()?;
    Ok(PollModel {
        inputs,
        output,
        interval: interval.flatten(),
        stop_when,
        on_stop,
        path: path_value,
        topic,
        api_version,
        change_detection: change_detection.is_none_or(|b| b.value),
        function,
    })
}

fn is_cancellation_token(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.path.segments.last().is_some_and(|s| s.ident == "CancellationToken"))
}
