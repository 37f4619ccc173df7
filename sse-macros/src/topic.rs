//! `#[sse_topic(...)]`: its arguments and the item it annotates, parsed into a checked model.

use proc_macro2::{Span, TokenStream};
use syn::{Ident, Item, LitBool, LitStr, Visibility};

use crate::args::{self, Arg};
use crate::ctxt::Ctxt;
use crate::template;

const PATH: &str = "path";
const EVENT: &str = "event";
const CHANGE_DETECTION: &str = "change_detection";
const ACCEPTED: &str = "`path`, `event`, `change_detection`";

/// A checked `#[sse_topic]`.
pub(crate) struct TopicModel {
    pub(crate) item: Item,
    pub(crate) ident: Ident,
    pub(crate) vis: Visibility,
    pub(crate) topic: LitStr,
    /// Placeholders of the topic template, in order (empty for a fixed topic).
    pub(crate) params: Vec<String>,
    pub(crate) path: String,
    pub(crate) event: Option<LitStr>,
    pub(crate) change_detection: bool,
}

pub(crate) fn parse(attr: TokenStream, item: TokenStream) -> syn::Result<TopicModel> {
    let mut ctxt = Ctxt::default();
    let args = args::parse(attr)?;
    let item: Item = syn::parse2(item)?;

    let mut topic: Option<LitStr> = None;
    // A positional argument that is not a string was reported as such, not as "missing".
    let mut malformed_topic = false;
    let mut path: Option<LitStr> = None;
    let mut event: Option<LitStr> = None;
    let mut change_detection: Option<LitBool> = None;
    for arg in &args {
        match arg {
            Arg::Positional(value) if topic.is_none() && !malformed_topic => {
                malformed_topic = true;
                match value {
                    syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(lit), .. }) => {
                        topic = Some(lit.clone());
                    }
                    _ => ctxt.error(value, "the topic must be a string literal, like `#[sse_topic(\"alarms\")]`"),
                }
            }
            Arg::Positional(value) => ctxt.error(
                value,
                format!("unexpected argument: after the topic, options are `key = value` with key one of {ACCEPTED}"),
            ),
            Arg::Named { key, value } => match key.to_string().as_str() {
                PATH => {
                    let lit = args::lit_str(&mut ctxt, key, value, "\"/api/v1/alarms/sse\"");
                    args::set_once(&mut ctxt, &mut path, key, lit);
                }
                EVENT => {
                    let lit = args::lit_str(&mut ctxt, key, value, "\"alarm\"");
                    args::set_once(&mut ctxt, &mut event, key, lit);
                }
                CHANGE_DETECTION => {
                    let lit = args::lit_bool(&mut ctxt, key, value);
                    args::set_once(&mut ctxt, &mut change_detection, key, lit);
                }
                _ => ctxt.error(key, format!("unknown option `{key}`; accepted: {ACCEPTED}")),
            },
        }
    }

    let topic = match topic {
        Some(lit) if lit.value().is_empty() => {
            ctxt.error(&lit, "the topic must not be empty");
            lit
        }
        Some(lit) => lit,
        None => {
            if !malformed_topic {
                ctxt.error_at(
                    Span::call_site(),
                    "missing topic: write `#[sse_topic(\"alarms\")]`",
                );
            }
            LitStr::new("", Span::call_site())
        }
    };
    let params = template::placeholders(&mut ctxt, &topic, "topic");
    template::check_topic_params(&mut ctxt, &topic, &params);
    let path_value = match &path {
        Some(lit) => {
            args::check_path(&mut ctxt, lit);
            let path_params = template::placeholders(&mut ctxt, lit, "path");
            template::check_agreement(&mut ctxt, lit, &path_params, &params);
            lit.value()
        }
        None => format!("/sse/{}", topic.value().trim_start_matches('/')),
    };
    if let Some(lit) = &event {
        let name = lit.value();
        if name.is_empty() || name.contains(['\n', '\r']) {
            ctxt.error(
                lit,
                "the event name must be non-empty and on one line, like `event = \"alarm\"`",
            );
        }
    }

    let (ident, vis, generics) = match &item {
        Item::Struct(s) => (s.ident.clone(), s.vis.clone(), Some(&s.generics)),
        Item::Enum(e) => (e.ident.clone(), e.vis.clone(), Some(&e.generics)),
        Item::Union(u) => {
            ctxt.error(
                u.union_token,
                "#[sse_topic] goes on a struct or an enum, not a union",
            );
            (u.ident.clone(), u.vis.clone(), None)
        }
        Item::Fn(f) => {
            ctxt.error(f.sig.fn_token, "#[sse_topic] goes on a struct or an enum; for an async fn that produces events, use #[sse_poll]");
            (f.sig.ident.clone(), f.vis.clone(), None)
        }
        other => {
            ctxt.error(other, "#[sse_topic] goes on a struct or an enum");
            (
                Ident::new("_", Span::call_site()),
                Visibility::Inherited,
                None,
            )
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
    ctxt.finish()?;
    Ok(TopicModel {
        item,
        ident,
        vis,
        topic,
        params,
        path: path_value,
        event,
        change_detection: change_detection.is_some_and(|b| b.value),
    })
}

/// `DeviceStatus` -> `device_status`, `HTTPError` -> `http_error`.
pub(crate) fn snake_case(name: &str) -> String {
    let name = name.trim_start_matches("r#");
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1);
            let boundary = prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit())
                || (prev.is_some_and(char::is_uppercase) && next.is_some_and(|n| n.is_lowercase()));
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn snake_case_handles_words_acronyms_and_digits() {
        for (input, expected) in [
            ("Alarm", "alarm"),
            ("DeviceStatus", "device_status"),
            ("HTTPError", "http_error"),
            ("Cpu2Load", "cpu2_load"),
            ("already_snake", "already_snake"),
            ("IOStats", "io_stats"),
        ] {
            assert_eq!(snake_case(input), expected);
        }
    }
}
