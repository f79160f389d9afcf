//! The read side: `ReadDb`, a task's capability to read from the replicas, and
//! `ReadConn`, a connection it holds.

use std::future::Future;
use std::panic::Location;
use std::sync::Arc;

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::config::ReplicaFallback;
use crate::conn::{Conn, Place, one_row, opt_row};
use crate::error::{Error, Result};
use crate::stmt::{ReadSql, SqlParts, StatementFuture};

use super::acquire::Acquire;
use super::db::Db;
use super::pooled::PooledConn;
use super::replicas::{ReplicaSet, Route};
use super::tx::{Tx, TxOptions};

/// What a read refused for writing is told.
const READ_ADVICE: &str = "it may write, and the read side (ReadDb, replicas) runs only statements that provably \
                           only read (SELECT, VALUES, TABLE, SHOW, a WITH that modifies nothing; no FOR UPDATE, \
                           SELECT … INTO or call that writes or locks); run it through pool.db()";

/// A task's capability to read (state *released*, on the read side). Get one with
/// [`Pool::read_db`](crate::Pool::read_db), once per task or request.
///
/// Its checkouts and one-shots go to a replica that is up, a standby, within
/// `max_replica_lag` and — when this task has just written through the pool — past that
/// write (read-your-writes); else to the primary, on a session made read-only
/// (`default_transaction_read_only`), or they fail, as `replica_fallback` says.
///
/// It takes only statements that provably only read: with `sql!`, a `Stmt<ReadOnly>`;
/// an `INSERT`, DDL, `SELECT … FOR UPDATE` or a locking call does not compile, and a
/// string is checked at run time. What the classifier cannot see (a function that
/// writes) the server refuses: every session on the read side is read-only, so every
/// transaction on it is `READ ONLY`.
///
/// `&mut ReadDb` is a connection source for `#[with_conn]` functions and for
/// `#[transactional(read_only)]` ones (not for those that may write).
pub struct ReadDb {
    pub(crate) primary: Db,
    pub(crate) replicas: Vec<Db>,
    pub(crate) set: Option<Arc<ReplicaSet>>,
}

impl std::fmt::Debug for ReadDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadDb")
            .field("replicas", &self.replicas.len())
            .finish_non_exhaustive()
    }
}

/// Whether a failed checkout on a replica means the replica is unwell (so the read goes
/// elsewhere) rather than a mistake of the caller's.
fn replica_unwell(e: &Error) -> bool {
    !matches!(
        e,
        Error::NestedCheckout { .. } | Error::Closed | Error::Config { .. }
    )
}

impl ReadDb {
    /// Checks out a connection on the read side, waiting up to `acquire_timeout`.
    ///
    /// A replica whose checkout fails (down, unreachable) is passed over until the
    /// sampler finds it well, and the read goes to the primary (or fails, with
    /// `ReplicaFallback::Fail`).
    #[track_caller]
    pub fn acquire(&mut self) -> impl Future<Output = Result<ReadConn<'_>>> + Send + '_ {
        let site = Location::caller();
        async move {
            let (conn, replica) = self.checkout(site).await?;
            Ok(ReadConn { conn, replica })
        }
    }

    /// The checkout: a connection and, when it is a replica's, which one.
    pub(crate) async fn checkout(
        &self,
        site: &'static Location<'static>,
    ) -> Result<(PooledConn<'_>, Option<&str>)> {
        if let Some(set) = &self.set
            && let Route::Replica(i) = set.route()?
        {
            // A replica found unwell while this waits for it: go elsewhere at once,
            // not at the end of `acquire_timeout`.
            let outcome = tokio::select! {
                biased;
                res = Acquire::new(&self.replicas[i], site) => Some(res),
                () = set.until_unwell(i) => None,
            };
            let failure = match outcome {
                Some(Ok(conn)) => return Ok((conn, Some(set.name(i)))),
                Some(Err(e)) if replica_unwell(&e) => {
                    set.failed(i, &e);
                    e.to_string()
                }
                Some(Err(e)) => return Err(e),
                None => "became unwell while this read waited for it".to_owned(),
            };
            if set.fallback() == ReplicaFallback::Fail {
                return Err(Error::NoReplica {
                    why: format!("{}: {failure}", set.name(i)),
                });
            }
        }
        let mut conn = Acquire::new(&self.primary, site).await?;
        conn.set("default_transaction_read_only", "on").await?;
        Ok((conn, None))
    }

