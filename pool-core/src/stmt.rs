//! Statements and where they may run.
//!
//! Every query method takes a statement `S: Sql`: a `&str`/`String` (classified at run
//! time), a [`Stmt`] made by `sql!` (classified at compile time), or a [`Prepared`]
//! statement. Where a statement may run is a trait bound on the method:
//!
//! | statement kind | `Db` (one-shot) | `Conn` (held) | `Tx` (transaction) |
//! |---|---|---|---|
//! | [`Plain`] | yes | yes | yes |
//! | [`SessionState`] (`SET`, `LISTEN`, advisory locks, temp tables, `currval`…) | no | yes | yes |
//! | [`TransactionOnly`] (`LOCK TABLE`, `SET LOCAL`, `FOR UPDATE`, xact locks) | no | no | yes |
//! | transaction control (`BEGIN`, `COMMIT`…) | no | no | no |
//!
//! A `COPY … FROM STDIN` / `COPY … TO STDOUT` streams its data through the client and
//! runs only through `copy_in` / `copy_out` (on `Db`, `Conn` and `Tx`): `sql!` makes it a
//! [`Stmt<CopyIn>`](CopyIn) / [`Stmt<CopyOut>`](CopyOut), which the statement methods do
//! not take, and a string is refused at run time with the method to use.

use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use pool_sql::{Classification, CopyDirection, Kind, Refusal, Touches};
use tokio_postgres::Statement;

/// The future of a statement method (`query`, `execute`, `copy_in`…). It is boxed so
/// that a statement run where it cannot mean what it says is reported once, at the call,
/// rather than again wherever the future is used.
///
/// [`timeout`](StatementFuture::timeout) gives this one statement its own deadline in
/// place of the pool's `statement_timeout`: `conn.query(sql, &[]).timeout(d).await`.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct StatementFuture<'a, T> {
    inner: Pin<Box<dyn Future<Output = crate::Result<T>> + Send + 'a>>,
    /// `Some`: this call's own deadline (`Some(None)`: none at all).
    timeout: Option<Option<Duration>>,
}

tokio::task_local! {
    /// The deadline of the statement being polled, when its call set one.
    static CALL_TIMEOUT: Option<Duration>;
}

/// The deadline the statement being polled set for itself, if it did (`Some(None)`: it
/// asked for none).
pub(crate) fn call_timeout() -> Option<Option<Duration>> {
    CALL_TIMEOUT.try_with(|t| *t).ok()
}

impl<'a, T> StatementFuture<'a, T> {
    pub(crate) fn new(fut: impl Future<Output = crate::Result<T>> + Send + 'a) -> Self {
        StatementFuture {
            inner: Box::pin(fut),
            timeout: None,
        }
    }

    /// Runs this statement with its own deadline instead of the pool's
    /// `statement_timeout` (shorter or longer). When it passes, the statement is
    /// cancelled on the server and the connection drained before its next use, as with
    /// the pool's deadline, and the error is a [`TimeoutKind::Statement`] timeout after
    /// `d`. For a one-shot on `Db` it covers the statement, not the checkout (which keeps
    /// `acquire_timeout`); for a stream or a COPY, starting it. `d` must be more than zero.
    ///
    /// [`TimeoutKind::Statement`]: crate::TimeoutKind::Statement
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(Some(d));
        self
    }

    /// Runs this statement without a deadline, whatever the pool's `statement_timeout`
    /// (for a known long statement: a migration, a `VACUUM`, a bulk `COPY`).
    pub fn no_timeout(mut self) -> Self {
        self.timeout = Some(None);
        self
    }
}

impl<T> Future for StatementFuture<'_, T> {
    type Output = crate::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.timeout {
            None => this.inner.as_mut().poll(cx),
            Some(Some(d)) if d.is_zero() => Poll::Ready(Err(crate::Error::Config {
                field: "StatementFuture::timeout",
                problem: "must be more than zero; for no deadline at all use `.no_timeout()`"
                    .to_owned(),
            })),
            Some(t) => CALL_TIMEOUT.sync_scope(t, || this.inner.as_mut().poll(cx)),
        }
    }
}

