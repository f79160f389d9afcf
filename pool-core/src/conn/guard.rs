//! The operation guard and the recovery of interrupted operations.
//!
//! Every statement runs under an [`OpGuard`]. If the future running it is dropped after
//! the statement was sent (a timeout, `select!`, a cancelled request), the guard records
//! the state the connection must end up in and spawns a recovery task that gets it
//! there: cancel the statement on the server, wait for the connection to go quiet, undo
//! a half-done `BEGIN`. The next use of the connection — or the pool, when it is
//! returned — waits for that task first ([`Conn::ensure_ready`]); if it fails, the
//! connection is discarded.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pool_sql::Touches;
use tokio::time::Instant;
use tokio_postgres::Client;

use super::{Conn, ConnState, Ctx};
use crate::error::{self, Error, Result, Timeout, TimeoutKind};
use crate::status::AtomicCounters;

/// What a recovery task does to bring an interrupted connection back to a known state.
#[derive(Debug, Clone)]
pub(crate) enum Recovery {
    /// A statement was in flight: cancel it on the server and wait for quiet.
    CancelAndDrain,
    /// A transaction-control statement was in flight and its effect is wanted: wait.
    Drain,
    /// A transaction-control statement was in flight and must be undone: wait, then run this.
    DrainThen(Cow<'static, str>),
    /// Nothing in flight; run this (a `ROLLBACK` for a dropped transaction, an unlock).
    Run(Cow<'static, str>),
}

impl ConnState {
    /// Starts (or chains after the current one) a recovery task. Without a runtime to
    /// run it on, the connection is marked broken instead.
    fn spawn_recovery(&mut self, client: &Arc<Client>, ctx: &Arc<Ctx>, recovery: Recovery) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.broken = true;
            return;
        };
        let previous = self.pending.take();
        let client = Arc::clone(client);
        let ctx = Arc::clone(ctx);
        self.pending = Some(rt.spawn(async move {
            if let Some(previous) = previous
                && !previous.await.unwrap_or(false)
            {
                return false;
            }
            run_recovery(&client, &ctx, recovery).await
        }));
    }

    /// Records what a failed statement did to the connection.
    pub(super) fn on_error(&mut self, e: tokio_postgres::Error) -> Error {
        if error::is_fatal(&e) {
            self.broken = true;
            // "connection closed" says nothing of why: report the cause if it is known.
            if e.is_closed()
                && let Some(cause) = self.take_closed_by()
            {
                return Error::broken("while running a statement", Some(cause));
            }
        } else if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            self.tx.failed(code);
            if code == "25006" {
                self.read_only_refused = true;
            }
        }
        error::from_statement(e)
    }
}

async fn run_recovery(client: &Client, ctx: &Ctx, recovery: Recovery) -> bool {
    let limit = ctx.config.cleanup_timeout;
    let drain = || async {
        matches!(
            tokio::time::timeout(limit, client.check_connection()).await,
            Ok(Ok(()))
        )
    };
    let ok = match recovery {
        Recovery::CancelAndDrain => cancel_and_drain(client, ctx).await,
        Recovery::Drain => drain().await,
        Recovery::DrainThen(sql) => {
            drain().await
                && matches!(
                    tokio::time::timeout(limit, client.batch_execute(&sql)).await,
                    Ok(Ok(()))
                )
        }
        Recovery::Run(sql) => matches!(
            tokio::time::timeout(limit, client.batch_execute(&sql)).await,
            Ok(Ok(()))
        ),
    };
    if !ok {
        tracing::debug!(target: "pool_core", "recovery of an interrupted connection failed; it will be discarded");
    }
    ok
}

