//! Transactions and savepoints.
//!
//! # States
//!
//! ```text
//! Conn ──begin()──▶ Tx (depth 1) ──savepoint()──▶ Tx (depth 2) ──▶ …
//!   ▲                 │  ▲                           │
//!   └─ commit()/rollback()/drop ┘  └── commit() (RELEASE) / rollback() / drop (ROLLBACK TO) ┘
//! ```
//!
//! A `Tx` borrows its connection, so the connection cannot be released, or another
//! transaction begun on it, while the `Tx` lives. Dropping a `Tx` without `commit` rolls
//! it back: the `ROLLBACK` is sent at once from a background task, and the connection's
//! next statement waits for it.

use pool_sql::{Kind, Touches};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::conn::{Conn, Control, Place, one_row, opt_row, table_name};
use crate::error::{Error, Result};
use crate::stmt::{Prepared, Sql, SqlParts, StatementFuture};

use super::locks::LockMode;

/// Transaction isolation level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// `READ COMMITTED` (PostgreSQL's default).
    ReadCommitted,
    /// `REPEATABLE READ`.
    RepeatableRead,
    /// `SERIALIZABLE`.
    Serializable,
}

/// Options for [`Conn::begin_with`]. They apply to an outermost transaction; a savepoint
/// inherits its transaction's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct TxOptions {
    isolation: Option<Isolation>,
    read_only: bool,
    deferrable: bool,
}

impl TxOptions {
    /// The server's defaults.
    pub const fn new() -> TxOptions {
        TxOptions {
            isolation: None,
            read_only: false,
            deferrable: false,
        }
    }
    /// Sets the isolation level.
    pub const fn isolation(mut self, level: Isolation) -> TxOptions {
        self.isolation = Some(level);
        self
    }
    /// `READ ONLY` (or `READ WRITE` when false).
    pub const fn read_only(mut self, yes: bool) -> TxOptions {
        self.read_only = yes;
        self
    }
    /// `DEFERRABLE`: only meaningful with `SERIALIZABLE, READ ONLY`, where it waits for a
    /// snapshot that cannot fail with a serialization error.
    pub const fn deferrable(mut self, yes: bool) -> TxOptions {
        self.deferrable = yes;
        self
    }

    /// The isolation level for spans: as the server names it, or `default`.
    #[cfg(feature = "spans")]
    fn isolation_name(&self) -> &'static str {
        match self.isolation {
            Some(Isolation::ReadCommitted) => "read committed",
            Some(Isolation::RepeatableRead) => "repeatable read",
            Some(Isolation::Serializable) => "serializable",
            None => "default",
        }
    }

    pub(crate) fn begin_sql(&self) -> String {
        let mut modes: Vec<&str> = Vec::new();
        match self.isolation {
            Some(Isolation::ReadCommitted) => modes.push("ISOLATION LEVEL READ COMMITTED"),
            Some(Isolation::RepeatableRead) => modes.push("ISOLATION LEVEL REPEATABLE READ"),
            Some(Isolation::Serializable) => modes.push("ISOLATION LEVEL SERIALIZABLE"),
            None => {}
        }
        if self.read_only {
            modes.push("READ ONLY");
        }
        if self.deferrable {
            modes.push("DEFERRABLE");
        }
        if modes.is_empty() {
            "BEGIN".to_owned()
        } else {
            format!("BEGIN {}", modes.join(", "))
        }
    }
}

/// A transaction (or, nested, a savepoint) on a borrowed connection.
///
/// Runs every kind of statement, including the transaction-only ones that `Conn` refuses
/// (`LOCK TABLE`, `SET LOCAL`, `SELECT … FOR UPDATE`, xact advisory locks). End it with
/// [`commit`](Tx::commit) or [`rollback`](Tx::rollback); dropping it rolls back.
#[must_use = "a transaction is rolled back when dropped; call commit() to keep its work"]
pub struct Tx<'c> {
    conn: &'c mut Conn,
    depth: u32,
    epoch: u64,
    done: bool,
    /// The `transaction` span (disabled unless a subscriber wants it); ends with the Tx.
    #[cfg(feature = "spans")]
    span: tracing::Span,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("depth", &self.depth)
            .field("backend_pid", &self.conn.backend_pid())
            .finish()
    }
}