impl<T> std::fmt::Debug for StatementFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatementFuture")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Marker: a statement safe on any pooled connection (`SELECT`, `INSERT`, DDL…).
#[derive(Debug, Clone, Copy)]
pub enum Plain {}

/// Marker: a [`Plain`] statement that provably only reads (`SELECT`, `VALUES`, `TABLE`,
/// `SHOW`, a `WITH` that modifies nothing; no `FOR UPDATE`, no `SELECT … INTO`, no call
/// that writes or locks). It runs wherever a `Plain` one does, and also on the read side
/// ([`ReadDb`](crate::ReadDb): replicas). `Stmt<ReadOnly>` converts into `Stmt<Plain>`.
#[derive(Debug, Clone, Copy)]
pub enum ReadOnly {}

/// Marker: a statement that leaves state in the session (`SET`, `LISTEN`, session
/// advisory locks, temp tables, `PREPARE`, `currval`…). It needs a held connection; the
/// pool resets that state before the connection is reused.
#[derive(Debug, Clone, Copy)]
pub enum SessionState {}

/// Marker: a statement that only means something inside a transaction (`LOCK TABLE`,
/// `SET LOCAL`, `pg_advisory_xact_lock`, `SELECT … FOR UPDATE`).
#[derive(Debug, Clone, Copy)]
pub enum TransactionOnly {}

/// Marker: a `COPY … FROM STDIN` made by `sql!`; it runs only through `copy_in`.
#[derive(Debug, Clone, Copy)]
pub enum CopyIn {}

/// Marker: a `COPY … TO STDOUT` made by `sql!`; it runs only through `copy_out`.
#[derive(Debug, Clone, Copy)]
pub enum CopyOut {}

/// A statement classified at compile time by `sql!`. The kind parameter is one of
/// [`ReadOnly`], [`Plain`], [`SessionState`], [`TransactionOnly`] and decides where it
/// may run; a `COPY` through the client is a [`CopyIn`] or [`CopyOut`].
pub struct Stmt<K> {
    sql: &'static str,
    touches: u16,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Stmt<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K> Copy for Stmt<K> {}

impl<K> std::fmt::Debug for Stmt<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stmt")
            .field("sql", &self.sql)
            .field("kind", &std::any::type_name::<K>())
            .finish()
    }
}

impl<K> Stmt<K> {
    /// The statement's text.
    pub fn as_str(&self) -> &'static str {
        self.sql
    }

    #[doc(hidden)]
    pub const fn __new_unchecked(sql: &'static str, touches: u16) -> Self {
        Stmt {
            sql,
            touches,
            _kind: PhantomData,
        }
    }
}

/// A statement prepared on one connection (see `Conn::prepare`). Derefs to the driver's
/// [`Statement`] for its parameter and column types. It runs only on the connection that
/// prepared it.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub(crate) statement: Statement,
    pub(crate) class: Classification,
    pub(crate) conn_id: u64,
}

impl Deref for Prepared {
    type Target = Statement;
    fn deref(&self) -> &Statement {
        &self.statement
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The parts of a statement the engine needs, borrowed.
#[doc(hidden)]
pub struct SqlParts<'a> {
    pub(crate) text: &'a str,
    /// Known from `sql!` or the prepared statement; for SQL text, filled when it is
    /// first needed — from the connection's statement cache when the text is there, so
    /// a cached statement is not classified again (see [`SqlParts::class`]).
    class: OnceLock<Result<Classification, Refusal>>,
    pub(crate) prepared: Option<&'a Prepared>,
}

impl<'a> SqlParts<'a> {
    /// A statement classified already.
    fn classified(
        text: &'a str,
        class: Result<Classification, Refusal>,
        prepared: Option<&'a Prepared>,
    ) -> SqlParts<'a> {
        SqlParts {
            text,
            class: OnceLock::from(class),
            prepared,
        }
    }

