//! Attribute arguments, parsed against one table of options shared by both attributes.
//!
//! Every option is named once, in [`OPTIONS`], with the kind of value it takes, an example,
//! and the attributes that accept it. Parsing reports what is wrong with the arguments as
//! written (an unknown or repeated key, a value of the wrong kind); what the values mean is
//! checked later, in `check`.

use proc_macro2::TokenStream;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitBool, LitInt, LitStr, Token};

use crate::ctxt::Ctxt;

/// Which attribute is being parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attribute {
    Topic,
    Poll,
}

impl Attribute {
    fn accepts(self, option: &Spec) -> bool {
        match self {
            Self::Topic => option.topic,
            Self::Poll => option.poll,
        }
    }

    /// The other attribute.
    fn other(self) -> Self {
        match self {
            Self::Topic => Self::Poll,
            Self::Poll => Self::Topic,
        }
    }

    /// How the user writes it.
    fn name(self) -> &'static str {
        match self {
            Self::Topic => "#[sse_topic]",
            Self::Poll => "#[sse_poll]",
        }
    }

    /// The accepted keys, for error messages: "`a`, `b`, `c`".
    pub(crate) fn accepted(self) -> String {
        OPTIONS
            .iter()
            .filter(|option| self.accepts(option))
            .map(|option| format!("`{}`", option.key))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The kind of value an option takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A string literal.
    Str,
    /// `true` or `false`.
    Bool,
    /// An integer literal.
    Int,
    /// Any expression (a closure or a path).
    Expr,
}

/// One option: its key, its value's kind, an example value for error messages, and the
/// attributes that accept it.
pub(crate) struct Spec {
    key: &'static str,
    kind: Kind,
    example: &'static str,
    topic: bool,
    poll: bool,
}

pub(crate) const PATH: &str = "path";
pub(crate) const EVENT: &str = "event";
pub(crate) const ERROR_EVENT: &str = "error_event";
pub(crate) const CHANGE_DETECTION: &str = "change_detection";
pub(crate) const INTERVAL: &str = "interval";
pub(crate) const STOP_WHEN: &str = "stop_when";
pub(crate) const ON_STOP: &str = "on_stop";
pub(crate) const END_ON_STOP: &str = "end_on_stop";
pub(crate) const TOPIC: &str = "topic";
pub(crate) const API_VERSION: &str = "api_version";
pub(crate) const GUARD: &str = "guard";
pub(crate) const HISTORY: &str = "history";
pub(crate) const HISTORY_BYTES: &str = "history_bytes";
pub(crate) const RETENTION: &str = "retention";

/// Every option of both attributes, in the order error messages list them.
#[rustfmt::skip]
const OPTIONS: &[Spec] = &[
    Spec { key: INTERVAL, kind: Kind::Str, example: "\"5s\"", topic: false, poll: true },
    Spec { key: STOP_WHEN, kind: Kind::Expr, example: "", topic: false, poll: true },
    Spec { key: ON_STOP, kind: Kind::Expr, example: "", topic: false, poll: true },
    Spec { key: END_ON_STOP, kind: Kind::Bool, example: "", topic: false, poll: true },
    Spec { key: PATH, kind: Kind::Str, example: "\"/api/v1/alarms/sse\"", topic: true, poll: true },
    Spec { key: EVENT, kind: Kind::Str, example: "\"alarm\"", topic: true, poll: true },
    Spec { key: ERROR_EVENT, kind: Kind::Str, example: "\"build-error\"", topic: false, poll: true },
    Spec { key: TOPIC, kind: Kind::Str, example: "\"devices\"", topic: false, poll: true },
    Spec { key: API_VERSION, kind: Kind::Str, example: "\"v2\"", topic: false, poll: true },
    Spec { key: CHANGE_DETECTION, kind: Kind::Bool, example: "", topic: true, poll: true },
    Spec { key: GUARD, kind: Kind::Expr, example: "", topic: true, poll: true },
    Spec { key: HISTORY, kind: Kind::Int, example: "256", topic: true, poll: true },
    Spec { key: HISTORY_BYTES, kind: Kind::Int, example: "65536", topic: true, poll: true },
    Spec { key: RETENTION, kind: Kind::Str, example: "\"60s\"", topic: true, poll: true },
];

/// A value of the kind its option takes.
pub(crate) enum Value {
    Str(LitStr),
    Bool(LitBool),
    Int(LitInt),
    Expr(Expr),
}

