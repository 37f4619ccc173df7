//! The typed models of both attributes: what the user wrote, parsed, not yet checked.
//!
//! A model is built even from arguments with errors (a missing value is `None`), so the check
//! pass can report everything at once.

use proc_macro2::TokenStream;
use syn::{Expr, FnArg, Ident, Item, ItemFn, LitInt, LitStr, ReturnType, Type};

use crate::attr::{self, API_VERSION, Args, Attribute, CHANGE_DETECTION, ERROR_EVENT, EVENT};
use crate::attr::{END_ON_STOP, INTERVAL};
use crate::attr::{GUARD, HISTORY, HISTORY_BYTES, ON_STOP, PATH, RETENTION, STOP_WHEN, TOPIC};
use crate::ctxt::Ctxt;

/// `#[sse_topic(...)]` and the item under it.
pub(crate) struct TopicAttr {
    pub(crate) item: Item,
    /// The first positional argument, whatever it is (`check` wants a string literal).
    pub(crate) topic: Option<Expr>,
    /// Positional arguments after the topic.
    pub(crate) extra: Vec<Expr>,
    pub(crate) path: Option<LitStr>,
    pub(crate) event: Option<LitStr>,
    pub(crate) change_detection: Option<bool>,
    pub(crate) guard: Option<Expr>,
    pub(crate) history: History,
}

/// The per-topic history options both attributes take.
#[derive(Default)]
pub(crate) struct History {
    pub(crate) events: Option<LitInt>,
    pub(crate) bytes: Option<LitInt>,
    pub(crate) retention: Option<LitStr>,
}

impl History {
    fn parse(args: &Args) -> Self {
        Self {
            events: args.int(HISTORY),
            bytes: args.int(HISTORY_BYTES),
            retention: args.str(RETENTION),
        }
    }
}

/// `#[sse_poll(...)]` and the item under it.
pub(crate) struct PollAttr {
    pub(crate) item: Item,
    pub(crate) positional: Vec<Expr>,
    pub(crate) interval: Option<LitStr>,
    pub(crate) stop_when: Option<Expr>,
    pub(crate) on_stop: Option<Expr>,
    pub(crate) end_on_stop: Option<syn::LitBool>,
    pub(crate) path: Option<LitStr>,
    pub(crate) topic: Option<LitStr>,
    pub(crate) api_version: Option<LitStr>,
    pub(crate) event: Option<LitStr>,
    pub(crate) error_event: Option<LitStr>,
    pub(crate) change_detection: Option<bool>,
    pub(crate) guard: Option<Expr>,
    pub(crate) history: History,
}

/// One argument of the polled function.
pub(crate) enum Input {
    /// Built from the request by this axum extractor (`FromRequestParts`), once per request.
    Extractor(Box<Type>),
    /// The poll's cancellation token.
    Cancellation,
}

impl TopicAttr {
    pub(crate) fn parse(
        ctxt: &mut Ctxt,
        attr: TokenStream,
        item: TokenStream,
    ) -> syn::Result<Self> {
        let mut args = Args::parse(ctxt, Attribute::Topic, attr)?;
        let item = syn::parse2(item)?;
        let mut positional = std::mem::take(&mut args.positional).into_iter();
        Ok(Self {
            item,
            topic: positional.next(),
            extra: positional.collect(),
            path: args.str(PATH),
            event: args.str(EVENT),
            change_detection: args.bool(CHANGE_DETECTION),
            guard: args.expr(GUARD),
            history: History::parse(&args),
        })
    }

    /// The topic, when it is a string literal.
    pub(crate) fn topic_lit(&self) -> Option<LitStr> {
        self.topic.as_ref().and_then(attr::lit_str)
    }

    /// The type's name and visibility (for a struct or an enum).
    pub(crate) fn ident(&self) -> Option<(&Ident, &syn::Visibility)> {
        match &self.item {
            Item::Struct(s) => Some((&s.ident, &s.vis)),
            Item::Enum(e) => Some((&e.ident, &e.vis)),
            _ => None,
        }
    }

    /// The route's path: the given one, or `/sse/<topic>`.
    pub(crate) fn path(&self) -> String {
        match (&self.path, self.topic_lit()) {
            (Some(path), _) => path.value(),
            (None, Some(topic)) => format!("/sse/{}", topic.value().trim_start_matches('/')),
            (None, None) => String::new(),
        }
    }
}

