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

use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;

use pool_sql::{Classification, Kind, Refusal, Touches};
use tokio_postgres::Statement;

/// The future of a statement method (`query`, `execute`, …). It is boxed so that a
/// statement run where it cannot mean what it says is reported once, at the call, rather
/// than again wherever the future is used.
pub type StatementFuture<'a, T> = Pin<Box<dyn Future<Output = crate::Result<T>> + Send + 'a>>;

/// Marker: a statement safe on any pooled connection (`SELECT`, `INSERT`, DDL…).
#[derive(Debug, Clone, Copy)]
pub enum Plain {}

/// Marker: a statement that leaves state in the session (`SET`, `LISTEN`, session
/// advisory locks, temp tables, `PREPARE`, `currval`…). It needs a held connection; the
/// pool resets that state before the connection is reused.
#[derive(Debug, Clone, Copy)]
pub enum SessionState {}

/// Marker: a statement that only means something inside a transaction (`LOCK TABLE`,
/// `SET LOCAL`, `pg_advisory_xact_lock`, `SELECT … FOR UPDATE`).
#[derive(Debug, Clone, Copy)]
pub enum TransactionOnly {}

/// A statement classified at compile time by `sql!`. The kind parameter is one of
/// [`Plain`], [`SessionState`], [`TransactionOnly`] and decides where it may run.
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
    pub(crate) class: Result<Classification, Refusal>,
    pub(crate) prepared: Option<&'a Prepared>,
}

impl<'a> SqlParts<'a> {
    /// One statement whose kind is known without classifying its text.
    pub(crate) fn known(text: &'a str, kind: Kind, touches: Touches) -> SqlParts<'a> {
        SqlParts {
            text,
            class: Ok(Classification {
                kind,
                touches,
                statements: 1,
            }),
            prepared: None,
        }
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
    note = "a one-shot statement on `Db` runs on whichever pooled connection is free and returns it at once, so session state (SET, LISTEN, advisory locks, temp tables, currval) is lost and transaction-only statements (LOCK TABLE, SET LOCAL, FOR UPDATE) do nothing",
    note = "check out a connection and keep it: `let mut conn = db.acquire().await?;` (or a `#[with_conn]` function); for LOCK TABLE, SET LOCAL and FOR UPDATE open a transaction: `let mut tx = conn.begin().await?;` (or `#[transactional]`)"
)]
pub trait OneShotSql: Sql {}

/// Statements that may run on a held connection outside a transaction.
#[diagnostic::on_unimplemented(
    message = "`{Self}` only works inside a transaction",
    label = "transaction-only statement run on a connection outside a transaction",
    note = "outside a transaction LOCK TABLE fails, SET LOCAL does nothing, and a FOR UPDATE row lock or an xact advisory lock is released as soon as the statement ends",
    note = "open a transaction and run it there: `let mut tx = conn.begin().await?; tx.execute(…).await?; tx.commit().await?;` (or put the work in a `#[transactional]` function)"
)]
pub trait ConnSql: Sql {}

macro_rules! str_like {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Sql for $t {
            fn __parts(&self) -> SqlParts<'_> {
                let text: &str = self;
                SqlParts { text, class: pool_sql::classify(text), prepared: None }
            }
        }
        #[diagnostic::do_not_recommend]
        impl OneShotSql for $t {}
        #[diagnostic::do_not_recommend]
        impl ConnSql for $t {}
    )*};
}
str_like!(&str, String, &String);

/// The kind markers [`Plain`], [`SessionState`], [`TransactionOnly`]. Sealed.
pub trait StmtKind: sealed::Sealed + 'static {
    #[doc(hidden)]
    const KIND: Kind;
}
impl sealed::Sealed for Plain {}
impl sealed::Sealed for SessionState {}
impl sealed::Sealed for TransactionOnly {}
impl StmtKind for Plain {
    const KIND: Kind = Kind::Plain;
}
impl StmtKind for SessionState {
    const KIND: Kind = Kind::Session;
}
impl StmtKind for TransactionOnly {
    const KIND: Kind = Kind::TxOnly;
}

impl<K: StmtKind> sealed::Sealed for Stmt<K> {}
impl<K: StmtKind> Sql for Stmt<K> {
    fn __parts(&self) -> SqlParts<'_> {
        SqlParts::known(self.sql, K::KIND, Touches::from_bits_truncate(self.touches))
    }
}
impl OneShotSql for Stmt<Plain> {}
impl ConnSql for Stmt<Plain> {}
impl ConnSql for Stmt<SessionState> {}

impl sealed::Sealed for &Prepared {}
impl Sql for &Prepared {
    fn __parts(&self) -> SqlParts<'_> {
        SqlParts {
            text: "",
            class: Ok(self.class),
            prepared: Some(self),
        }
    }
}
#[diagnostic::do_not_recommend]
impl ConnSql for &Prepared {}