impl Conn {
    /// Begins a transaction (or a savepoint, if this connection is already inside one).
    ///
    /// Cancellation: if the future is dropped after `BEGIN` was sent, the pool rolls the
    /// transaction back before the connection's next use.
    pub async fn begin(&mut self) -> Result<Tx<'_>> {
        self.begin_with(TxOptions::new()).await
    }

    /// Begins a transaction with options (isolation, read only, deferrable).
    ///
    /// Cancellation: as [`Conn::begin`].
    pub async fn begin_with(&mut self, options: TxOptions) -> Result<Tx<'_>> {
        let depth = self.tx().depth() + 1;
        #[cfg(feature = "spans")]
        let span = tracing::debug_span!(
            target: "pool_core",
            "transaction",
            db.system.name = "postgresql",
            db.transaction.isolation = options.isolation_name(),
            depth,
            attempt = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        if depth == 1 {
            self.control(Control::Begin(options.begin_sql())).await?;
        } else {
            self.check_savepoint()?;
            self.control(Control::Savepoint(depth)).await?;
        }
        let epoch = self.tx().epoch();
        Ok(Tx {
            conn: self,
            depth,
            epoch,
            done: false,
            #[cfg(feature = "spans")]
            span,
        })
    }
}

impl<'c> Tx<'c> {
    /// 1 for a transaction, 2 and up for savepoints inside it.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// The connection this transaction runs on. Statements run through it are part of
    /// the transaction; `begin()` on it opens a savepoint.
    pub fn conn(&mut self) -> &mut Conn {
        self.conn
    }

    /// Whether a statement of this transaction failed with a serialization failure or
    /// a deadlock (what `#[transactional(retry)]` retries).
    pub(crate) fn failed_retryably(&self) -> bool {
        self.live().is_ok() && self.conn.tx().failed_retryably()
    }

    /// Records which attempt of a retrying transaction this is, on its span.
    pub(crate) fn record_attempt(&self, _attempt: u32) {
        #[cfg(feature = "spans")]
        self.span.record("attempt", _attempt);
    }

    /// Records how the transaction ended, on its span.
    fn outcome(&self, _outcome: &'static str) {
        #[cfg(feature = "spans")]
        self.span.record("outcome", _outcome);
    }

    /// The pool's context (counters, metrics), kept past the end of the transaction.
    #[cfg(feature = "metrics")]
    pub(crate) fn ctx(&self) -> std::sync::Arc<crate::conn::Ctx> {
        self.conn.ctx()
    }