    /// SQL text, classified when it is first needed.
    fn text(text: &'a str) -> SqlParts<'a> {
        SqlParts {
            text,
            class: OnceLock::new(),
            prepared: None,
        }
    }

    /// One statement whose kind is known without classifying its text.
    pub(crate) fn known(text: &'a str, kind: Kind, touches: Touches) -> SqlParts<'a> {
        SqlParts::known_as(text, kind, touches, false)
    }

    /// [`SqlParts::known`], saying whether it only reads.
    fn known_as(text: &'a str, kind: Kind, touches: Touches, read_only: bool) -> SqlParts<'a> {
        SqlParts::classified(
            text,
            Ok(Classification {
                kind,
                touches,
                statements: 1,
                copy: None,
                read_only,
            }),
            None,
        )
    }

    /// One `COPY` through the client, classified by `sql!` (a plain one).
    fn copy(text: &'a str, direction: CopyDirection, touches: u16) -> SqlParts<'a> {
        SqlParts::classified(
            text,
            Ok(Classification {
                kind: Kind::Plain,
                touches: Touches::from_bits_truncate(touches),
                statements: 1,
                copy: Some(direction),
                read_only: false,
            }),
            None,
        )
    }

    /// The statement's classification, classifying its text now if nothing did yet.
    pub(crate) fn class(&self) -> &Result<Classification, Refusal> {
        self.class.get_or_init(|| pool_sql::classify(self.text))
    }

    /// Whether the classification is still to be found (SQL text not looked at yet).
    pub(crate) fn unclassified(&self) -> bool {
        self.class.get().is_none()
    }

    /// Takes the classification found for this text earlier (a statement cache's).
    pub(crate) fn assume(&self, class: Classification) {
        let _ = self.class.set(Ok(class));
    }
}

impl From<Stmt<ReadOnly>> for Stmt<Plain> {
    fn from(s: Stmt<ReadOnly>) -> Stmt<Plain> {
        Stmt::__new_unchecked(s.sql, s.touches)
    }
}

/// A statement: a `&str` or `String`, a [`Stmt`] from `sql!`, or a [`&Prepared`](Prepared).
/// Sealed; where each may run is decided by [`OneShotSql`] and [`ConnSql`].
pub trait Sql: sealed::Sealed + Send + Sync {
    #[doc(hidden)]
    fn __parts(&self) -> SqlParts<'_>;
}

/// Statements that may run as a one-shot on `Db`: each takes some connection from the
/// pool and gives it back, so only statements safe on *any* connection qualify.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot run as a one-shot statement on `Db`",
    label = "this statement needs one connection for its whole effect",
    note = "a one-shot statement on `Db` runs on whichever pooled connection is free and returns it at once, so session state is lost and transaction-only statements do nothing",
    note = "check out a connection and keep it: `let mut conn = db.acquire().await?;` (or a `#[with_conn]` function)"
)]
pub trait OneShotSql: Sql {}

/// Statements that may run on a held connection outside a transaction.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot run on a held connection outside a transaction",
    label = "not a statement for a held connection",
    note = "open a transaction and run it there: `let mut tx = conn.begin().await?;` (or a `#[transactional]` function)"
)]
pub trait ConnSql: Sql {}

/// Statements that may run on the read side ([`ReadDb`](crate::ReadDb), which sends
/// them to replicas): a `Stmt<ReadOnly>` from `sql!`, or a `&str`/`String` (checked at
/// run time to be read-only).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot run on the read side (`ReadDb`, replicas)",
    label = "not a statement that provably only reads",
    note = "the read side takes statements that cannot write: `sql!(\"SELECT …\")` without FOR UPDATE, SELECT … INTO or a call that writes or locks; run writes through `pool.db()`"
)]
pub trait ReadSql: OneShotSql + ConnSql {}

