//! The one error type of the crate.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::{DbError, SqlState};

use crate::status::{DisplayDuration, Holder, Site, Status};

/// `Result` with this crate's [`enum@Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when using the pool.
///
/// Messages are lowercase, say what happened and what to do. Where an error has an
/// underlying cause (a connect failure, an I/O error), the cause is returned by
/// [`std::error::Error::source`] and is *not* repeated in the message: print the chain
/// (`{:#}` with anyhow, or walk `source()`) to see everything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pool was configured with an invalid value.
    #[error("invalid pool configuration: `{field}` {problem}")]
    #[non_exhaustive]
    Config {
        /// The builder method or URL part at fault.
        field: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },

    /// A deadline passed: acquiring a connection, connecting, or running a statement.
    #[error(transparent)]
    Timeout(Box<Timeout>),

    /// The server refused a new connection for a reason that retrying will not fix
    /// (bad password, unknown database or role, TLS refused).
    #[error(
        "could not connect to the database{}",
        connect_detail(.source)
    )]
    #[non_exhaustive]
    Connect {
        /// The driver's error.
        #[source]
        source: Arc<tokio_postgres::Error>,
    },

    /// This task already holds a connection from this pool and asked for another: the
    /// shape of code that deadlocks a pool under load (every task holds one and waits for
    /// a second). Pass the held connection down instead.
    #[error(
        "nested checkout: this task already holds a connection from this pool (checked out at {first}) \
         and asked for a second one at {second}; under load every task would hold one and wait \
         for another, and the pool would deadlock. Pass the held connection down (`&mut conn`) \
         instead of checking out again, or take both at once with `db.acquire_many(2)`"
    )]
    NestedCheckout {
        /// Where the connection this task already holds was checked out.
        first: Site,
        /// Where the refused second checkout was attempted.
        second: Site,
    },

    /// `max_waiting` tasks are already waiting for a connection; this one was turned away
    /// at once instead of queueing.
    #[error(
        "too many tasks waiting for a connection ({waiting} already queued, max_waiting = {max_waiting}); \
         shed load, raise max_size or max_waiting, or shorten what holds connections"
    )]
    TooManyWaiters {
        /// How many tasks were waiting.
        waiting: usize,
        /// The configured bound.
        max_waiting: usize,
    },

    /// The pool was closed with [`Pool::close`](crate::Pool::close).
    #[error("the pool is closed; no new connections are handed out")]
    Closed,

    /// The server rejected the statement. The server's message is shown here; use
    /// [`Error::code`] and [`Error::as_db_error`] to inspect it.
    #[error("{}", db_message(.0))]
    Db(Box<tokio_postgres::Error>),

    /// The statement could not be encoded or its result decoded (wrong parameter count or
    /// type, a column conversion failed).
    #[error("the statement's parameters or results do not match the Rust types used")]
    Client(#[source] Box<tokio_postgres::Error>),

    /// The connection was lost or became unusable; the pool discards it and the next
    /// acquire opens a new one. Retry the work on a fresh connection.
    #[error(
        "the connection to the server was lost ({what}); the pool discards it, retry on a fresh connection"
    )]
    #[non_exhaustive]
    Broken {
        /// What was going on when the connection was found broken.
        what: &'static str,
        /// The driver's error, if there was one.
        #[source]
        source: Option<Arc<tokio_postgres::Error>>,
    },

    /// A statement was refused before anything was sent, because it cannot do what it
    /// means where it was run (a `LOCK TABLE` outside a transaction, a `SET` on a one-shot
    /// statement whose connection goes straight back to the pool, a raw `BEGIN`).
    #[error("refused `{statement}`: {reason}")]
    #[non_exhaustive]
    Refused {
        /// The start of the statement.
        statement: String,
        /// Why, and what to write instead.
        reason: String,
    },

    /// `query_one` found no row or more than one.
    #[error(
        "expected exactly one row, the query returned {rows}; use query_opt for zero-or-one or query for many"
    )]
    RowCount {
        /// How many rows came back.
        rows: usize,
    },

    /// The transaction can no longer do anything: it failed, or a statement inside it was
    /// cancelled, and it has been (or will be) rolled back.
    #[error("{reason}; the transaction was rolled back, run it again from the start")]
    TransactionAborted {
        /// What happened.
        reason: &'static str,
    },

    /// The password provider (`Builder::password_provider`) failed or did not answer in
    /// time, so no connection could be opened.
    #[error(
        "the password provider {what}, so no connection could be opened; check the credential source \
         (the pool asks it again for the next connection)"
    )]
    #[non_exhaustive]
    Credentials {
        /// What went wrong.
        what: String,
        /// The provider's error, if it returned one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },

    /// A hook (`after_connect`) left the connection unfit to hand out — inside a
    /// transaction, with an interrupted operation, or broken — so the pool discarded it.
    #[error(
        "the {hook} hook left the connection {problem}, so the pool discarded it; end every transaction \
         the hook begins (commit it) and await every statement it starts"
    )]
    #[non_exhaustive]
    Hook {
        /// Which hook.
        hook: &'static str,
        /// What it left behind.
        problem: &'static str,
    },

    /// A read on the read side (`ReadDb`) found no replica able to serve it, and the pool
    /// is set to fail rather than read from the primary
    /// (`replica_fallback(ReplicaFallback::Fail)`).
    #[error(
        "no replica can serve this read: {why}; wait for them to recover or catch up, raise max_replica_lag,          or let reads fall back to the primary (ReplicaFallback::Primary)"
    )]
    #[non_exhaustive]
    NoReplica {
        /// Why each replica was passed over (`host:port: reason`, `; `-separated).
        why: String,
    },
}

