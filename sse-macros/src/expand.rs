//! Code generation, from the specs the check pass returned. Everything generated names runtime
//! items by absolute path through `::sse_runtime::__private`, so it works whatever the user
//! imported.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{self, Input, QueryUse};
use crate::spec::{HistorySpec, PollSpec, TopicSpec};
use crate::template;

pub(crate) fn topic(spec: TopicSpec) -> TokenStream {
    let TopicSpec {
        item,
        ident,
        vis,
        topic,
        params,
        path,
        event,
        change_detection,
        guard,
        history,
    } = &spec;
    let name = ident.to_string();
    let snake = snake_case(&name);
    let publish = format_ident!("publish_{}", snake);
    let publish_to = format_ident!("publish_{}_to", snake);
    let history = self::history(history);
    let event_opt = match event {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };
    // Spanned on the type's name: "`Alarm` doesn't implement Serialize" points at `Alarm`.
    let implementation = quote_spanned! {ident.span()=>
        impl ::sse_runtime::__private::SseTopic for #ident {
            const TOPIC: &'static str = #topic;
            const EVENT: ::core::option::Option<&'static str> = #event_opt;
            const PATH: &'static str = #path;
        }
    };
    let param_idents: Vec<_> = params.iter().map(|p| format_ident!("{}", p)).collect();
    let guard = guard
        .as_ref()
        .map(|g| quote_spanned!(g.span()=> .guard(#g)));
    let (topic_expr, handler) = if params.is_empty() {
        (
            quote!(<#ident as ::sse_runtime::__private::SseTopic>::TOPIC),
            quote!(::sse_runtime::__private::SseHandler::new(__sse_manager).topic(#topic)),
        )
    } else {
        let format = template::format_string(&topic.value());
        (
            quote!(&::std::format!(#format, #(#param_idents),*)),
            quote!(::sse_runtime::__private::SseHandler::new(__sse_manager).topic_template(#topic)),
        )
    };
    // The one place that needs `Serialize` (`SseTopic` does not): a type without it is one
    // error, spanned on its name.
    let publish_event = quote_spanned! {ident.span()=>
        ::sse_runtime::__private::publish_topic_event::<#ident>(manager, #topic_expr, value)
    };
    let doc_topic = if params.is_empty() {
        format!(
            "Publishes a [`{name}`] to the topic `{}` of the global manager.",
            topic.value()
        )
    } else {
        format!(
            "Publishes a [`{name}`] to its instance of the topic template `{}` on the global manager.",
            topic.value()
        )
    };
    let publish_name = publish.to_string();
    let payload = payload_fn(&quote!(#ident));
    let guarded = guard.is_some().then(|| quote!(.guarded()));
    let doc_to = format!("Publishes a [`{name}`] through `manager` (see [`{publish}`]).");
    quote! {
        #item

        #implementation

        #[doc = #doc_topic]
        #[allow(dead_code)]
        #vis fn #publish(#(#param_idents: impl ::core::fmt::Display,)* value: &#ident) {
            #publish_to(::sse_runtime::__private::global_for(#publish_name), #(#param_idents,)* value)
        }

        #[doc = #doc_to]
        #[allow(dead_code)]
        #vis fn #publish_to(
            manager: &::sse_runtime::__private::Manager,
            #(#param_idents: impl ::core::fmt::Display,)*
            value: &#ident,
        ) {
            #publish_event
        }

        const _: () = {
            fn mount(
                __sse_manager: &::sse_runtime::__private::Manager,
            ) -> ::sse_runtime::__private::MethodRouter {
                ::sse_runtime::__private::get(#handler.change_detection(#change_detection) #history #guard)
            }
            #payload
            ::sse_runtime::__private::inventory::submit! {
                ::sse_runtime::__private::Route::new(
                    ::core::concat!(::core::module_path!(), "::", #name),
                    #path,
                    ::core::option::Option::Some(#topic),
                    mount,
                )
                .event(#event_opt)
                .change_detection(#change_detection)
                #guarded
                .payload(payload)
            }
        };
    }
}

pub(crate) fn poll(spec: PollSpec) -> TokenStream {
    let PollSpec {
        function,
        inputs,
        output,
        interval,
        stop_when,
        on_stop,
        end_on_stop,
        topic,
        api_version,
        event,
        error_event,
        change_detection,
        guard,
        path,
        history,
    } = &spec;
    let history = self::history(history);
    let ident = &function.sig.ident;
    let name = ident.to_string();
    let args: Vec<_> = (0..inputs.len())
        .map(|i| format_ident!("__sse_arg{}", i))
        .collect();
    // Each extractor runs once on what the shared poller sees of the request (its rejection
    // is the response), then again on a fresh copy of that before every poll.
    let mut checks = Vec::new();
    let mut extractions = Vec::new();
    // The query parameters the function reads: its topic is the path plus those.
    let mut query_keys = vec![quote!(::sse_runtime::__private::QueryKeys::none())];
    for (arg, input) in args.iter().zip(inputs) {
        match input {
            Input::Extractor(ty) => {
                match ast::query_use(ty) {
                    QueryUse::Nothing => {}
                    QueryUse::Query(inner) => {
                        query_keys.push(quote_spanned!(ty.span()=> .and::<#inner>(&__sse_parts)))
                    }
                    QueryUse::All => {
                        query_keys = vec![quote!(::sse_runtime::__private::QueryKeys::all())];
                    }
                }
                checks.push(quote_spanned! {ty.span()=>
                    if let ::core::result::Result::Err(rejection) =
                        ::sse_runtime::__private::extract::<#ty>(&mut __sse_shared, &mut __sse_parts, #name).await
                    {
                        return rejection;
                    }
                });
                extractions.push(quote_spanned! {ty.span()=>
                    let #arg = ::sse_runtime::__private::re_extract::<#ty>(&mut __sse_parts).await?;
                });
            }
            Input::Cancellation => extractions.push(quote! {
                let #arg = ::core::clone::Clone::clone(&__sse_cancel);
            }),
        }
    }
    // Spanned on the return type: a function that does not return a `Result` of the right
    // kind is reported there.
    let call = quote_spanned! {output.span()=>
        ::sse_runtime::__private::PollResult::into_poll(#ident(#(#args),*).await)
    };
    let interval = interval.map(|d| {
        let nanos = d.as_nanos() as u64;
        quote!(.interval(::sse_runtime::__private::Duration::from_nanos(#nanos)))
    });
    let api_version = api_version.as_ref().map(|v| quote!(.api_version(#v)));
    let event = event.as_ref().map(|e| quote!(.event(#e)));
    let end_on_stop = end_on_stop.then(|| quote!(.end_on_stop(true)));
    let error_event = error_event.as_ref().map(|e| quote!(.error_event(#e)));
    let stop_when = stop_when
        .as_ref()
        .map(|e| quote_spanned!(e.span()=> .stop_when(#e)));
    let on_stop = on_stop
        .as_ref()
        .map(|e| quote_spanned!(e.span()=> .on_stop(#e)));
    let topic_opt = match topic {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };
    // One view of the request for every extractor's first run, as for each poll.
    let shared_view =
        (!checks.is_empty()).then(|| quote!(let mut __sse_shared = __sse_snapshot.parts();));
    // The guard runs first, on the whole request: before any extractor, any topic, any poller.
    let check_guard = match guard {
        Some(guard) => quote_spanned! {guard.span()=>
            let __sse_expires = match ::sse_runtime::__private::check_guard(&__sse_manager, #guard, &mut __sse_parts).await {
                ::core::result::Result::Ok(__sse_expires) => __sse_expires,
                ::core::result::Result::Err(refused) => return refused,
            };
        },
        None => quote!(let __sse_expires = ::core::option::Option::None;),
    };
    // What the return type must be, checked once at the mount (spanned on the user's types):
    // `for<'__sse>` defers the check from `mount`'s definition to its one use, and `mount`'s
    // body assumes it, so a value without `Serialize` or an error type that is no error is one
    // error each, not a cascade through the generated code.
    let payload = match value_type(output) {
        Some(ty) => payload_fn(&quote!(#ty)),
        None => quote! {
            fn payload() -> ::core::option::Option<::sse_runtime::__private::Payload> {
                ::core::option::Option::None
            }
        },
    };
    let guarded = spec.guard.is_some().then(|| quote!(.guarded()));
    let event_opt = match &spec.event {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };
    let error_event_opt = match &spec.error_event {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };
    let interval_opt = match spec.interval {
        Some(d) => {
            let nanos = d.as_nanos() as u64;
            quote!(::core::option::Option::Some(#nanos))
        }
        None => quote!(::core::option::Option::None),
    };
    let end_on_stop_flag = spec.end_on_stop;
    let (bounds, mount_ref) = match result_types(output) {
        Some((ok, err)) => (
            quote! {
                where
                    for<'__sse> #ok: ::sse_runtime::__private::PollValue,
                    for<'__sse> #err: ::sse_runtime::__private::PollErrorType,
            },
            quote_spanned!(output.span()=> mount),
        ),
        None => (TokenStream::new(), quote!(mount)),
    };
    quote! {
        #function

        const _: () = {
            fn mount(
                __sse_manager: &::sse_runtime::__private::Manager,
            ) -> ::sse_runtime::__private::MethodRouter
            #bounds
            {
                let __sse_manager = ::core::clone::Clone::clone(__sse_manager);
                ::sse_runtime::__private::get(move |mut __sse_parts: ::sse_runtime::__private::Parts| {
                    let __sse_manager = ::core::clone::Clone::clone(&__sse_manager);
                    async move {
                        #check_guard
                        // What the shared poller sees: never one subscriber's headers.
                        let __sse_snapshot = ::sse_runtime::__private::RequestSnapshot::new(&__sse_parts);
                        #shared_view
                        #(#checks)*
                        let __sse_polling = ::sse_runtime::__private::Polling::new(
                            move |__sse_cancel: ::sse_runtime::__private::CancellationToken| {
                                let __sse_snapshot = ::core::clone::Clone::clone(&__sse_snapshot);
                                async move {
                                    let mut __sse_parts = __sse_snapshot.parts();
                                    #(#extractions)*
                                    #call
                                }
                            },
                        )
                        #interval
                        #api_version
                        #event
                        #error_event
                        #stop_when
                        #end_on_stop
                        #on_stop;
                        let __sse_options = ::sse_runtime::__private::SubscribeOptions::new()
                            .change_detection(#change_detection)#history;
                        let __sse_keys = #(#query_keys)*;
                        ::sse_runtime::__private::serve_polled(
                            &__sse_manager, &__sse_parts, #topic_opt, __sse_keys, __sse_options, __sse_polling, __sse_expires,
                        )
                    }
                })
            }
            #payload
            ::sse_runtime::__private::inventory::submit! {
                ::sse_runtime::__private::Route::new(
                    ::core::concat!(::core::module_path!(), "::", #name),
                    #path,
                    #topic_opt,
                    #mount_ref,
                )
                .event(#event_opt)
                .change_detection(#change_detection)
                .polled(#interval_opt, #error_event_opt, #end_on_stop_flag)
                #guarded
                .payload(payload)
            }
        };
    }
}

/// `fn payload()` for the route's registration: the payload type's schema when it has one
/// (see `sse_runtime::__private::Probe`).
fn payload_fn(ty: &TokenStream) -> TokenStream {
    quote! {
        fn payload() -> ::core::option::Option<::sse_runtime::__private::Payload> {
            #[allow(unused_imports)]
            use ::sse_runtime::__private::{HasSchema as _, NoSchema as _};
            (&::sse_runtime::__private::Probe::<#ty>::new()).payload()
        }
    }
}

/// The type arguments of a return type written `Result<...>` (any path ending in `Result`).
fn result_arguments(output: &syn::Type) -> Option<Vec<&syn::Type>> {
    let syn::Type::Path(path) = output else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    Some(
        args.args
            .iter()
            .filter_map(|arg| match arg {
                syn::GenericArgument::Type(ty) => Some(ty),
                _ => None,
            })
            .collect(),
    )
}

/// The value type of a return type written `Result<T, E>` or `Result<T>` (an alias such as
/// `anyhow::Result<T>`), unless it holds an `impl Trait`. (Not `<R as PollResult>::Ok`: for a
/// return type that is no `Result`, that would be a second error for one mistake.)
fn value_type(output: &syn::Type) -> Option<syn::Type> {
    let ok = (*result_arguments(output)?.first()?).clone();
    (!has_impl(&quote!(#ok))).then_some(ok)
}

/// `T` and `E` of a return type written `Result<T, E>`, unless either holds an `impl Trait`,
/// which a where clause cannot name.
fn result_types(output: &syn::Type) -> Option<(syn::Type, syn::Type)> {
    let [ok, err] = result_arguments(output)?[..] else {
        return None;
    };
    if has_impl(&quote!(#ok #err)) {
        return None;
    }
    Some((ok.clone(), err.clone()))
}

fn has_impl(tokens: &TokenStream) -> bool {
    tokens.clone().into_iter().any(|token| match token {
        proc_macro2::TokenTree::Ident(ident) => ident == "impl",
        proc_macro2::TokenTree::Group(group) => has_impl(&group.stream()),
        _ => false,
    })
}

/// `.history(N).history_bytes(N).retention(..)` for the options given; `SseHandler` and
/// `SubscribeOptions` have these methods alike.
fn history(history: &HistorySpec) -> TokenStream {
    let events = history.events.as_ref().map(|n| quote!(.history(#n)));
    let bytes = history.bytes.as_ref().map(|n| quote!(.history_bytes(#n)));
    let retention = history.retention.map(|retention| {
        let nanos = retention.as_nanos() as u64;
        quote!(.retention(::sse_runtime::__private::Duration::from_nanos(#nanos)))
    });
    quote!(#events #bytes #retention)
}

/// `DeviceStatus` -> `device_status`, `HTTPError` -> `http_error`.
fn snake_case(name: &str) -> String {
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
