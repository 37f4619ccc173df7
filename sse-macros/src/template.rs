//! Topic templates (`devices/{id}`) and the path parameters they must agree with.

use syn::LitStr;

use crate::ctxt::Ctxt;

/// Names the generated helpers use for their own parameters.
const RESERVED: &[&str] = &["manager", "value"];

/// The `{name}` placeholders of a template, in order; records errors for malformed ones.
pub(crate) fn placeholders(ctxt: &mut Ctxt, lit: &LitStr, what: &str) -> Vec<String> {
    let text = lit.value();
    let mut names: Vec<String> = Vec::new();
    let mut rest = text.as_str();
    loop {
        let open = rest.find('{');
        let close = rest.find('}');
        match (open, close) {
            (None, None) => break,
            (Some(open), Some(close)) if open < close => {
                let name = &rest[open + 1..close];
                if name.contains('{') {
                    ctxt.error(lit, format!("unbalanced `{{` in the {what}"));
                    break;
                }
                if syn::parse_str::<syn::Ident>(name).is_err() {
                    ctxt.error(lit, format!("`{{{name}}}` in the {what}: a placeholder must be a Rust identifier, like `{{id}}`"));
                } else if names.iter().any(|n| n == name) {
                    ctxt.error(
                        lit,
                        format!("placeholder `{{{name}}}` appears twice in the {what}"),
                    );
                } else {
                    names.push(name.to_owned());
                }
                rest = &rest[close + 1..];
            }
            _ => {
                ctxt.error(
                    lit,
                    format!("unbalanced braces in the {what}: placeholders look like `{{id}}`"),
                );
                break;
            }
        }
    }
    names
}

/// Checks that a topic template's placeholders can be helper parameters.
pub(crate) fn check_topic_params(ctxt: &mut Ctxt, lit: &LitStr, names: &[String]) {
    for name in names {
        if RESERVED.contains(&name.as_str()) {
            ctxt.error(lit, format!("placeholder `{{{name}}}` clashes with a parameter of the generated publish helper; rename it"));
        }
    }
}

/// Checks that the route path captures exactly the topic template's placeholders.
pub(crate) fn check_agreement(
    ctxt: &mut Ctxt,
    path: &LitStr,
    path_names: &[String],
    topic_names: &[String],
) {
    let missing: Vec<&String> = topic_names
        .iter()
        .filter(|n| !path_names.contains(n))
        .collect();
    let extra: Vec<&String> = path_names
        .iter()
        .filter(|n| !topic_names.contains(n))
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
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
}

/// A `format!` string for a template: placeholders become `{}`.
pub(crate) fn format_string(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map_or(rest.len() - 1, |at| open + at);
        out.push_str(&rest[..open]);
        out.push_str("{}");
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}