/// Cancels whatever the connection is running and waits until it is quiet.
///
/// A cancel request is sent on a separate connection and lands asynchronously, so it can
/// arrive after the statement it was meant for has finished — and cancel the *next* one.
/// To keep that from hitting the next borrower: give the statement a moment to finish by
/// itself (no cancel needed then), and after a cancel, absorb a late arrival with a short
/// probe statement.
pub(crate) async fn cancel_and_drain(client: &Client, ctx: &Ctx) -> bool {
    let limit = ctx.config.cleanup_timeout;
    let drain = client.check_connection();
    tokio::pin!(drain);
    if let Ok(done) = tokio::time::timeout(Duration::from_millis(2), &mut drain).await {
        return done.is_ok();
    }
    let cancel = ctx.config.connector.cancel(client.cancel_token());
    match tokio::time::timeout(ctx.config.connect_timeout, cancel).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(target: "pool_core", error = %e, "cancel request failed"),
        Err(_) => tracing::debug!(target: "pool_core", "cancel request timed out"),
    }
    if !matches!(tokio::time::timeout(limit, &mut drain).await, Ok(Ok(()))) {
        return false;
    }
    for _ in 0..3 {
        match tokio::time::timeout(limit, client.simple_query("SELECT pg_sleep(0.05)")).await {
            Ok(Ok(_)) => return true,
            Ok(Err(e)) if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => {
                continue;
            }
            // The cancelled statement was inside a transaction, which is now aborted (the
            // guard marked it so, and it is rolled back next): the connection answered,
            // and the cancel request has been processed.
            Ok(Err(e))
                if e.code()
                    == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION) =>
            {
                return true;
            }
            _ => return false,
        }
    }
    false
}

/// Guards one operation on the connection from the moment it is sent until its result
/// is applied. Dropped while armed, it puts the connection on its recovery path.
pub(crate) struct OpGuard<'a> {
    client: &'a Arc<Client>,
    ctx: &'a Arc<Ctx>,
    state: &'a mut ConnState,
    recovery: Recovery,
    /// The transaction depth the connection is left at if the operation is abandoned.
    depth_if_dropped: Option<u32>,
    armed: bool,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let recovery = self.recovery.clone();
            self.state
                .abandon(self.client, self.ctx, recovery, self.depth_if_dropped);
        }
    }
}

impl ConnState {
    /// An operation was abandoned after it was sent: record what that means for the
    /// transaction, and start the recovery that brings the connection back.
    fn abandon(
        &mut self,
        client: &Arc<Client>,
        ctx: &Arc<Ctx>,
        recovery: Recovery,
        depth_if_dropped: Option<u32>,
    ) {
        match recovery {
            Recovery::CancelAndDrain => {
                AtomicCounters::bump(&ctx.counters.cancelled_statements);
                // The statement may or may not have taken effect: a transaction around it
                // can no longer be trusted to commit.
                self.tx.mark_aborted();
            }
            _ => {
                if let Some(d) = depth_if_dropped {
                    self.tx.unwind_to(d);
                }
            }
        }
        self.spawn_recovery(client, ctx, recovery);
    }
}

impl OpGuard<'_> {
    /// Runs the operation under the deadline. On timeout the guard stays armed and is
    /// dropped, which cancels the statement on the server.
    pub(crate) async fn run<T>(
        self,
        deadline: Option<Instant>,
        sql: &str,
        fut: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        self.run_with(deadline, sql, move || fut).await
    }

    /// [`OpGuard::run`] for the future `make` returns, built in place: a driver's
    /// statement future is large, and passed by value it is copied at each step.
    pub(crate) async fn run_with<
        T,
        F: Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    >(
        mut self,
        deadline: Option<Instant>,
        sql: &str,
        make: impl FnOnce() -> F,
    ) -> Result<T> {
        let fut = std::pin::pin!(make());
        let res = match deadline {
            None => fut.await,
            Some(deadline) => match tokio::time::timeout_at(deadline, fut).await {
                Ok(res) => res,
                Err(_) => return Err(statement_timeout(self.ctx, sql, false)),
            },
        };
        self.armed = false;
        res.map_err(|e| self.state.on_error(e))
    }
}

/// The deadline of the statement being run: its call's own, else the pool's.
fn statement_timeout_of(ctx: &Ctx) -> Option<Duration> {
    crate::stmt::call_timeout().unwrap_or(ctx.config.statement_timeout)
}

/// The error of a statement whose deadline passed (counted); `unsent` if it passed while
/// the connection was still recovering, before the statement was sent.
fn statement_timeout(ctx: &Ctx, sql: &str, unsent: bool) -> Error {
    AtomicCounters::bump(&ctx.counters.statement_timeouts);
    ctx.telemetry.statement_timed_out();
    let after = statement_timeout_of(ctx).unwrap_or_default();
    Error::Timeout(Box::new(Timeout {
        kind: TimeoutKind::Statement,
        after,
        status: None,
        holders: Vec::new(),
        last_connect_error: None,
        statement: (!sql.is_empty()).then(|| error::preview(sql)),
        unsent,
        shared: false,
    }))
}