/// Why a connect failed, and what to check.
fn connect_detail(e: &tokio_postgres::Error) -> String {
    const CHECK: &str = "check the URL, credentials and that the database exists";
    #[cfg(feature = "rustls")]
    if let Some(refusal) = certificate_refusal(e) {
        return format!(": TLS refused the server's certificate: {refusal}");
    }
    match e.as_db_error() {
        Some(db) => format!(
            " (SQLSTATE {}: {}); {CHECK}",
            db.code().code(),
            db.message()
        ),
        // The driver's error is the source, not repeated here.
        None => format!("; {CHECK}"),
    }
}

fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!(
                "{} {}: {}",
                db.severity().to_lowercase(),
                db.code().code(),
                db.message()
            );
            if let Some(detail) = db.detail() {
                s.push_str("; detail: ");
                s.push_str(detail);
            }
            if let Some(hint) = db.hint() {
                s.push_str("; hint: ");
                s.push_str(hint);
            }
            s
        }
        None => "the server rejected the statement".to_owned(),
    }
}

impl Error {
    /// The SQLSTATE of a server error (for `Db` and `Connect` errors), or `None`.
    pub fn code(&self) -> Option<&SqlState> {
        self.postgres().and_then(|e| e.code())
    }

    /// The server's error report, for errors that came from the server.
    pub fn as_db_error(&self) -> Option<&DbError> {
        self.postgres().and_then(|e| e.as_db_error())
    }

