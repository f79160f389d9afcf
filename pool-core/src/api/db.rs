//! `Db`: a task's capability to use the pool.

use std::future::Future;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use pool_sql::Classification;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::conn::{Pipelined, Place, Step, one_row, opt_row, placement};
use crate::engine::acquire_many;
use crate::error::Result;
use crate::status::Site;
use crate::stmt::{OneShotSql, SqlParts, StatementFuture, call_timeout};

use super::acquire::Acquire;
use super::lane::{How, Lane};
use super::pool::Pool;
use super::pooled::ConnSet;

/// A task's capability to use the pool (state *released*). Get one with [`Pool::db`],
/// once per task or request.
///
/// # States
///
/// ```text
/// Pool ──db()──▶ Db ──acquire()──▶ PooledConn<'db> ──begin()──▶ Tx<'c>
///                 ▲                      │
///                 └── drop / release() ──┘
/// ```
///
/// `&mut Db` is the right to check out *one* connection: [`acquire`](Db::acquire) borrows
/// the `Db` mutably for as long as the connection is held, so a second checkout on the same
/// `Db` — the shape of code that deadlocks pools — does not compile. Functions that need a
/// connection take the held one (`&mut Conn`, or `&mut impl ConnSource`), not the `Db`.
///
/// One-shot statements ([`query`](Db::query), [`execute`](Db::execute), …) take a
/// connection, run one statement and give it back. They accept only statements that are
/// safe on any connection.
pub struct Db {
    pub(crate) pool: Pool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Db {
    pub(crate) fn new(pool: Pool) -> Db {
        Db { pool }
    }

    /// The pool this `Db` draws from.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Checks out a connection, waiting up to `acquire_timeout`. The call site is recorded
    /// for diagnostics (`pool.holders()`, timeout errors, nested-checkout errors).
    ///
    /// Fails at once with [`Error::NestedCheckout`](crate::Error::NestedCheckout) if this task already holds a
    /// connection from the same pool (through another `Db`): pass that one down instead.
    ///
    /// Cancellation: see [`Acquire`].
    #[track_caller]
    pub fn acquire(&mut self) -> Acquire<'_> {
        Acquire::new(self, Location::caller())
    }

    /// Checks out `n` connections at once, all or none, for work that really needs
    /// several connections concurrently. Never holds some while waiting for the rest.
    /// Idle connections are not pinged first (closed ones are still skipped).
    ///
    /// Cancellation: dropping the future returns whatever was gathered to the pool.
    #[track_caller]
    pub fn acquire_many(
        &mut self,
        n: usize,
    ) -> impl Future<Output = Result<ConnSet<'_>>> + Send + '_ {
        let site = Site(Location::caller());
        let db: &Db = self;
        async move {
            let (set, since) = acquire_many(&db.pool.shared, n, site).await?;
            Ok(ConnSet::new(db, set, site, since))
        }
    }

    /// One-shot: runs a statement on a pooled connection and returns its rows — on the
    /// shared lane (pipelined with other tasks' one-shots, no checkout) when the pool has
    /// it on ([`Builder::shared_lane`](crate::Builder::shared_lane)) and the call asked
    /// for no deadline longer than the pool's.
    ///
    /// Cancellation: the statement is cancelled on the server and the connection cleaned
    /// before reuse; on the shared lane, only when it is alone on its connection (else
    /// the server's `statement_timeout` ends it, and its response is discarded).
    #[track_caller]
    pub fn query<'a, S: OneShotSql + 'a>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, Vec<Row>> {
        let site = Location::caller();
        StatementFuture::new(async move {
            self.one_shot(statement.__parts(), params, Step::Query, site)
                .await
                .map(Pipelined::into_rows)
        })
    }

