//! Topic and path templates (`devices/{id}`): the one scanner of `{name}` placeholders.

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    Literal(&'a str),
    Placeholder(&'a str),
}

/// What is wrong with a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TemplateError {
    /// `{` inside a placeholder.
    NestedBrace,
    /// A `{` without its `}` or a `}` without its `{`.
    Unbalanced,
    /// A placeholder that is not a Rust identifier.
    NotAnIdentifier(String),
    /// The same placeholder twice.
    Repeated(String),
}

impl TemplateError {
    /// The message, for a template used as `what` ("topic", "path").
    pub(crate) fn message(&self, what: &str) -> String {
        match self {
            Self::NestedBrace => format!("unbalanced `{{` in the {what}"),
            Self::Unbalanced => {
                format!("unbalanced braces in the {what}: placeholders look like `{{id}}`")
            }
            Self::NotAnIdentifier(name) => format!(
                "`{{{name}}}` in the {what}: a placeholder must be a Rust identifier, like `{{id}}`"
            ),
            Self::Repeated(name) => format!("placeholder `{{{name}}}` appears twice in the {what}"),
        }
    }
}

/// Splits `template` into literal text and placeholders; every error it has, in order.
pub(crate) fn scan(template: &str) -> (Vec<Segment<'_>>, Vec<TemplateError>) {
    let mut segments = Vec::new();
    let mut errors = Vec::new();
    let mut rest = template;
    loop {
        match (rest.find('{'), rest.find('}')) {
            (None, None) => break,
            (Some(open), Some(close)) if open < close => {
                let name = &rest[open + 1..close];
                if name.contains('{') {
                    errors.push(TemplateError::NestedBrace);
                    return (segments, errors);
                }
                if syn::parse_str::<syn::Ident>(name).is_err() {
                    errors.push(TemplateError::NotAnIdentifier(name.to_owned()));
                } else if segments.contains(&Segment::Placeholder(name)) {
                    errors.push(TemplateError::Repeated(name.to_owned()));
                }
                if open > 0 {
                    segments.push(Segment::Literal(&rest[..open]));
                }
                segments.push(Segment::Placeholder(name));
                rest = &rest[close + 1..];
            }
            _ => {
                errors.push(TemplateError::Unbalanced);
                return (segments, errors);
            }
        }
    }
    if !rest.is_empty() {
        segments.push(Segment::Literal(rest));
    }
    (segments, errors)
}

/// The placeholder names of a template, in order, once each.
pub(crate) fn placeholders(template: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for segment in scan(template).0 {
        if let Segment::Placeholder(name) = segment
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_owned());
        }
    }
    names
}

/// A `format!` string for a checked template: literal text escaped, placeholders as `{}`.
pub(crate) fn format_string(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    for segment in scan(template).0 {
        match segment {
            Segment::Literal(text) => out.push_str(&text.replace('{', "{{").replace('}', "}}")),
            Segment::Placeholder(_) => out.push_str("{}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_literals_in_order() {
        let (segments, errors) = scan("devices/{id}/x/{kind}");
        assert!(errors.is_empty());
        assert_eq!(
            segments,
            [
                Segment::Literal("devices/"),
                Segment::Placeholder("id"),
                Segment::Literal("/x/"),
                Segment::Placeholder("kind"),
            ]
        );
        assert_eq!(format_string("devices/{id}/x/{kind}"), "devices/{}/x/{}");
        assert_eq!(placeholders("{a}/{b}"), ["a", "b"]);
    }

    #[test]
    fn every_kind_of_malformed_template_is_named() {
        assert_eq!(scan("a/{id").1, [TemplateError::Unbalanced]);
        assert_eq!(scan("a/id}").1, [TemplateError::Unbalanced]);
        assert_eq!(scan("a/{{id}").1, [TemplateError::NestedBrace]);
        assert_eq!(
            scan("{1x}").1,
            [TemplateError::NotAnIdentifier("1x".into())]
        );
        assert_eq!(scan("{a}/{a}").1, [TemplateError::Repeated("a".into())]);
    }
}
