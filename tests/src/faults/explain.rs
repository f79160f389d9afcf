//! Checks that an error names its category and its root cause.
//!
//! The pool promises that whatever fails is explained: a timeout says what timed out and
//! why (who holds the connections, why connecting failed), a lost connection carries the
//! driver's error that lost it. [`explain`] turns an error into that pair, or says what
//! is missing.

use std::fmt;

use pool_core::{Error, TimeoutKind};

/// The kind of failure an error reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// No connection within `acquire_timeout`.
    AcquireTimeout,
    /// A statement ran past `statement_timeout`.
    StatementTimeout,
    /// Opening a connection ran past `connect_timeout`.
    ConnectTimeout,
    /// The server refused a new connection.
    Connect,
    /// The connection was lost.
    Broken,
    /// The server rejected a statement.
    Db,
    /// The pool was closed.
    Closed,
    /// A transaction can no longer commit.
    TransactionAborted,
    /// Anything else (refusals, row counts, configuration…): not expected from a workload.
    Other,
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Category::AcquireTimeout => "acquire timeout",
            Category::StatementTimeout => "statement timeout",
            Category::ConnectTimeout => "connect timeout",
            Category::Connect => "connect refused",
            Category::Broken => "connection lost",
            Category::Db => "server error",
            Category::Closed => "pool closed",
            Category::TransactionAborted => "transaction aborted",
            Category::Other => "other",
        })
    }
}

/// An error's category and root cause.
#[derive(Clone, Debug)]
pub struct Explained {
    /// What kind of failure it is.
    pub category: Category,
    /// The root cause, in words: the deepest source, a SQLSTATE, the holders…
    pub root: String,
}

/// The error and all its sources, joined with `: `.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The deepest source of an error (the error itself if it has none).
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(s) = current.source() {
        current = s;
    }
    current.to_string()
}

/// The SQLSTATE anywhere in the error's chain, if any.
pub fn sqlstate(error: &Error) -> Option<String> {
    if let Some(code) = error.code() {
        return Some(code.code().to_owned());
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(s) = source {
        if let Some(pg) = s.downcast_ref::<tokio_postgres::Error>()
            && let Some(code) = pg.code()
        {
            return Some(code.code().to_owned());
        }
        source = s.source();
    }
    None
}

fn driver_root(error: &Error) -> Option<String> {
    std::error::Error::source(error).map(root_cause)
}

/// The category and root cause of `error`, or why it fails to name them.
pub fn explain(error: &Error) -> Result<Explained, String> {
    let text = error.to_string();
    if text.is_empty() || text.chars().next().is_some_and(char::is_uppercase) {
        return Err(format!("badly formed message: {text:?}"));
    }
    let explained = |category, root: String| Ok(Explained { category, root });
    match error {
        Error::Timeout(t) => match t.kind() {
            TimeoutKind::Acquire => {
                if let Some(cause) = t.last_connect_error() {
                    let why = match cause.as_timeout() {
                        Some(ct) => format!("connecting timed out after {:?}", ct.after()),
                        None => root_cause(cause),
                    };
                    return explained(Category::AcquireTimeout, format!("last connect: {why}"));
                }
                if !t.holders().is_empty() {
                    let first = &t.holders()[0];
                    return explained(
                        Category::AcquireTimeout,
                        format!(
                            "{} holders, longest {} for {:?}",
                            t.holders().len(),
                            first.site,
                            first.held_for
                        ),
                    );
                }
                match t.status() {
                    Some(s) if s.connecting > 0 => explained(
                        Category::AcquireTimeout,
                        format!("{} connections still being opened", s.connecting),
                    ),
                    Some(s) if s.in_use > 0 => explained(
                        Category::AcquireTimeout,
                        format!(
                            "{} connections between borrowers (cleaning or checking)",
                            s.in_use
                        ),
                    ),
                    _ => Err(format!(
                        "bare acquire timeout: no holder, no connect error, nothing connecting: {text}"
                    )),
                }
            }
            TimeoutKind::Statement => explained(
                Category::StatementTimeout,
                format!("statement_timeout {:?}", t.after()),
            ),
            TimeoutKind::Connect => explained(
                Category::ConnectTimeout,
                format!("connect_timeout {:?}", t.after()),
            ),
            _ => Err(format!("unknown timeout kind: {text}")),
        },
        Error::Connect { .. } => match driver_root(error) {
            Some(root) => explained(Category::Connect, root),
            None => Err(format!("connect error without a cause: {text}")),
        },
        Error::Broken { what, .. } => match driver_root(error) {
            Some(root) => explained(Category::Broken, root),
            // Without a driver error, the pool's own account must be the cause itself.
            None if *what
                == "an interrupted statement could not be cancelled and drained in time" =>
            {
                explained(Category::Broken, (*what).to_owned())
            }
            None => Err(format!(
                "lost connection without a root cause (no driver error): {text}"
            )),
        },
        Error::Db(_) => match sqlstate(error) {
            Some(code) => explained(Category::Db, format!("SQLSTATE {code}")),
            None => Err(format!("server error without a SQLSTATE: {text}")),
        },
        Error::Closed => explained(Category::Closed, "pool closed".to_owned()),
        Error::TransactionAborted { reason } => {
            explained(Category::TransactionAborted, (*reason).to_owned())
        }
        other => explained(Category::Other, chain(other)),
    }
}

/// Whether nothing of the failed operation reached the server: the error came before a
/// connection was handed out.
pub fn before_send(error: &Error) -> bool {
    matches!(
        error,
        Error::Timeout(t) if t.kind() == TimeoutKind::Acquire
    ) || matches!(
        error,
        Error::Connect { .. }
            | Error::Closed
            | Error::TooManyWaiters { .. }
            | Error::NestedCheckout { .. }
            | Error::Refused { .. }
            | Error::Config { .. }
    )
}