/// A `COPY … FROM STDIN` statement, for `copy_in`: a `&str`/`String` (checked at run
/// time) or a `Stmt<CopyIn>` from `sql!`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `COPY … FROM STDIN` statement",
    label = "copy_in takes a COPY … FROM STDIN",
    note = "write it with `sql!(\"COPY table (columns) FROM STDIN …\")` or pass the text as a string; other statements run with `execute` or `query`"
)]
pub trait CopyInSql: sealed::Sealed + Send + Sync {
    #[doc(hidden)]
    fn __copy_parts(&self) -> SqlParts<'_>;
}

/// A `COPY … TO STDOUT` statement, for `copy_out`: a `&str`/`String` (checked at run
/// time) or a `Stmt<CopyOut>` from `sql!`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `COPY … TO STDOUT` statement",
    label = "copy_out takes a COPY … TO STDOUT",
    note = "write it with `sql!(\"COPY table TO STDOUT …\")` (or `COPY (SELECT …) TO STDOUT`) or pass the text as a string; for rows use `query` or `query_stream`"
)]
pub trait CopyOutSql: sealed::Sealed + Send + Sync {
    #[doc(hidden)]
    fn __copy_parts(&self) -> SqlParts<'_>;
}

macro_rules! str_like {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Sql for $t {
            fn __parts(&self) -> SqlParts<'_> {
                let text: &str = self;
                SqlParts::text(text)
            }
        }
        #[diagnostic::do_not_recommend]
        impl OneShotSql for $t {}
        #[diagnostic::do_not_recommend]
        impl ConnSql for $t {}
        #[diagnostic::do_not_recommend]
        impl ReadSql for $t {}
        #[diagnostic::do_not_recommend]
        impl CopyInSql for $t {
            fn __copy_parts(&self) -> SqlParts<'_> {
                Sql::__parts(self)
            }
        }
        #[diagnostic::do_not_recommend]
        impl CopyOutSql for $t {
            fn __copy_parts(&self) -> SqlParts<'_> {
                Sql::__parts(self)
            }
        }
    )*};
}
str_like!(&str, String, &String);

/// The kind markers [`Plain`], [`SessionState`], [`TransactionOnly`]: the statements
/// the statement methods (`query`, `execute`…) take. Sealed.
#[diagnostic::on_unimplemented(
    message = "a `Stmt<{Self}>` is a COPY through the client: it runs only with `copy_in` / `copy_out`",
    label = "`query`, `execute` and the other statement methods cannot send or receive COPY data",
    note = "`COPY … FROM STDIN`: `let sink = conn.copy_in(sql!(…)).await?;` then send `Bytes` and `finish()`; `COPY … TO STDOUT`: `let data = conn.copy_out(sql!(…)).await?;` is a stream of `Bytes`"
)]
pub trait StmtKind: sealed::Sealed + 'static {
    #[doc(hidden)]
    const KIND: Kind;
    #[doc(hidden)]
    const READ_ONLY: bool = false;
}

/// The statement kinds the read side ([`ReadDb`](crate::ReadDb)) takes: only
/// [`ReadOnly`]. Sealed.
#[diagnostic::on_unimplemented(
    message = "a `Stmt<{Self}>` may write: it cannot run on the read side (`ReadDb`, replicas)",
    label = "the read side takes only statements that provably only read (`Stmt<ReadOnly>`)",
    note = "a replica refuses writes, and the read side's connections to the primary are read-only too; run writes through `pool.db()`",
    note = "a SELECT is not read-only with FOR UPDATE/SHARE, SELECT … INTO, a data-modifying WITH, or a call that writes or locks (nextval, setval, advisory locks, set_config, pg_notify)"
)]
pub trait ReadKind: OneShotKind + ConnKind {}