/// The arguments of one attribute: positional values, then the options that parsed.
pub(crate) struct Args {
    pub(crate) positional: Vec<Expr>,
    options: Vec<(&'static str, Value)>,
}

impl Args {
    /// Parses `tokens` for `attribute`. Syntax errors end parsing; everything else is recorded
    /// in `ctxt` and parsing goes on.
    pub(crate) fn parse(
        ctxt: &mut Ctxt,
        attribute: Attribute,
        tokens: TokenStream,
    ) -> syn::Result<Self> {
        let raw = Punctuated::<Arg, Token![,]>::parse_terminated.parse2(tokens)?;
        let mut args = Self {
            positional: Vec::new(),
            options: Vec::new(),
        };
        let mut seen: Vec<&'static str> = Vec::new();
        for arg in raw {
            let (key, value) = match arg {
                Arg::Positional(value) => {
                    args.positional.push(value);
                    continue;
                }
                Arg::Named { key, value } => (key, value),
            };
            let name = key.unraw().to_string();
            let Some(spec) = OPTIONS
                .iter()
                .find(|spec| spec.key == name && attribute.accepts(spec))
            else {
                let other = attribute.other();
                let message = if OPTIONS.iter().any(|s| s.key == name && other.accepts(s)) {
                    format!(
                        "`{key}` is an option of {}, not of {}; {} accepts {}",
                        other.name(),
                        attribute.name(),
                        attribute.name(),
                        attribute.accepted()
                    )
                } else {
                    format!("unknown option `{key}`; accepted: {}", attribute.accepted())
                };
                ctxt.error(&key, message);
                continue;
            };
            if seen.contains(&spec.key) {
                ctxt.error(&key, format!("duplicate option `{key}`"));
                continue;
            }
            seen.push(spec.key);
            if let Some(value) = typed(ctxt, spec, &key, value) {
                args.options.push((spec.key, value));
            }
        }
        Ok(args)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.options
            .iter()
            .find_map(|(k, value)| (*k == key).then_some(value))
    }

    /// The string option `key`, if given.
    pub(crate) fn str(&self, key: &str) -> Option<LitStr> {
        match self.get(key)? {
            Value::Str(lit) => Some(lit.clone()),
            _ => None,
        }
    }

    /// The bool option `key`, if given.
    pub(crate) fn bool(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(lit) => Some(lit.value),
            _ => None,
        }
    }

    /// The bool option `key` as written (with its span), if given.
    pub(crate) fn bool_lit(&self, key: &str) -> Option<syn::LitBool> {
        match self.get(key)? {
            Value::Bool(lit) => Some(lit.clone()),
            _ => None,
        }
    }

    /// The integer option `key`, if given.
    pub(crate) fn int(&self, key: &str) -> Option<LitInt> {
        match self.get(key)? {
            Value::Int(lit) => Some(lit.clone()),
            _ => None,
        }
    }

    /// The expression option `key`, if given.
    pub(crate) fn expr(&self, key: &str) -> Option<Expr> {
        match self.get(key)? {
            Value::Expr(expr) => Some(expr.clone()),
            _ => None,
        }
    }
}

/// `value` as the kind `spec` takes, or an error saying what it takes.
fn typed(ctxt: &mut Ctxt, spec: &Spec, key: &Ident, value: Expr) -> Option<Value> {
    match (spec.kind, value) {
        (Kind::Expr, value) => Some(Value::Expr(value)),
        (
            Kind::Str,
            Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            }),
        ) => Some(Value::Str(lit)),
        (
            Kind::Bool,
            Expr::Lit(ExprLit {
                lit: Lit::Bool(lit),
                ..
            }),
        ) => Some(Value::Bool(lit)),
        (
            Kind::Int,
            Expr::Lit(ExprLit {
                lit: Lit::Int(lit), ..
            }),
        ) => Some(Value::Int(lit)),
        (Kind::Int, value) => {
            let example = spec.example;
            ctxt.error(
                value,
                format!("`{key}` must be a non-negative integer literal, like `{key} = {example}`"),
            );
            None
        }
        (Kind::Str, value) => {
            let example = spec.example;
            ctxt.error(
                value,
                format!("`{key}` must be a string literal, like `{key} = {example}`"),
            );
            None
        }
        (Kind::Bool, value) => {
            ctxt.error(value, format!("`{key}` must be `true` or `false`"));
            None
        }
    }
}

/// A string literal positional argument, or `None` (not an error here: `check` says what the
/// attribute expects).
pub(crate) fn lit_str(value: &Expr) -> Option<LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Some(lit.clone()),
        _ => None,
    }
}

enum Arg {
    Positional(Expr),
    Named { key: Ident, value: Expr },
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(Ident::peek_any) && input.peek2(Token![=]) && !input.peek2(Token![==]) {
            let key = input.call(Ident::parse_any)?;
            input.parse::<Token![=]>()?;
            let value = input.parse()?;
            Ok(Self::Named { key, value })
        } else {
            Ok(Self::Positional(input.parse()?))
        }
    }
}
