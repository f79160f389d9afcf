//! `sql!("…")`: a statement classified at compile time.

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{LitStr, Token};

use crate::args::{Spanned, crate_path, parse_crate};

const USAGE: &str = "sql! takes one string literal: sql!(\"SELECT …\")";
const USAGE_AFTER_CRATE: &str = "after `crate = \"path\"`, sql! takes a comma and one string literal: \
                                 sql!(crate = \"path\", \"SELECT …\")";

/// What `sql!` takes: an optional leading `crate = "path",`, then the statement.
struct SqlInput {
    krate: Option<Spanned<syn::Path>>,
    lit: LitStr,
}

impl Parse for SqlInput {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut krate = None;
        // A loop, not an `if`: a second `crate` is then reported as a duplicate.
        while input.peek(Token![crate]) {
            parse_crate(input, &mut krate)?;
            let comma: Token![,] = input
                .parse()
                .map_err(|e| syn::Error::new(e.span(), USAGE_AFTER_CRATE))?;
            if input.is_empty() {
                // At the comma rather than at the whole invocation: the statement goes here.
                return Err(syn::Error::new(comma.span, USAGE_AFTER_CRATE));
            }
        }
        let usage = if krate.is_some() {
            USAGE_AFTER_CRATE
        } else {
            USAGE
        };
        let lit: LitStr = input
            .parse()
            .map_err(|e| syn::Error::new(e.span(), usage))?;
        if !input.is_empty() {
            return Err(syn::Error::new(input.span(), usage));
        }
        Ok(SqlInput { krate, lit })
    }
}

pub(crate) fn sql(input: TokenStream) -> TokenStream {
    let SqlInput { krate, lit } = match syn::parse2::<SqlInput>(input) {
        Ok(input) => input,
        Err(e) => return e.into_compile_error(),
    };
    let krate = crate_path(krate.as_ref().map(|(p, _)| p));
    let text = lit.value();
    match pool_sql::classify(&text) {
        Err(refusal) => syn::Error::new(lit.span(), refusal.to_string()).into_compile_error(),
        Ok(c) if c.statements == 0 => {
            syn::Error::new(lit.span(), "sql! got no statement").into_compile_error()
        }
        Ok(c) if c.copy.is_some() && c.statements > 1 => syn::Error::new(
            lit.span(),
            "a COPY through the client must be the only statement in sql!: copy_in/copy_out run one statement",
        )
        .into_compile_error(),
        Ok(c) if c.copy.is_some() && c.kind != pool_sql::Kind::Plain => syn::Error::new(
            lit.span(),
            "this COPY's query needs a session or a transaction (it touches session state or locks rows); \
             sql! takes a COPY of a table or of a plain query: pass the text as a string to copy_out on a held \
             connection or a transaction",
        )
        .into_compile_error(),
        Ok(c) => {
            let kind = match (c.copy, c.kind) {
                (Some(pool_sql::CopyDirection::In), _) => quote!(CopyIn),
                (Some(pool_sql::CopyDirection::Out), _) => quote!(CopyOut),
                (None, kind) => match kind {
                    pool_sql::Kind::Plain if c.read_only => quote!(ReadOnly),
                    pool_sql::Kind::Plain => quote!(Plain),
                    pool_sql::Kind::Session => quote!(SessionState),
                pool_sql::Kind::TxOnly => quote!(TransactionOnly),
                },
            };
            let touches = c.touches.bits();
            quote!(#krate::Stmt::<#krate::#kind>::__new_unchecked(#lit, #touches))
        }
    }
}
