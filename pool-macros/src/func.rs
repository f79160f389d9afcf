//! Reading and validating the annotated function. Everything that can be wrong with the
//! user's code is found here, so that expansion cannot fail.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, Pat, ReturnType, Type, TypePath};

/// Which attribute is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    WithConn,
    Transactional,
}

impl Which {
    fn attr(self) -> &'static str {
        match self {
            Which::WithConn => "#[with_conn]",
            Which::Transactional => "#[transactional]",
        }
    }
    fn wanted(self) -> &'static str {
        match self {
            Which::WithConn => "Conn",
            Which::Transactional => "Tx",
        }
    }
    fn param(self) -> &'static str {
        match self {
            Which::WithConn => "conn: &mut Conn",
            Which::Transactional => "tx: &mut Tx",
        }
    }
}

/// The function, with its connection (or transaction) parameter located.
pub(crate) struct Func {
    pub(crate) item: ItemFn,
    /// Index of the connection parameter in `sig.inputs`.
    pub(crate) index: usize,
    /// Its name, as the user wrote it (the body refers to it).
    pub(crate) ident: Ident,
    pub(crate) mutability: Option<syn::token::Mut>,
    /// The referenced type as written (`Conn`, `pool_core::Tx<'a>`…).
    pub(crate) inner: TypePath,
    /// The declared return type (a `Result`).
    pub(crate) ret: Type,
}

/// The last path segment's name of a type, looking through references.
fn type_name(ty: &Type) -> Option<(String, Span)> {
    match ty {
        Type::Reference(r) => type_name(&r.elem),
        Type::Path(p) => p
            .path
            .segments
            .last()
            .map(|s| (s.ident.to_string(), s.ident.span())),
        Type::Paren(p) => type_name(&p.elem),
        Type::Group(g) => type_name(&g.elem),
        _ => None,
    }
}

/// `&mut X` where X is a path: X.
fn mut_ref_path(ty: &Type) -> Option<&TypePath> {
    match ty {
        Type::Reference(r) if r.mutability.is_some() => match &*r.elem {
            Type::Path(p) => Some(p),
            _ => None,
        },
        Type::Group(g) => mut_ref_path(&g.elem),
        _ => None,
    }
}

pub(crate) fn analyze(item: ItemFn, which: Which) -> syn::Result<Func> {
    let sig = &item.sig;
    let attr = which.attr();
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span,
            format!(
                "{attr} needs an `async fn`: it {} around the body, which takes awaiting; write `async fn {}`",
                match which {
                    Which::WithConn => "checks a connection out and returns it",
                    Which::Transactional => "begins and commits a transaction",
                },
                sig.ident
            ),
        ));
    }
    let ret = match &sig.output {
        ReturnType::Type(_, ty) if type_name(ty).is_some_and(|(n, _)| n == "Result") => {
            (**ty).clone()
        }
        ReturnType::Type(_, ty) => {
            return Err(syn::Error::new(
                ty.span(),
                format!(
                    "{attr} functions must return `Result<T, E>` with `E: From<pool_core::Error>`: {} can fail, \
                     and the error has to go somewhere",
                    match which {
                        Which::WithConn => "checking out a connection",
                        Which::Transactional => "beginning or committing a transaction",
                    }
                ),
            ));
        }
        ReturnType::Default => {
            return Err(syn::Error::new(
                sig.paren_token.span.close(),
                format!(
                    "{attr} functions must return `Result<T, E>` with `E: From<pool_core::Error>`; add `-> Result<(), pool_core::Error>`"
                ),
            ));
        }
    };

    let mut found: Option<(usize, Ident, Option<syn::token::Mut>, TypePath)> = None;
    for (i, arg) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(pt) = arg else { continue };
        if let Some((name, span)) = type_name(&pt.ty)
            && (name == "Db" || name == "Pool")
        {
            let what = if which == Which::WithConn {
                "the connection"
            } else {
                "the transaction"
            };
            return Err(syn::Error::new(
                span,
                format!(
                    "{attr} function also takes a `{name}`: checking out from it while {what} is held is the \
                         nested checkout that deadlocks pools; take only `{}` and let callers pass theirs \
                         (`&mut db` or a held connection)",
                    which.param()
                ),
            ));
        }
        let Some(path) = mut_ref_path(&pt.ty) else {
            continue;
        };
        let Some(last) = path.path.segments.last() else {
            continue;
        };
        let name = last.ident.to_string();
        let other = match which {
            Which::WithConn => "Tx",
            Which::Transactional => "Conn",
        };
        if name == other {
            return Err(syn::Error::new(
                last.ident.span(),
                match which {
                    Which::WithConn => "#[with_conn] takes `conn: &mut Conn`; for a transaction, use #[transactional] with `tx: &mut Tx`".to_owned(),
                    Which::Transactional => "#[transactional] takes `tx: &mut Tx`; for a plain connection, use #[with_conn] with `conn: &mut Conn`".to_owned(),
                },
            ));
        }
        if name != which.wanted() {
            continue;
        }
        if found.is_some() {
            return Err(syn::Error::new(
                pt.span(),
                format!(
                    "a second `&mut {}` parameter: {attr} provides exactly one; pass one and use it for everything",
                    which.wanted()
                ),
            ));
        }
        let pi = match &*pt.pat {
            Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => pi,
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    format!(
                        "name the {} parameter with a plain identifier, like `{}`",
                        which.wanted(),
                        which.param()
                    ),
                ));
            }
        };
        found = Some((i, pi.ident.clone(), pi.mutability, path.clone()));
    }
    let Some((index, ident, mutability, inner)) = found else {
        return Err(syn::Error::new(
            sig.ident.span(),
            format!(
                "{attr} needs a `{}` parameter: it is what the attribute provides — {}",
                which.param(),
                match which {
                    Which::WithConn =>
                        "checked out from `&mut db`, or the caller's own connection, reused",
                    Which::Transactional =>
                        "a transaction begun on the caller's source (a savepoint inside a transaction)",
                }
            ),
        ));
    };
    Ok(Func {
        item,
        index,
        ident,
        mutability,
        inner,
        ret,
    })
}
