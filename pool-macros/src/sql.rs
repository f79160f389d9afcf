//! `sql!("…")`: a statement classified at compile time.

use proc_macro2::TokenStream;
use quote::quote;
use syn::LitStr;

pub(crate) fn sql(input: TokenStream) -> TokenStream {
    let lit = match syn::parse2::<LitStr>(input) {
        Ok(lit) => lit,
        Err(e) => {
            return syn::Error::new(
                e.span(),
                "sql! takes one string literal: sql!(\"SELECT …\")",
            )
            .into_compile_error();
        }
    };
    let text = lit.value();
    match pool_sql::classify(&text) {
        Err(refusal) => syn::Error::new(lit.span(), refusal.to_string()).into_compile_error(),
        Ok(c) if c.statements == 0 => {
            syn::Error::new(lit.span(), "sql! got no statement").into_compile_error()
        }
        Ok(c) => {
            let kind = match c.kind {
                pool_sql::Kind::Plain => quote!(Plain),
                pool_sql::Kind::Session => quote!(SessionState),
                pool_sql::Kind::TxOnly => quote!(TransactionOnly),
            };
            let touches = c.touches.bits();
            quote!(::pool_core::Stmt::<::pool_core::#kind>::__new_unchecked(#lit, #touches))
        }
    }
}