    /// A one-shot `step` (`query` or `execute`): on the shared lane when it takes it
    /// (the lane checks placement itself, from its statement cache when it can), else on
    /// a checkout of its own — which, behind a pooler, also teaches the lane the
    /// statement's parameter types for its next run.
    async fn one_shot(
        &mut self,
        parts: SqlParts<'_>,
        params: &[&(dyn ToSql + Sync)],
        step: Step,
        site: &'static Location<'static>,
    ) -> Result<Pipelined> {
        if let Some((lane, deadline, how)) = self.lane(&parts) {
            return lane
                .run(&self.pool.shared, &parts, params, step, deadline, how)
                .await;
        }
        refuse_early(&parts)?;
        let learner = self.learner(&parts);
        let mut conn = Acquire::new(self, site).await?;
        let text = parts.text;
        let done = match step {
            Step::Query => conn
                .rows(parts, params, Place::Db)
                .await
                .map(Pipelined::Rows),
            Step::Execute => conn
                .count(parts, params, Place::Db)
                .await
                .map(Pipelined::Count),
        };
        if let Some((lane, class)) = learner {
            lane.learn(text, class, &conn);
        }
        done
    }

    /// The shared lane and the statement's deadline there, when this one-shot runs on
    /// it: the lane is on, and the call's deadline (if it set one) is no longer than the
    /// pool's `statement_timeout`, which the server enforces on a shared connection (the
    /// client's deadline is a backstop for a connection that stopped answering).
    ///
    /// Behind a pooler, a statement whose parameter types the lane has not learned yet
    /// checks out this once (see [`Db::learner`]).
    fn lane(&self, parts: &SqlParts<'_>) -> Option<(&Arc<Lane>, Option<Duration>, How)> {
        let lane = self.pool.lane.as_ref()?;
        let pool_deadline = self.pool.shared.ctx.config.statement_timeout;
        let deadline = match call_timeout() {
            None => pool_deadline,
            Some(None) if pool_deadline.is_some() => return None,
            Some(None) => None,
            Some(Some(d)) if pool_deadline.is_some_and(|p| d > p) => return None,
            Some(Some(d)) => Some(d),
        };
        Some((lane, deadline, lane.how(parts.text)?))
    }

    /// Behind a pooler, the lane that learns a statement's parameter types from this
    /// one-shot's checkout, with the statement's classification.
    fn learner(&self, parts: &SqlParts<'_>) -> Option<(Arc<Lane>, Classification)> {
        let lane = self.pool.lane.as_ref().filter(|lane| lane.learns())?;
        let class = placement(parts, Place::Db, false).ok()?;
        Some((Arc::clone(lane), class))
    }

    /// One-shot: runs a statement that returns exactly one row.
    ///
    /// Cancellation: as [`Db::query`].
    #[track_caller]
    pub fn query_one<'a, S: OneShotSql + 'a>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, Row> {
        let rows = self.query(statement, params);
        StatementFuture::new(async move { one_row(rows.await?) })
    }

    /// One-shot: runs a statement that returns zero or one row.
    ///
    /// Cancellation: as [`Db::query`].
    #[track_caller]
    pub fn query_opt<'a, S: OneShotSql + 'a>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, Option<Row>> {
        let rows = self.query(statement, params);
        StatementFuture::new(async move { opt_row(rows.await?) })
    }

    /// One-shot: runs a statement and returns the number of rows it affected.
    ///
    /// Cancellation: as [`Db::query`].
    #[track_caller]
    pub fn execute<'a, S: OneShotSql + 'a>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, u64> {
        let site = Location::caller();
        StatementFuture::new(async move {
            self.one_shot(statement.__parts(), params, Step::Execute, site)
                .await
                .map(|done| done.count())
        })
    }

    /// One-shot: runs one or more `;`-separated statements without parameters.
    ///
    /// Cancellation: as [`Db::query`].
    #[track_caller]
    pub fn batch_execute<'a, S: OneShotSql + 'a>(
        &'a mut self,
        statements: S,
    ) -> StatementFuture<'a, ()> {
        let site = Location::caller();
        StatementFuture::new(async move {
            let parts = statements.__parts();
            refuse_early(&parts)?;
            let mut conn = Acquire::new(self, site).await?;
            conn.batch(parts, Place::Db).await
        })
    }
}

/// Refuses a statement that cannot run as a one-shot before a connection is taken (with
/// the message `admit` would give).
fn refuse_early(parts: &SqlParts<'_>) -> Result<()> {
    placement(parts, Place::Db, false).map(drop)
}
