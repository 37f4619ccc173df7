//! The validated specs: what `check` accepted, with every value in the form `expand` uses
//! (durations as `Duration`, the topic's placeholders, the function's inputs and output), so
//! that code generation parses nothing again and cannot fail.

use std::time::Duration;

use syn::{Expr, Ident, Item, ItemFn, LitInt, LitStr, Type, Visibility};

use crate::ast::Input;

/// The history options, checked.
pub(crate) struct HistorySpec {
    pub(crate) events: Option<LitInt>,
    pub(crate) bytes: Option<LitInt>,
    pub(crate) retention: Option<Duration>,
}

/// An `#[sse_topic]` that is accepted.
pub(crate) struct TopicSpec {
    /// The struct or enum, as written.
    pub(crate) item: Item,
    pub(crate) ident: Ident,
    pub(crate) vis: Visibility,
    /// The topic or topic template, a non-empty string literal.
    pub(crate) topic: LitStr,
    /// The template's placeholders, in order (empty for a plain topic).
    pub(crate) params: Vec<String>,
    /// The route's path: the given one, or `/sse/<topic>`.
    pub(crate) path: String,
    pub(crate) event: Option<LitStr>,
    pub(crate) change_detection: bool,
    pub(crate) guard: Option<Expr>,
    pub(crate) history: HistorySpec,
}

/// An `#[sse_poll]` that is accepted.
pub(crate) struct PollSpec {
    /// The async fn, as written.
    pub(crate) function: ItemFn,
    /// What each argument is.
    pub(crate) inputs: Vec<Input>,
    /// The declared return type.
    pub(crate) output: Type,
    pub(crate) interval: Option<Duration>,
    pub(crate) stop_when: Option<Expr>,
    pub(crate) on_stop: Option<Expr>,
    /// Whether a stop by `stop_when` ends the topic's streams.
    pub(crate) end_on_stop: bool,
    pub(crate) topic: Option<LitStr>,
    pub(crate) api_version: Option<LitStr>,
    /// The name of the values' events, and of the errors'.
    pub(crate) event: Option<LitStr>,
    pub(crate) error_event: Option<LitStr>,
    pub(crate) change_detection: bool,
    pub(crate) guard: Option<Expr>,
    /// The route's path: the given one, or `/sse/<fn name>`.
    pub(crate) path: String,
    pub(crate) history: HistorySpec,
}
