//! Code generation. Everything generated names runtime items by absolute path through
//! `::sse_runtime::__private`, so it works whatever the user imported.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::poll::{Input, PollModel};
use crate::template;
use crate::topic::{TopicModel, snake_case};

pub(crate) fn topic(model: &TopicModel) -> TokenStream {
    let TopicModel {
        item,
        ident,
        vis,
        topic,
        params,
        path,
        event,
        change_detection,
    } = model;
    let name = ident.to_string();
    let snake = snake_case(&name);
    let publish = format_ident!("publish_{}", snake);
    let publish_to = format_ident!("publish_{}_to", snake);
    let event_opt = match event {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };
    // Spanned on the type's name: "`Alarm` doesn't implement Serialize" points at `Alarm`.
    let implementation = quote_spanned! {ident.span()=>
        impl ::sse_runtime::SseTopic for #ident {
            const TOPIC: &'static str = #topic;
            const EVENT: ::core::option::Option<&'static str> = #event_opt;
            const PATH: &'static str = #path;
        }
    };
    let param_idents: Vec<_> = params.iter().map(|p| format_ident!("{}", p)).collect();
    let (topic_expr, handler) = if params.is_empty() {
        (
            quote!(<#ident as ::sse_runtime::SseTopic>::TOPIC),
            quote!(::sse_runtime::__private::SseHandler::new(manager).topic(#topic)),
        )
    } else {
        let format = template::format_string(&topic.value());
        (
            quote!(&::std::format!(#format, #(#param_idents),*)),
            quote!(::sse_runtime::__private::SseHandler::new(manager).topic_template(#topic)),
        )
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
    let doc_to = format!("Publishes a [`{name}`] through `manager` (see [`{publish}`]).");
    quote! {
        #item

        #implementation

        #[doc = #doc_topic]
        #[allow(dead_code)]
        #vis fn #publish(#(#param_idents: impl ::core::fmt::Display,)* value: &#ident) {
            #publish_to(::sse_runtime::__private::Manager::global(), #(#param_idents,)* value)
        }

        #[doc = #doc_to]
        #[allow(dead_code)]
        #vis fn #publish_to(
            manager: &::sse_runtime::__private::Manager,
            #(#param_idents: impl ::core::fmt::Display,)*
            value: &#ident,
        ) {
            manager.publish_event(#topic_expr, <#ident as ::sse_runtime::SseTopic>::EVENT, value)
        }

        const _: () = {
            fn mount(
                manager: &::sse_runtime::__private::Manager,
            ) -> ::sse_runtime::__private::MethodRouter {
                ::sse_runtime::__private::get(#handler.change_detection(#change_detection))
            }
            ::sse_runtime::__private::inventory::submit! {
                ::sse_runtime::__private::Route::new(
                    ::core::concat!(::core::module_path!(), "::", #name),
                    #path,
                    ::core::option::Option::Some(#topic),
                    mount,
                )
            }
        };
    }
}

pub(crate) fn poll(model: &PollModel) -> TokenStream {
    let PollModel {
        function,
        inputs,
        output,
        interval,
        stop_when,
        on_stop,
        path,
        topic,
        api_version,
        change_detection,
    } = model;
    let ident = &function.sig.ident;
    let name = ident.to_string();
    let args: Vec<_> = (0..inputs.len())
        .map(|i| format_ident!("__sse_arg{}", i))
        .collect();
    // Each extractor runs once on the request (its rejection is the response), then again
    // from a snapshot of the request before every poll.
    let mut checks = Vec::new();
    let mut extractions = Vec::new();
    for (arg, input) in args.iter().zip(inputs) {
        match input {
            Input::Extractor(ty) => {
                checks.push(quote_spanned! {ty.span()=>
                    if let ::core::result::Result::Err(rejection) =
                        ::sse_runtime::__private::extract::<#ty>(&mut parts).await
                    {
                        return rejection;
                    }
                });
                extractions.push(quote_spanned! {ty.span()=>
                    let #arg = ::sse_runtime::__private::re_extract::<#ty>(&mut parts).await?;
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
    quote! {
        #function

        const _: () = {
            fn mount(
                manager: &::sse_runtime::__private::Manager,
            ) -> ::sse_runtime::__private::MethodRouter {
                let manager = ::core::clone::Clone::clone(manager);
                ::sse_runtime::__private::get(move |mut parts: ::sse_runtime::__private::Parts| {
                    let manager = ::core::clone::Clone::clone(&manager);
                    async move {
                        #(#checks)*
                        let snapshot = ::sse_runtime::__private::RequestSnapshot::new(&parts);
                        let polling = ::sse_runtime::__private::Polling::new(
                            move |__sse_cancel: ::sse_runtime::__private::CancellationToken| {
                                let snapshot = ::core::clone::Clone::clone(&snapshot);
                                async move {
                                    let mut parts = snapshot.parts();
                                    #(#extractions)*
                                    #call
                                }
                            },
                        )
                        #interval
                        #api_version
                        #stop_when
                        #on_stop;
                        ::sse_runtime::__private::serve_polled(
                            &manager, &parts, #topic_opt, #change_detection, polling,
                        )
                    }
                })
            }
            ::sse_runtime::__private::inventory::submit! {
                ::sse_runtime::__private::Route::new(
                    ::core::concat!(::core::module_path!(), "::", #name),
                    #path,
                    #topic_opt,
                    mount,
                )
            }
        };
    }
}