impl Conn {
    /// The deadline of a statement starting now.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        statement_timeout_of(&self.ctx).map(|d| Instant::now() + d)
    }

    /// Runs `sql` from a background task before the connection's next use (a `ROLLBACK`
    /// for a dropped transaction, an unlock for a dropped lock); the next use waits.
    pub(crate) fn defer(&mut self, sql: Cow<'static, str>) {
        self.state
            .spawn_recovery(&self.client, &self.ctx, Recovery::Run(sql));
    }

    /// A row stream was dropped before its end: outside a transaction the statement is
    /// cancelled on the server and the connection drained; inside one, the rest of the
    /// rows are drained (a cancel would abort the caller's transaction).
    pub(crate) fn abandon_stream(&mut self) {
        let recovery = if self.state.tx.depth() > 0 {
            Recovery::Drain
        } else {
            Recovery::CancelAndDrain
        };
        self.state.abandon(&self.client, &self.ctx, recovery, None);
    }

    /// A `copy_in` sink was dropped before `finish`: the driver aborts the copy (a
    /// `CopyFail`), so the server ends it with an error, which aborts a transaction
    /// around it. The next use waits until the server has answered.
    pub(crate) fn abandon_copy_in(&mut self) {
        if self.state.tx.depth() > 0 {
            self.state.tx.mark_aborted();
        }
        self.state
            .abandon(&self.client, &self.ctx, Recovery::Drain, None);
    }

    /// What an error in a row stream means for the connection.
    pub(crate) fn stream_error(&mut self, e: tokio_postgres::Error) -> Error {
        self.state.on_error(e)
    }

    /// Waits for a recovery in flight; refuses a connection known to be unusable.
    ///
    /// The wait counts against the deadline of the statement `sql` about to run: if it
    /// passes first, that statement times out and the recovery goes on (the next use,
    /// or the pool on return, waits for it again).
    pub(crate) async fn ensure_ready(
        &mut self,
        deadline: Option<Instant>,
        sql: &str,
    ) -> Result<()> {
        let mut recovery_failed = false;
        if let Some(pending) = self.state.pending.as_mut() {
            let cfg = &self.ctx.config;
            let limit = cfg.connect_timeout + cfg.cleanup_timeout * 3 + Duration::from_secs(1);
            let own = Instant::now() + limit;
            let until = deadline.map_or(own, |d| d.min(own));
            let ok = match tokio::time::timeout_at(until, &mut *pending).await {
                Ok(done) => matches!(done, Ok(true)),
                Err(_) if deadline.is_some_and(|d| d < own) => {
                    return Err(statement_timeout(&self.ctx, sql, true));
                }
                Err(_) => false,
            };
            self.state.pending = None;
            if !ok {
                self.state.broken = true;
                recovery_failed = true;
            }
        }
        if self.state.broken || self.closed() {
            self.state.broken = true;
            let what = if self.closed() {
                "the server or the network closed it"
            } else if recovery_failed {
                "an interrupted statement could not be cancelled and drained in time"
            } else {
                "an earlier error left it unusable"
            };
            return Err(Error::broken(what, self.state.take_closed_by()));
        }
        Ok(())
    }

    /// Splits the connection into the client (to build the driver's future) and a guard
    /// over the bookkeeping, and records the session state the statement touches.
    pub(crate) fn op(&mut self, touches: Touches) -> (&Client, OpGuard<'_>) {
        self.state.touches |= touches;
        self.guarded(Recovery::CancelAndDrain, None)
    }

    /// The client and a guard that, if the operation is abandoned, leaves the
    /// transaction depth at `depth_if_dropped` (when given) and starts `recovery`.
    pub(crate) fn guarded(
        &mut self,
        recovery: Recovery,
        depth_if_dropped: Option<u32>,
    ) -> (&Client, OpGuard<'_>) {
        let guard = OpGuard {
            client: &self.client,
            ctx: &self.ctx,
            state: &mut self.state,
            recovery,
            depth_if_dropped,
            armed: true,
        };
        (&self.client, guard)
    }
}
