//! Attribute arguments: positional values and `key = value` pairs, and typed readers for values.

use proc_macro2::TokenStream;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitBool, LitStr, Token};

use crate::ctxt::Ctxt;

pub(crate) enum Arg {
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

pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Vec<Arg>> {
    let args = Punctuated::<Arg, Token![,]>::parse_terminated.parse2(tokens)?;
    Ok(args.into_iter().collect())
}

/// Records `value` under `slot`, or an error naming the duplicate.
pub(crate) fn set_once<T>(ctxt: &mut Ctxt, slot: &mut Option<T>, key: &Ident, value: Option<T>) {
    match (slot.is_some(), value) {
        (true, _) => ctxt.error(key, format!("duplicate option `{key}`")),
        (false, Some(value)) => *slot = Some(value),
        (false, None) => {}
    }
}

/// A string literal, or an error saying what `key` accepts.
pub(crate) fn lit_str(ctxt: &mut Ctxt, key: &Ident, value: &Expr, example: &str) -> Option<LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Some(lit.clone()),
        _ => {
            ctxt.error(
                value,
                format!("`{key}` must be a string literal, like `{key} = {example}`"),
            );
            None
        }
    }
}

/// A bool literal, or an error.
pub(crate) fn lit_bool(ctxt: &mut Ctxt, key: &Ident, value: &Expr) -> Option<LitBool> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(lit),
            ..
        }) => Some(lit.clone()),
        _ => {
            ctxt.error(value, format!("`{key}` must be `true` or `false`"));
            None
        }
    }
}

/// Checks an HTTP path given with `path = "..."`.
pub(crate) fn check_path(ctxt: &mut Ctxt, path: &LitStr) {
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
}
