//! Code generation. Inputs are validated (`args.rs`, `func.rs`) before anything here runs,
//! so expansion cannot fail.
//!
//! Hygiene: generated locals are `__pool_`-prefixed with mixed-site spans, so user code
//! cannot see or shadow them; paths are absolute (`::pool_core::…`, or `crate = "…"`).

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, Type, TypePath};

use crate::args::{ConnArgs, Isolation, TxArgs, crate_path};
use crate::func::{Func, Which, analyze};

/// On any error: the original item unchanged plus the error, so the user sees one error
/// at the right token instead of a cascade from a half-expanded function.
fn with_error(item: TokenStream, error: syn::Error) -> TokenStream {
    let mut out = item;
    out.extend(error.into_compile_error());
    out
}

fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// The connection from `__pool_source`, checked out or reused, with a failure returned
/// as the function's error. Spanned at the function's name.
fn checked_out(krate: &syn::Path, item: &ItemFn, ret: &Type) -> TokenStream {
    let fn_span = item.sig.ident.span();
    let checkout = quote_spanned!(fn_span=> #krate::ConnSource::__checkout(__pool_source).await);
    try_or_return(krate, ret, checkout)
}

/// Replaces the connection parameter by `__pool_source: &mut dyn <bound>`.
///
/// A trait object rather than `impl Trait`: passing a wrong source (`&mut pool`) is then
/// one unsized-coercion error at the argument, where a generic bound would be reported
/// again at the call and at the `.await` of the function's future. A `&mut Conn` still
/// reborrows implicitly, and `#[track_caller]` sees through the vtable.
fn replace_param(item: &mut ItemFn, index: usize, bound: TokenStream) {
    if let Some(FnArg::Typed(pt)) = item.sig.inputs.iter_mut().nth(index) {
        *pt.pat = Pat::Ident(syn::PatIdent {
            attrs: Vec::new(),
            by_ref: None,
            mutability: None,
            ident: local("__pool_source"),
            subpat: None,
        });
        let lifetime = match &*pt.ty {
            Type::Reference(r) => r.lifetime.clone(),
            _ => None,
        };
        *pt.ty = syn::parse_quote!(&#lifetime mut dyn #bound);
    }
}

/// The user's `Tx` path with `'_` filled in where no lifetime was written, so generated
/// code stays clean under `elided_lifetimes_in_paths`.
fn with_anon_lifetime(path: &TypePath) -> TypePath {
    let mut path = path.clone();
    if let Some(last) = path.path.segments.last_mut() {
        if matches!(last.arguments, PathArguments::None) {
            let args: syn::AngleBracketedGenericArguments = syn::parse_quote!(<'_>);
            last.arguments = PathArguments::AngleBracketed(args);
        } else if let PathArguments::AngleBracketed(a) = &mut last.arguments {
            // A named lifetime from the signature cannot outlive the local; use '_.
            for arg in a.args.iter_mut() {
                if let GenericArgument::Lifetime(l) = arg {
                    *l = syn::Lifetime::new("'_", l.span());
                }
            }
        }
    }
    path
}

/// Where to report that the error type cannot carry the pool's errors: the `E` of
/// `Result<T, E>` if written, else the `Result` itself.
fn error_type_span(ret: &Type) -> Span {
    if let Type::Path(p) = ret
        && let Some(last) = p.path.segments.last()
    {
        if let PathArguments::AngleBracketed(a) = &last.arguments
            && let Some(GenericArgument::Type(e)) = a.args.iter().nth(1)
        {
            return e.span();
        }
        return last.ident.span();
    }
    ret.span()
}

/// `?` on the source, with the error converted into the user's error type. Spanned at
/// the error type, so a missing `From<pool_core::Error>` is reported there. Converted
/// through a generic helper, so that `E = pool_core::Error` does not trip clippy's
/// `useless_conversion` in the user's crate.
fn try_or_return(krate: &syn::Path, ret: &Type, expr: TokenStream) -> TokenStream {
    let span = error_type_span(ret);
    // The whole call must carry the span, path included, for the error to land there.
    let krate: TokenStream = krate
        .to_token_stream()
        .into_iter()
        .map(|mut tt| {
            tt.set_span(span);
            tt
        })
        .collect();
    let convert = quote_spanned!(span=> #krate::__private::convert_error(__pool_error));
    quote! {
        match #expr {
            ::core::result::Result::Ok(__pool_ok) => __pool_ok,
            ::core::result::Result::Err(__pool_error) => return ::core::result::Result::Err(#convert),
        }
    }
}

/// Gives every `__pool_*` identifier a mixed-site span, so the generated locals are
/// invisible to (and cannot be shadowed by) the user's code around them.
fn respan_locals(tokens: TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .map(|tt| match tt {
            proc_macro2::TokenTree::Ident(i) if i.to_string().starts_with("__pool_") => {
                proc_macro2::TokenTree::Ident(Ident::new(&i.to_string(), Span::mixed_site()))
            }
            proc_macro2::TokenTree::Group(g) => {
                let mut ng = proc_macro2::Group::new(g.delimiter(), respan_locals(g.stream()));
                ng.set_span(g.span());
                proc_macro2::TokenTree::Group(ng)
            }
            other => other,
        })
        .collect()
}

pub(crate) fn with_conn(args: TokenStream, item: TokenStream) -> TokenStream {
    let parsed = syn::parse2::<ConnArgs>(args)
        .and_then(|args| syn::parse2::<ItemFn>(item.clone()).map(|f| (args, f)))
        .and_then(|(args, f)| analyze(f, Which::WithConn).map(|f| (args, f)));
    match parsed {
        Ok((args, func)) => expand_with_conn(args, func),
        Err(e) => with_error(item, e),
    }
}

fn expand_with_conn(args: ConnArgs, func: Func) -> TokenStream {
    let krate = crate_path(args.krate.as_ref().map(|(p, _)| p));
    let Func {
        mut item,
        index,
        ident,
        mutability,
        inner,
        ret,
    } = func;
    let block = item.block.clone();
    replace_param(&mut item, index, quote!(#krate::ConnSource));
    let get = checked_out(&krate, &item, &ret);
    let body = quote! {
        let mut __pool_conn = #get;
        let #mutability #ident: &mut #inner = &mut *__pool_conn;
        #block
    };
    emit(&item, body)
}

/// The function with its new signature and body.
fn emit(item: &ItemFn, body: TokenStream) -> TokenStream {
    let ItemFn {
        attrs, vis, sig, ..
    } = item;
    let body = respan_locals(body);
    // The braces keep the span of the user's own: an item whose last token comes from
    // the macro counts as generated, and rustc then never reports it as dead code.
    let mut braces = proc_macro2::Group::new(proc_macro2::Delimiter::Brace, body);
    braces.set_span(item.block.brace_token.span.join());
    quote!(#(#attrs)* #vis #sig #braces)
}

pub(crate) fn transactional(args: TokenStream, item: TokenStream) -> TokenStream {
    let parsed = syn::parse2::<TxArgs>(args)
        .and_then(|args| args.validate().map(|()| args))
        .and_then(|args| syn::parse2::<ItemFn>(item.clone()).map(|f| (args, f)))
        .and_then(|(args, f)| analyze(f, Which::Transactional).map(|f| (args, f)));
    match parsed {
        Ok((args, func)) => expand_transactional(args, func),
        Err(e) => with_error(valid_fallback(item), e),
    }
}

/// The original function, made valid on its own: `&mut Tx` (whose lifetime the attribute
/// normally supplies) becomes `&mut Tx<'_>`, so that the user sees only the attribute's
/// error and not E0726 from the re-emitted signature.
fn valid_fallback(item: TokenStream) -> TokenStream {
    let Ok(mut f) = syn::parse2::<ItemFn>(item.clone()) else {
        return item;
    };
    for arg in f.sig.inputs.iter_mut() {
        if let FnArg::Typed(pt) = arg
            && let Type::Reference(r) = &mut *pt.ty
            && let Type::Path(p) = &mut *r.elem
            && p.path.segments.last().is_some_and(|s| s.ident == "Tx")
        {
            *p = with_anon_lifetime(p);
        }
    }
    f.into_token_stream()
}

fn options(krate: &syn::Path, args: &TxArgs) -> TokenStream {
    let mut opts = quote!(#krate::TxOptions::new());
    if let Some((level, _)) = args.isolation {
        let level = match level {
            Isolation::ReadCommitted => quote!(ReadCommitted),
            Isolation::RepeatableRead => quote!(RepeatableRead),
            Isolation::Serializable => quote!(Serializable),
        };
        opts.extend(quote!(.isolation(#krate::Isolation::#level)));
    }
    if args.read_only.is_some() {
        opts.extend(quote!(.read_only(true)));
    }
    if args.deferrable.is_some() {
        opts.extend(quote!(.deferrable(true)));
    }
    opts
}

fn expand_transactional(args: TxArgs, func: Func) -> TokenStream {
    let krate = crate_path(args.krate.as_ref().map(|(p, _)| p));
    let opts = options(&krate, &args);
    let Func {
        mut item,
        index,
        ident,
        mutability,
        inner,
        ret,
    } = func;
    let block = item.block.clone();
    let tx_ty = with_anon_lifetime(&inner);
    // A retrying transaction needs a fresh one: it cannot re-run a savepoint.
    let fresh = args.retry.is_some();
    // A read-only transaction may also run on the read side (`ReadDb`).
    let bound = match (fresh, args.read_only.is_some()) {
        (true, false) => quote!(#krate::FreshTxSource),
        (false, false) => quote!(#krate::TxSource),
        (true, true) => quote!(#krate::FreshReadTxSource),
        (false, true) => quote!(#krate::ReadTxSource),
    };
    replace_param(&mut item, index, bound);
    let get_hold = checked_out(&krate, &item, &ret);
    let begin = try_or_return(
        &krate,
        &ret,
        quote!(#krate::__private::begin(&mut *__pool_hold, #opts, #fresh).await),
    );

    let body = match args.retry {
        None => {
            // The body runs in its own async block so that a `return` in it still goes
            // through commit/rollback; the fake return edge fixes the block's type for `?`.
            quote! {
                let mut __pool_hold = #get_hold;
                let mut __pool_tx = #begin;
                let __pool_result: #ret = {
                    let #mutability #ident: &mut #tx_ty = &mut __pool_tx;
                    async {
                        #[allow(
                            unknown_lints,
                            unreachable_code,
                            clippy::diverging_sub_expression,
                            clippy::empty_loop,
                            clippy::let_unit_value,
                            clippy::needless_return,
                            clippy::unreachable
                        )]
                        if false {
                            let __pool_fake_return: #ret = loop {};
                            return __pool_fake_return;
                        }
                        #block
                    }
                    .await
                };
                #krate::__private::finish(__pool_tx, __pool_result).await
            }
        }
        Some((retries, retry_span)) => {
            let backoff = args.backoff_ms.map_or(10, |(ms, _)| ms);
            // The body is an async closure that must be `AsyncFnMut`: re-running it must
            // not need anything it consumed the first time. A body that moves a captured
            // value fails to compile here, at the `retry` option.
            // The closure's own tokens (`async`, `|`, the braces) carry the span of `retry`,
            // so the error names the attribute, and the body's statements keep theirs.
            let stmts = &block.stmts;
            let closure = quote_spanned! {retry_span=>
                #krate::__private::rerunnable_transaction_body(
                    async |#mutability #ident: &mut #tx_ty| -> #ret { #(#stmts)* }
                )
            };
            quote! {
                let mut __pool_hold = #get_hold;
                let mut __pool_body = #closure;
                let mut __pool_attempt: u32 = 0;
                loop {
                    __pool_attempt += 1;
                    let mut __pool_tx = #begin;
                    let __pool_result: #ret = __pool_body(&mut __pool_tx).await;
                    let __pool_retryable = match &__pool_result {
                        ::core::result::Result::Ok(_) => false,
                        ::core::result::Result::Err(__pool_error) => {
                            #[allow(unused_imports)]
                            use #krate::__private::{ViaAsRefError as _, ViaNothing as _, ViaStdError as _};
                            (&&&#krate::__private::Probe(__pool_error)).__pool_retryable()
                        }
                    };
                    match #krate::__private::finish_retrying(
                        __pool_tx, __pool_result, __pool_retryable, __pool_attempt, #retries, #backoff,
                    ).await {
                        #krate::__private::Next::Return(__pool_done) => return __pool_done,
                        #krate::__private::Next::Retry => continue,
                    }
                }
            }
        }
    };
    emit(&item, body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn expand(f: fn(TokenStream, TokenStream) -> TokenStream, args: &str, item: &str) -> String {
        f(args.parse().unwrap(), item.parse().unwrap()).to_string()
    }

    #[test]
    fn the_connection_parameter_becomes_a_dyn_source() {
        let out = expand(
            with_conn,
            "",
            "pub async fn f(conn: &mut Conn, id: i32) -> Result<(), E> { Ok(()) }",
        );
        assert!(
            out.starts_with(
                "pub async fn f (__pool_source : & mut dyn :: pool_core :: ConnSource , id : i32)"
            ),
            "{out}"
        );
        assert!(
            out.contains("let conn : & mut Conn = & mut * __pool_conn"),
            "{out}"
        );
        let out = expand(
            transactional,
            "retry = 2",
            "async fn f(tx: &mut Tx) -> Result<(), E> { Ok(()) }",
        );
        assert!(
            out.contains("& mut dyn :: pool_core :: FreshTxSource"),
            "{out}"
        );
        assert!(out.contains("rerunnable_transaction_body"), "{out}");
        let out = expand(
            transactional,
            "crate = \"::app::db\"",
            "async fn f(tx: &mut Tx) -> Result<(), E> { Ok(()) }",
        );
        assert!(out.contains("& mut dyn :: app :: db :: TxSource"), "{out}");
    }

    #[test]
    fn a_bad_item_is_re_emitted_with_one_error() {
        let out = expand(
            with_conn,
            "",
            "fn f(conn: &mut Conn) -> Result<(), E> { Ok(()) }",
        );
        assert!(
            out.starts_with("fn f (conn : & mut Conn)"),
            "the original item must be kept: {out}"
        );
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
    }
}