/// The statement kinds that may run as a one-shot on `Db`: only [`Plain`]. Sealed.
#[diagnostic::on_unimplemented(
    message = "a `Stmt<{Self}>` cannot run as a one-shot statement on `Db`",
    label = "this statement needs one connection for its whole effect",
    note = "a one-shot statement on `Db` runs on whichever pooled connection is free and returns it at once, so session state (SET, LISTEN, advisory locks, temp tables, currval) is lost and transaction-only statements (LOCK TABLE, SET LOCAL, FOR UPDATE) do nothing",
    note = "check out a connection and keep it: `let mut conn = db.acquire().await?;` (or a `#[with_conn]` function); for LOCK TABLE, SET LOCAL and FOR UPDATE open a transaction: `let mut tx = conn.begin().await?;` (or `#[transactional]`)"
)]
pub trait OneShotKind: sealed::Sealed {}

/// The statement kinds that may run on a held connection outside a transaction:
/// [`Plain`] and [`SessionState`]. Sealed.
#[diagnostic::on_unimplemented(
    message = "a `Stmt<{Self}>` only works inside a transaction",
    label = "transaction-only statement run on a connection outside a transaction",
    note = "outside a transaction LOCK TABLE fails, SET LOCAL does nothing, and a FOR UPDATE row lock or an xact advisory lock is released as soon as the statement ends",
    note = "open a transaction and run it there: `let mut tx = conn.begin().await?; tx.execute(…).await?; tx.commit().await?;` (or put the work in a `#[transactional]` function)"
)]
pub trait ConnKind: sealed::Sealed {}

impl sealed::Sealed for Plain {}
impl sealed::Sealed for ReadOnly {}
impl sealed::Sealed for SessionState {}
impl sealed::Sealed for TransactionOnly {}
impl sealed::Sealed for CopyIn {}
impl sealed::Sealed for CopyOut {}
impl StmtKind for Plain {
    const KIND: Kind = Kind::Plain;
}
impl StmtKind for ReadOnly {
    const KIND: Kind = Kind::Plain;
    const READ_ONLY: bool = true;
}
impl StmtKind for SessionState {
    const KIND: Kind = Kind::Session;
}
impl StmtKind for TransactionOnly {
    const KIND: Kind = Kind::TxOnly;
}
impl OneShotKind for Plain {}
impl OneShotKind for ReadOnly {}
impl ConnKind for Plain {}
impl ConnKind for ReadOnly {}
impl ReadKind for ReadOnly {}
impl ConnKind for SessionState {}
// A COPY fails `StmtKind` already: these keep a second, misleading error from following.
#[diagnostic::do_not_recommend]
impl OneShotKind for CopyIn {}
#[diagnostic::do_not_recommend]
impl OneShotKind for CopyOut {}
#[diagnostic::do_not_recommend]
impl ConnKind for CopyIn {}
#[diagnostic::do_not_recommend]
impl ConnKind for CopyOut {}

impl<K: 'static> sealed::Sealed for Stmt<K> {}
impl<K: StmtKind> Sql for Stmt<K> {
    fn __parts(&self) -> SqlParts<'_> {
        SqlParts::known_as(
            self.sql,
            K::KIND,
            Touches::from_bits_truncate(self.touches),
            K::READ_ONLY,
        )
    }
}
// `StmtKind` first: for a COPY, its message is the one reported.
impl<K: StmtKind + OneShotKind> OneShotSql for Stmt<K> {}
impl<K: StmtKind + ConnKind> ConnSql for Stmt<K> {}
impl<K: StmtKind + ReadKind> ReadSql for Stmt<K> {}

impl CopyInSql for Stmt<CopyIn> {
    fn __copy_parts(&self) -> SqlParts<'_> {
        SqlParts::copy(self.sql, CopyDirection::In, self.touches)
    }
}
impl CopyOutSql for Stmt<CopyOut> {
    fn __copy_parts(&self) -> SqlParts<'_> {
        SqlParts::copy(self.sql, CopyDirection::Out, self.touches)
    }
}

impl sealed::Sealed for &Prepared {}
impl Sql for &Prepared {
    fn __parts(&self) -> SqlParts<'_> {
        SqlParts::classified("", Ok(self.class), Some(self))
    }
}
#[diagnostic::do_not_recommend]
impl ConnSql for &Prepared {}