    /// The underlying driver error, if there is one.
    pub fn postgres(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Error::Db(e) | Error::Client(e) => Some(e),
            Error::Connect { source } => Some(source),
            Error::Broken { source, .. } => source.as_deref(),
            Error::Timeout(t) => t.last_connect_error.as_deref().and_then(Error::postgres),
            _ => None,
        }
    }

    /// A deadline passed (acquire, connect, statement), or the server cancelled the
    /// statement for exceeding its own `statement_timeout` (SQLSTATE 57014).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_)) || self.code() == Some(&SqlState::QUERY_CANCELED)
    }

    /// SQLSTATE 40001: a serializable or repeatable-read transaction lost a conflict.
    /// Running the whole transaction again will usually succeed
    /// (`#[transactional(retry = N)]` does that).
    pub fn is_serialization_failure(&self) -> bool {
        self.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
    }

    /// SQLSTATE 40P01: the server broke a deadlock by aborting this transaction.
    pub fn is_deadlock(&self) -> bool {
        self.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
    }

    /// Worth running the whole transaction again: a serialization failure or a deadlock.
    pub fn is_retryable(&self) -> bool {
        self.is_serialization_failure() || self.is_deadlock()
    }

    /// The pool is closed, or the connection was lost.
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed | Error::Broken { .. })
    }

    /// The timeout details, for `Timeout` errors.
    pub fn as_timeout(&self) -> Option<&Timeout> {
        match self {
            Error::Timeout(t) => Some(t),
            _ => None,
        }
    }

    pub(crate) fn config(field: &'static str, problem: impl Into<String>) -> Error {
        Error::Config {
            field,
            problem: problem.into(),
        }
    }

    pub(crate) fn broken(what: &'static str, source: Option<tokio_postgres::Error>) -> Error {
        Error::Broken {
            what,
            source: source.map(Arc::new),
        }
    }

    /// A lost connection whose cause is shared by several errors (the statements in
    /// flight on one shared connection).
    pub(crate) fn broken_by(what: &'static str, source: Arc<tokio_postgres::Error>) -> Error {
        Error::Broken {
            what,
            source: Some(source),
        }
    }

    pub(crate) fn refused(sql: &str, reason: impl Into<String>) -> Error {
        Error::Refused {
            statement: preview(sql),
            reason: reason.into(),
        }
    }
}

/// The first line of a statement, shortened, for messages.
pub(crate) fn preview(sql: &str) -> String {
    const MAX: usize = 60;
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= MAX {
        one_line
    } else {
        let cut: String = one_line.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// What timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// Waiting for a connection from the pool (`acquire_timeout`).
    Acquire,
    /// Opening a connection: TCP, TLS, startup and authentication (`connect_timeout`).
    Connect,
    /// A statement ran longer than `statement_timeout`; it was cancelled on the server.
    Statement,
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutKind::Acquire => "acquire",
            TimeoutKind::Connect => "connect",
            TimeoutKind::Statement => "statement",
        })
    }
}

/// The details of a timeout: what timed out, after how long, and the pool's state at
/// that moment — who held the connections and what the last connect attempt said.
#[derive(Debug, Clone)]
pub struct Timeout {
    pub(crate) kind: TimeoutKind,
    pub(crate) after: Duration,
    pub(crate) status: Option<Status>,
    pub(crate) holders: Vec<Holder>,
    pub(crate) last_connect_error: Option<Arc<Error>>,
    pub(crate) statement: Option<String>,
    /// A statement timeout that passed before the statement was sent: the connection was
    /// still recovering from an earlier interrupted statement.
    pub(crate) unsent: bool,
    /// A one-shot on the shared lane: its answer is abandoned, and the server ends it.
    pub(crate) shared: bool,
}

