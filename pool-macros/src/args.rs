//! Parsing the macros' options. Values keep their spans so that errors — including
//! ones about combinations of options — point at the token at fault.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{LitInt, LitStr, Token};

mod kw {
    syn::custom_keyword!(isolation);
    syn::custom_keyword!(read_only);
    syn::custom_keyword!(deferrable);
    syn::custom_keyword!(retry);
    syn::custom_keyword!(backoff_ms);
    syn::custom_keyword!(read_committed);
    syn::custom_keyword!(repeatable_read);
    syn::custom_keyword!(serializable);
}

const TX_OPTIONS: &str = "isolation = read_committed | repeatable_read | serializable, read_only, deferrable, \
                          retry = N, backoff_ms = N, crate = \"path\"";

/// An option's value and where it was written.
pub(crate) type Spanned<T> = (T, Span);

/// Transaction isolation levels as written in the attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isolation {
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

/// The options of `#[transactional(...)]`.
#[derive(Default)]
pub(crate) struct TxArgs {
    pub(crate) isolation: Option<Spanned<Isolation>>,
    pub(crate) read_only: Option<Spanned<()>>,
    pub(crate) deferrable: Option<Spanned<()>>,
    pub(crate) retry: Option<Spanned<u32>>,
    pub(crate) backoff_ms: Option<Spanned<u64>>,
    pub(crate) krate: Option<Spanned<syn::Path>>,
}

/// The options of `#[with_conn(...)]`.
#[derive(Default)]
pub(crate) struct ConnArgs {
    pub(crate) krate: Option<Spanned<syn::Path>>,
}

/// Stores an option, refusing a second occurrence. One helper for every option, so the
/// duplicate checks cannot drift apart.
fn set_once<T>(slot: &mut Option<Spanned<T>>, value: T, span: Span, name: &str) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            span,
            format!("duplicate option `{name}`: give each option once"),
        ));
    }
    *slot = Some((value, span));
    Ok(())
}

/// `crate = "path"`, recorded once in `slot` (with the span of `crate`). The one parser
/// of this option, for the attributes and `sql!` alike.
pub(crate) fn parse_crate(
    input: ParseStream<'_>,
    slot: &mut Option<Spanned<syn::Path>>,
) -> syn::Result<()> {
    let how = |span| {
        syn::Error::new(
            span,
            "`crate` takes a path in a string, e.g. crate = \"::my_reexport::pool_core\"",
        )
    };
    let token: Token![crate] = input.parse()?;
    input.parse::<Token![=]>().map_err(|e| how(e.span()))?;
    let lit: LitStr = input.parse().map_err(|e| how(e.span()))?;
    let path = lit.parse::<syn::Path>().map_err(|_| how(lit.span()))?;
    set_once(slot, path, token.span, "crate")
}

/// The path of pool-core: `crate = "…"` if given, else `::pool_core`.
pub(crate) fn crate_path(given: Option<&syn::Path>) -> syn::Path {
    given
        .cloned()
        .unwrap_or_else(|| syn::parse_quote!(::pool_core))
}

fn parse_int<T: std::str::FromStr>(input: ParseStream<'_>, name: &str) -> syn::Result<T>
where
    T::Err: std::fmt::Display,
{
    input.parse::<Token![=]>()?;
    let lit: LitInt = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), format!("`{name}` takes a whole number")))?;
    lit.base10_parse()
}

impl Parse for TxArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = TxArgs::default();
        while !input.is_empty() {
            let look = input.lookahead1();
            if look.peek(kw::isolation) {
                input.parse::<kw::isolation>()?;
                input.parse::<Token![=]>()?;
                let look = input.lookahead1();
                let (level, span) = if look.peek(kw::read_committed) {
                    (
                        Isolation::ReadCommitted,
                        input.parse::<kw::read_committed>()?.span,
                    )
                } else if look.peek(kw::repeatable_read) {
                    (
                        Isolation::RepeatableRead,
                        input.parse::<kw::repeatable_read>()?.span,
                    )
                } else if look.peek(kw::serializable) {
                    (
                        Isolation::Serializable,
                        input.parse::<kw::serializable>()?.span,
                    )
                } else {
                    return Err(syn::Error::new(
                        input.span(),
                        "`isolation` is one of read_committed, repeatable_read, serializable",
                    ));
                };
                set_once(&mut args.isolation, level, span, "isolation")?;
            } else if look.peek(kw::read_only) {
                let key: kw::read_only = input.parse()?;
                set_once(&mut args.read_only, (), key.span, "read_only")?;
            } else if look.peek(kw::deferrable) {
                let key: kw::deferrable = input.parse()?;
                set_once(&mut args.deferrable, (), key.span, "deferrable")?;
            } else if look.peek(kw::retry) {
                let key: kw::retry = input.parse()?;
                let n = parse_int::<u32>(input, "retry")?;
                set_once(&mut args.retry, n, key.span, "retry")?;
            } else if look.peek(kw::backoff_ms) {
                let key: kw::backoff_ms = input.parse()?;
                let n = parse_int::<u64>(input, "backoff_ms")?;
                set_once(&mut args.backoff_ms, n, key.span, "backoff_ms")?;
            } else if look.peek(Token![crate]) {
                parse_crate(input, &mut args.krate)?;
            } else {
                return Err(unknown_option(input, TX_OPTIONS));
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

impl Parse for ConnArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = ConnArgs::default();
        while !input.is_empty() {
            if input.peek(Token![crate]) {
                parse_crate(input, &mut args.krate)?;
            } else {
                return Err(unknown_option(
                    input,
                    "crate = \"path\" (the only option of #[with_conn])",
                ));
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

fn unknown_option(input: ParseStream<'_>, valid: &str) -> syn::Error {
    let found = input
        .fork()
        .parse::<proc_macro2::TokenTree>()
        .map(|t| t.to_string())
        .unwrap_or_default();
    syn::Error::new(
        input.span(),
        format!("unknown option `{found}`; valid options: {valid}"),
    )
}

impl TxArgs {
    /// Checks combinations of options.
    pub(crate) fn validate(&self) -> syn::Result<()> {
        if let Some((0, span)) = self.retry {
            return Err(syn::Error::new(
                span,
                "`retry = 0` would never retry; give the number of retries (1 or more), or remove the option",
            ));
        }
        if let Some((_, span)) = self.backoff_ms
            && self.retry.is_none()
        {
            return Err(syn::Error::new(
                span,
                "`backoff_ms` only applies with `retry = N`",
            ));
        }
        if let Some((_, span)) = self.deferrable {
            let serializable = matches!(self.isolation, Some((Isolation::Serializable, _)));
            if !serializable || self.read_only.is_none() {
                return Err(syn::Error::new(
                    span,
                    "`deferrable` only has an effect with `isolation = serializable, read_only`; add both or remove it",
                ));
            }
        }
        Ok(())
    }
}