impl PollAttr {
    pub(crate) fn parse(
        ctxt: &mut Ctxt,
        attr: TokenStream,
        item: TokenStream,
    ) -> syn::Result<Self> {
        let mut args = Args::parse(ctxt, Attribute::Poll, attr)?;
        Ok(Self {
            item: syn::parse2(item)?,
            positional: std::mem::take(&mut args.positional),
            interval: args.str(INTERVAL),
            stop_when: args.expr(STOP_WHEN),
            on_stop: args.expr(ON_STOP),
            end_on_stop: args.bool_lit(END_ON_STOP),
            path: args.str(PATH),
            topic: args.str(TOPIC),
            api_version: args.str(API_VERSION),
            event: args.str(EVENT),
            error_event: args.str(ERROR_EVENT),
            change_detection: args.bool(CHANGE_DETECTION),
            guard: args.expr(GUARD),
            history: History::parse(&args),
        })
    }

    /// The function, when the item is one.
    pub(crate) fn function(&self) -> Option<&ItemFn> {
        match &self.item {
            Item::Fn(function) => Some(function),
            _ => None,
        }
    }

    /// The route's path: the given one, or `/sse/<fn name>`.
    pub(crate) fn path(&self) -> String {
        match (&self.path, self.function()) {
            (Some(path), _) => path.value(),
            (None, Some(function)) => format!("/sse/{}", function.sig.ident),
            (None, None) => String::new(),
        }
    }
}

/// The declared return type, if any.
pub(crate) fn output(function: &ItemFn) -> Option<&Type> {
    match &function.sig.output {
        ReturnType::Type(_, ty) => Some(ty),
        ReturnType::Default => None,
    }
}

/// What each argument of the polled function is.
pub(crate) fn inputs(function: &ItemFn) -> Vec<Input> {
    function
        .sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(typed) if is_cancellation_token(&typed.ty) => Some(Input::Cancellation),
            FnArg::Typed(typed) => Some(Input::Extractor(typed.ty.clone())),
            FnArg::Receiver(_) => None,
        })
        .collect()
}

/// Extractors that read what belongs to one subscriber (headers, cookies, the peer address),
/// which a shared poller never sees.
const PER_SUBSCRIBER: &[&str] = &[
    "HeaderMap",
    "TypedHeader",
    "CookieJar",
    "SignedCookieJar",
    "PrivateCookieJar",
    "ConnectInfo",
];

/// The name of `ty` if it is a known extractor of one subscriber's headers, cookies or address.
pub(crate) fn per_subscriber(ty: &Type) -> Option<&'static str> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    PER_SUBSCRIBER
        .iter()
        .copied()
        .find(|name| last.ident == name)
}

/// What an extractor reads of the query, which a polled topic is made of.
pub(crate) enum QueryUse<'a> {
    /// Nothing: `Path<T>` (the path is always in the topic), `Extension<T>`.
    Nothing,
    /// What `T` of `Query<T>` reads.
    Query(&'a Type),
    /// It may read all of it (`RawQuery`, `OriginalUri`, an extractor of the user's own).
    All,
}

/// What `ty` reads of the query, told by its name (the last path segment).
pub(crate) fn query_use(ty: &Type) -> QueryUse<'_> {
    let Type::Path(path) = ty else {
        return QueryUse::All;
    };
    let Some(last) = path.path.segments.last() else {
        return QueryUse::All;
    };
    if last.ident == "Path" || last.ident == "Extension" {
        return QueryUse::Nothing;
    }
    if last.ident == "Query"
        && let syn::PathArguments::AngleBracketed(args) = &last.arguments
        && let Some(syn::GenericArgument::Type(inner)) = args.args.first()
    {
        return QueryUse::Query(inner);
    }
    QueryUse::All
}

/// Whether `ty` is axum's `State<T>`, which needs a router state type that `router()`'s
/// routes, registered from every crate of the binary, do not have.
pub(crate) fn is_state(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.path.segments.last().is_some_and(|s| s.ident == "State"))
}

/// For axum's `Path<T>` extractor, how many placeholders `T` reads: `Some(n)` for a tuple of
/// `n`, `Some(1)` for a plain type such as `u64` or `String`, `None` for a struct (read by
/// name) or anything else; `None` also when `ty` is not a `Path`.
pub(crate) fn path_arity(ty: &Type) -> Option<Option<usize>> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Path" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return Some(None);
    };
    let Some(syn::GenericArgument::Type(inner)) = args.args.first() else {
        return Some(None);
    };
    Some(match inner {
        Type::Tuple(tuple) => Some(tuple.elems.len()),
        Type::Path(inner) => {
            let scalar = inner.path.segments.last().is_some_and(|s| {
                [
                    "String", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32",
                    "i64", "i128", "isize", "bool", "char", "Uuid",
                ]
                .iter()
                .any(|name| s.ident == name)
            });
            scalar.then_some(1)
        }
        _ => None,
    })
}

fn is_cancellation_token(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.path.segments.last().is_some_and(|s| s.ident == "CancellationToken"))
}