    /// The connection, if this transaction still owns it.
    /// A pipeline in this transaction: several statements in one round trip, any kind
    /// (see [`Pipeline`](crate::Pipeline)).
    pub fn pipeline(&mut self) -> super::pipeline::Pipeline<'_, super::pipeline::InTx> {
        super::pipeline::Pipeline::new(self.conn, Some((self.depth, self.epoch)))
    }

    pub(super) fn live_conn(&mut self) -> Result<&mut Conn> {
        self.live()?;
        Ok(self.conn)
    }

    fn live(&self) -> Result<()> {
        if !self.conn.tx().is(self.depth, self.epoch) {
            return Err(Error::TransactionAborted {
                reason: "this transaction was already ended underneath its handle (a nested operation was \
                         cancelled or failed in a way that forced a rollback)",
            });
        }
        Ok(())
    }

    /// Runs a statement in the transaction and returns its rows.
    ///
    /// Cancellation: the statement is cancelled on the server, and the transaction is
    /// marked aborted (its effect is unknown): `commit` then rolls back and fails.
    pub fn query<'a, S: Sql + 'a>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, Vec<Row>> {
        StatementFuture::new(async move {
            self.live()?;
            self.conn.rows(statement.__parts(), params, Place::Tx).await
        })
    }

    /// Runs a statement that returns exactly one row.
    ///
    /// Cancellation: as [`Tx::query`].
    pub fn query_one<'a, S: Sql + 'a>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, Row> {
        StatementFuture::new(async move {
            self.live()?;
            one_row(
                self.conn
                    .rows(statement.__parts(), params, Place::Tx)
                    .await?,
            )
        })
    }

    /// Runs a statement that returns zero or one row.
    ///
    /// Cancellation: as [`Tx::query`].
    pub fn query_opt<'a, S: Sql + 'a>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, Option<Row>> {
        StatementFuture::new(async move {
            self.live()?;
            opt_row(
                self.conn
                    .rows(statement.__parts(), params, Place::Tx)
                    .await?,
            )
        })
    }

    /// Runs a statement and returns the number of rows it affected.
    ///
    /// Cancellation: as [`Tx::query`].
    pub fn execute<'a, S: Sql + 'a>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, u64> {
        StatementFuture::new(async move {
            self.live()?;
            self.conn
                .count(statement.__parts(), params, Place::Tx)
                .await
        })
    }

    /// Runs one or more statements separated by `;`, without parameters.
    ///
    /// Cancellation: as [`Tx::query`].
    pub fn batch_execute<'a, S: Sql + 'a>(&'a mut self, statements: S) -> StatementFuture<'a, ()> {
        StatementFuture::new(async move {
            self.live()?;
            self.conn.batch(statements.__parts(), Place::Tx).await
        })
    }

    /// Prepares a statement on the transaction's connection (cached per connection).
    ///
    /// Cancellation: as [`Tx::query`].
    pub fn prepare<'a, S: Sql + 'a>(&'a mut self, statement: S) -> StatementFuture<'a, Prepared> {
        StatementFuture::new(async move {
            self.live()?;
            self.conn.prepare_at(statement.__parts(), Place::Tx).await
        })
    }

    /// `LOCK TABLE name IN mode MODE`: held until the transaction ends. The name is
    /// quoted (exact, case-sensitive); qualify it with a schema as `schema.table`. A part
    /// in double quotes is taken as a quoted identifier (`"My.Table"`, `"a""b"`) and must
    /// be a well-formed one. Whatever the name, the statement runs alone (the extended
    /// protocol, one statement); a name PostgreSQL cannot take (empty, a NUL, a part over
    /// 63 bytes, a malformed quoted part) is refused before anything is sent.
    ///
    /// Cancellation: as [`Tx::query`].
    pub async fn lock_table(&mut self, table: &str, mode: LockMode) -> Result<()> {
        self.live()?;
        let name = table_name(table).map_err(|why| Error::refused("LOCK TABLE", why))?;
        let sql = format!("LOCK TABLE {name} IN {} MODE", mode.as_sql());
        self.conn
            .count(tx_only(&sql), &[], Place::Tx)
            .await
            .map(drop)
    }

    /// `set_config(name, value, true)`: a setting that ends with the transaction.
    ///
    /// Cancellation: as [`Tx::query`].
    pub async fn set_local(&mut self, name: &str, value: &str) -> Result<()> {
        self.live()?;
        self.conn
            .rows(
                tx_only("SELECT set_config($1, $2, true)"),
                &[&name, &value],
                Place::Tx,
            )
            .await
            .map(drop)
    }

    /// `pg_advisory_xact_lock(key)`: waits for the lock, held until the transaction ends.
    ///
    /// Cancellation: as [`Tx::query`].
    pub async fn advisory_xact_lock(&mut self, key: i64) -> Result<()> {
        self.live()?;
        self.conn
            .rows(
                tx_only("SELECT pg_advisory_xact_lock($1)"),
                &[&key],
                Place::Tx,
            )
            .await
            .map(drop)
    }

    /// `pg_try_advisory_xact_lock(key)`: whether the lock was taken, without waiting.
    ///
    /// Cancellation: as [`Tx::query`].
    pub async fn try_advisory_xact_lock(&mut self, key: i64) -> Result<bool> {
        self.live()?;
        let row = one_row(
            self.conn
                .rows(
                    tx_only("SELECT pg_try_advisory_xact_lock($1)"),
                    &[&key],
                    Place::Tx,
                )
                .await?,
        )?;
        row.try_get(0).map_err(|e| Error::Client(Box::new(e)))
    }

    /// Opens a savepoint: a nested transaction that can be rolled back alone.
    ///
    /// Cancellation: as [`Conn::begin`].
    pub async fn savepoint(&mut self) -> Result<Tx<'_>> {
        self.live()?;
        self.conn.begin_with(TxOptions::new()).await
    }

    /// Commits (a savepoint: releases it into the enclosing transaction).
    ///
    /// If a statement in the transaction failed or was cancelled, the server would turn
    /// `COMMIT` into a silent rollback; this rolls back and returns
    /// [`Error::TransactionAborted`] instead, so the loss cannot go unnoticed.
    ///
    /// Cancellation: if dropped after `COMMIT` was sent, the outcome is unknown to the
    /// caller; the connection is brought back outside any transaction before reuse.
    pub async fn commit(mut self) -> Result<()> {
        self.live()?;
        self.done = true;
        if self.conn.tx().is_aborted() {
            self.outcome("rolled back: aborted");
            self.end(false).await?;
            return Err(Error::TransactionAborted {
                reason: "a statement in this transaction failed or was cancelled, so it cannot commit",
            });
        }
        let res = self.end(true).await;
        self.outcome(if res.is_ok() {
            "commit"
        } else {
            "commit failed"
        });
        res
    }

    /// Rolls back (a savepoint: rolls back to it and releases it).
    ///
    /// Cancellation: the rollback still happens before the connection's next use.
    pub async fn rollback(mut self) -> Result<()> {
        if self.live().is_err() {
            // Already ended by force; nothing left to roll back.
            self.done = true;
            return Ok(());
        }
        self.done = true;
        self.outcome("rollback");
        self.end(false).await
    }

    async fn end(&mut self, commit: bool) -> Result<()> {
        let step = match (commit, self.depth) {
            (true, 1) => Control::Commit,
            (true, d) => Control::Release(d),
            (false, 1) => Control::Rollback,
            (false, d) => Control::RollbackTo(d),
        };
        self.conn.control(step).await
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.done || self.live().is_err() {
            return;
        }
        self.outcome("dropped: rolled back");
        self.conn.abandon_tx(self.depth);
    }
}

fn tx_only(text: &str) -> SqlParts<'_> {
    SqlParts::known(text, Kind::TxOnly, Touches::empty())
}