    /// One-shot: runs a read on the read side and returns its rows.
    ///
    /// Cancellation: as [`Db::query`].
    #[track_caller]
    pub fn query<'a, S: ReadSql + 'a>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, Vec<Row>> {
        let site = Location::caller();
        StatementFuture::new(async move {
            let parts = readable(statement.__parts())?;
            let (mut conn, _) = self.checkout(site).await?;
            conn.rows(parts, params, Place::Db).await
        })
    }

    /// One-shot: runs a read that returns exactly one row.
    ///
    /// Cancellation: as [`Db::query`].
    #[track_caller]
    pub fn query_one<'a, S: ReadSql + 'a>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, Row> {
        let rows = self.query(statement, params);
        StatementFuture::new(async move { one_row(rows.await?) })
    }

    /// One-shot: runs a read that returns zero or one row.
    ///
    /// Cancellation: as [`Db::query`].
    #[track_caller]
    pub fn query_opt<'a, S: ReadSql + 'a>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, Option<Row>> {
        let rows = self.query(statement, params);
        StatementFuture::new(async move { opt_row(rows.await?) })
    }
}

/// The statement, if it provably only reads; else refused with what to do.
fn readable(parts: SqlParts<'_>) -> Result<SqlParts<'_>> {
    let read_only = match parts.class() {
        Ok(class) => class.read_only,
        Err(refusal) => return Err(Error::refused(parts.text, refusal.to_string())),
    };
    if read_only {
        Ok(parts)
    } else {
        Err(Error::refused(parts.text, READ_ADVICE))
    }
}

/// A connection held on the read side (from [`ReadDb::acquire`]): a replica's, or the
/// primary's on a read-only session. Its statement methods take only reads; a
/// transaction on it is `READ ONLY`. Returned to its pool when dropped.
#[must_use = "a connection is returned to the pool as soon as it is dropped"]
pub struct ReadConn<'db> {
    conn: PooledConn<'db>,
    replica: Option<&'db str>,
}

impl std::fmt::Debug for ReadConn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadConn")
            .field("replica", &self.replica)
            .field("conn", &self.conn)
            .finish()
    }
}

impl ReadConn<'_> {
    /// The replica this connection is on (`host:port`), or `None` on the primary.
    pub fn replica(&self) -> Option<&str> {
        self.replica
    }

    /// The connection, to look at (its backend pid, whether it is broken); statements go
    /// through this `ReadConn`'s own methods.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// Runs a read and returns its rows.
    ///
    /// Cancellation: as [`Conn::query`].
    pub fn query<'a, S: ReadSql + 'a>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, Vec<Row>> {
        StatementFuture::new(async move {
            let parts = readable(statement.__parts())?;
            self.conn.rows(parts, params, Place::Conn).await
        })
    }

    /// Runs a read that returns exactly one row.
    pub fn query_one<'a, S: ReadSql + 'a>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, Row> {
        let rows = self.query(statement, params);
        StatementFuture::new(async move { one_row(rows.await?) })
    }

    /// Runs a read that returns zero or one row.
    pub fn query_opt<'a, S: ReadSql + 'a>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, Option<Row>> {
        let rows = self.query(statement, params);
        StatementFuture::new(async move { opt_row(rows.await?) })
    }

    /// Begins a `READ ONLY` transaction (for a consistent snapshot over several reads:
    /// add `isolation(Isolation::RepeatableRead)` with [`begin_with`](Self::begin_with)).
    pub async fn begin(&mut self) -> Result<Tx<'_>> {
        self.begin_with(TxOptions::new()).await
    }

    /// Begins a transaction with options; it is `READ ONLY` whatever they say.
    pub async fn begin_with(&mut self, options: TxOptions) -> Result<Tx<'_>> {
        self.conn.begin_with(options.read_only(true)).await
    }
}