impl Timeout {
    /// What timed out.
    pub fn kind(&self) -> TimeoutKind {
        self.kind
    }
    /// The deadline that passed.
    pub fn after(&self) -> Duration {
        self.after
    }
    /// The pool's status when an acquire deadline passed.
    pub fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }
    /// Who held connections when the deadline passed, longest-held first.
    pub fn holders(&self) -> &[Holder] {
        &self.holders
    }
    /// Why the most recent failed attempt to open a connection failed, if the server is
    /// still failing or one failed during the wait (also the `source()` of the error): an
    /// unreachable server, a refused password…
    pub fn last_connect_error(&self) -> Option<&Error> {
        self.last_connect_error.as_deref()
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let after = DisplayDuration(self.after);
        match self.kind {
            TimeoutKind::Acquire => {
                write!(f, "timed out after {after} waiting for a connection")?;
                if let Some(s) = &self.status {
                    write!(
                        f,
                        ": {} of max {} in use, {} idle, {} other tasks waiting",
                        s.in_use, s.max_size, s.idle, s.waiting
                    )?;
                }
                if self.last_connect_error.is_some() {
                    f.write_str("; an attempt to open a connection failed during the wait (see the source of this error)")?;
                }
                let cleaning = self.status.as_ref().map_or(0, |s| s.in_use);
                if self.holders.is_empty() && cleaning > 0 {
                    // In use by the pool itself: still counted against max_size.
                    write!(
                        f,
                        "; no borrower holds one: {cleaning} are between borrowers (an interrupted \
                         statement being cancelled, a rollback or reset, or the check before hand-out), \
                         so a slow or unreachable server is holding them up"
                    )?;
                } else if self.holders.is_empty() {
                    f.write_str(
                        "; no connection is held, so the server is unreachable or slow to accept",
                    )?;
                } else {
                    f.write_str("; held by: ")?;
                    for (i, h) in self.holders.iter().enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        if i == 5 {
                            write!(f, "and {} more", self.holders.len() - 5)?;
                            break;
                        }
                        write!(
                            f,
                            "{} ({}, for {})",
                            h.site,
                            h.task,
                            DisplayDuration(h.held_for)
                        )?;
                    }
                    f.write_str(
                        "; release connections sooner, raise max_size, or look for a task that holds one while waiting for another",
                    )?;
                }
                Ok(())
            }
            TimeoutKind::Connect => {
                write!(
                    f,
                    "timed out after {after} opening a connection (TCP, TLS, startup and authentication)"
                )?;
                f.write_str("; check that the server is up and reachable, or raise connect_timeout")
            }
            TimeoutKind::Statement => {
                write!(f, "statement timed out after {after}")?;
                if let Some(sql) = &self.statement {
                    write!(f, " (`{sql}`)")?;
                }
                if self.shared {
                    f.write_str(
                        " on a shared connection: its answer is discarded and the server ends it at the pool's \
                         statement_timeout (it is cancelled at once only when it was alone there, since a cancel \
                         would hit its neighbours); make it faster, or raise statement_timeout or this call's deadline",
                    )
                } else if self.unsent {
                    f.write_str(
                        " before it was sent: the connection was still recovering from an earlier interrupted \
                         statement (cancelling it and draining the connection), so the server is slow or \
                         unreachable; retry on a fresh connection, or raise statement_timeout for this pool",
                    )
                } else {
                    f.write_str(
                        " and was cancelled on the server; make it faster, or raise statement_timeout for this pool",
                    )
                }
            }
        }
    }
}

impl std::error::Error for Timeout {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.last_connect_error
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// How an error from the driver affects the connection it happened on.
pub(crate) fn is_fatal(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08")
                || code == "57P01"
                || code == "57P02"
                || code == "57P03"
                || matches!(db.severity(), "FATAL" | "PANIC")
        }
        // Not a server error: I/O, protocol or TLS trouble means the stream is unusable;
        // encoding/decoding problems (ToSql, FromSql, column lookups) leave it intact.
        None => {
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                if s.is::<std::io::Error>() {
                    return true;
                }
                src = s.source();
            }
            let text = e.to_string();
            [
                "error communicating with the server",
                "unexpected message from server",
                "error performing TLS handshake",
                "error parsing response from server",
                "connection closed",
                "timeout waiting for server",
            ]
            .iter()
            .any(|p| text.starts_with(p))
        }
    }
}

/// A driver error that did not come through the pool's own calls — `Row::try_get`, a
/// `FromSql` conversion — so that `?` works in functions returning the pool's `Result`.
/// Classified as a statement's error would be: a server error is [`Error::Db`], a
/// conversion is [`Error::Client`], a lost connection is [`Error::Broken`].
impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Error {
        from_statement(e)
    }
}

/// Turns a driver error from a statement into the crate's error.
pub(crate) fn from_statement(e: tokio_postgres::Error) -> Error {
    if is_fatal(&e) {
        Error::broken("while running a statement", Some(e))
    } else if e.as_db_error().is_some() {
        Error::Db(Box::new(e))
    } else {
        Error::Client(Box::new(e))
    }
}

#[cfg(feature = "rustls")]
/// If a connect error is a refused server certificate (which retrying cannot fix), why.
pub(crate) fn certificate_refusal(e: &tokio_postgres::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(error) = source {
        let inner = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
            None => Some(error),
        };
        if let Some(rustls::Error::InvalidCertificate(problem)) =
            inner.and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return Some(match problem {
                rustls::CertificateError::Other(rustls::OtherError(why)) => why.to_string(),
                problem => problem.to_string(),
            });
        }
        source = error.source();
    }
    None
}
