//! A connection: statements, the statement cache, and the bookkeeping that lets the pool
//! hand it to the next borrower clean.
//!
//! Every statement runs under an [`OpGuard`]. If the future running it is dropped
//! after the statement was sent (a timeout, `select!`, a cancelled request), the guard
//! records the state the connection must end up in and spawns a recovery task that gets
//! it there: cancel the statement on the server, wait for the connection to go quiet,
//! undo a half-done `BEGIN`. The next use of the connection — or the pool, when it is
//! returned — waits for that task first; if it fails, the connection is discarded.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pool_sql::{Classification, Kind, Touches};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Notification, Row, Statement};

use crate::error::{self, Error, Result, Timeout, TimeoutKind};
use crate::pool::Ctx;
use crate::stmt::{ConnSql, Prepared, SqlParts, StatementFuture};

/// A database connection, lent by the pool.
///
/// You get one as `&mut Conn` — from a [`PooledConn`](crate::PooledConn) (which derefs
/// to it), inside a `#[with_conn]` function, or from a transaction via a connection
/// source. It runs plain and session-state statements; transaction-only statements need a
/// [`Tx`](crate::Tx) from [`Conn::begin`].
///
/// Statements given as `&str` are prepared once per connection and cached.
pub struct Conn {
    pub(crate) client: Arc<Client>,
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) state: ConnState,
    pub(crate) meta: ConnMeta,
    pub(crate) cache: StatementCache,
    notifications: mpsc::UnboundedReceiver<Notification>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.meta.id)
            .field("backend_pid", &self.meta.backend_pid)
            .field("tx_depth", &self.state.tx_depth)
            .field("touches", &self.state.touches)
            .finish_non_exhaustive()
    }
}

/// Facts about a connection that do not change while it lives.
#[derive(Debug, Clone)]
pub(crate) struct ConnMeta {
    pub(crate) id: u64,
    pub(crate) backend_pid: i32,
    pub(crate) expires: Option<Instant>,
}

/// What the pool must know to hand the connection to the next borrower clean.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// Transaction nesting on the server: 0 outside, 1 in a transaction, 2+ in savepoints.
    pub(crate) tx_depth: u32,
    /// Bumped whenever a transaction starts or is ended by force, so stale `Tx` handles
    /// notice.
    pub(crate) tx_epoch: u64,
    /// The depth at which a statement failed inside the transaction (it is then aborted
    /// on the server until rolled back to that depth or above).
    pub(crate) aborted_at: Option<u32>,
    /// Session state the borrower left behind.
    pub(crate) touches: Touches,
    /// A recovery task in flight; it returns whether the connection is clean.
    pub(crate) pending: Option<JoinHandle<bool>>,
    /// Unusable: discard on return.
    pub(crate) broken: bool,
    /// Why the connection closed, when the server or the network closed it while no
    /// statement was waiting (a FATAL sent to an idle session, a reset): set by the task
    /// that reads the connection's messages, taken by the first error that reports the
    /// connection lost, so that error names the real cause.
    pub(crate) closed_by: Arc<std::sync::Mutex<Option<tokio_postgres::Error>>>,
    /// When the task reading the connection's messages saw it end (set once, however it
    /// ended). Read by `is_broken`, so the pool knows as soon as that task does.
    pub(crate) closed_at: Arc<std::sync::OnceLock<Instant>>,
}

/// How a statement with parameters is sent (see `Conn::call_for`).
enum Call<'p> {
    /// A named statement, prepared once per connection and cached.
    Named(Statement),
    /// Unnamed, with the parameters paired with their server-inferred types.
    Unnamed(Vec<(&'p (dyn ToSql + Sync), Type)>),
}

/// Where a statement is being run, for the run-time placement rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// A one-shot statement on `Db`.
    Db,
    /// A held connection (maybe inside a transaction, if reached through one).
    Conn,
    /// A transaction.
    Tx,
}

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

/// Prepared statements of one connection, by SQL text.
#[derive(Default)]
pub(crate) struct StatementCache {
    map: HashMap<Box<str>, Statement>,
    /// Parameter types by SQL text, for unnamed statements (PgBouncer transaction mode).
    param_types: HashMap<Box<str>, Vec<Type>>,
}

impl StatementCache {
    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    fn get(&self, sql: &str) -> Option<&Statement> {
        self.map.get(sql)
    }
    fn insert(&mut self, sql: &str, st: Statement, capacity: usize) {
        if capacity == 0 {
            return;
        }
        if self.map.len() >= capacity {
            // Evict an arbitrary entry; the server-side statement is closed when the
            // driver's `Statement` is dropped.
            if let Some(k) = self.map.keys().next().cloned() {
                self.map.remove(&k);
            }
        }
        self.map.insert(sql.into(), st);
    }
    fn remove(&mut self, sql: &str) {
        self.map.remove(sql);
        self.param_types.remove(sql);
    }
}

impl ConnState {
    /// Starts (or chains after the current one) a recovery task. Without a runtime to
    /// run it on, the connection is marked broken instead.
    pub(crate) fn spawn_recovery(
        &mut self,
        client: &Arc<Client>,
        ctx: &Arc<Ctx>,
        recovery: Recovery,
    ) {
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
    fn on_error(&mut self, e: tokio_postgres::Error) -> Error {
        if error::is_fatal(&e) {
            self.broken = true;
            // "connection closed" says nothing of why: report the cause if it is known.
            if e.is_closed()
                && let Some(cause) = self.take_closed_by()
            {
                return Error::broken("while running a statement", Some(cause));
            }
        } else if self.tx_depth > 0 && e.as_db_error().is_some() {
            self.mark_aborted();
        }
        error::from_statement(e)
    }

    /// The error that closed the connection, if one was recorded and not yet reported.
    pub(crate) fn take_closed_by(&self) -> Option<tokio_postgres::Error> {
        self.closed_by
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    fn mark_aborted(&mut self) {
        if self.tx_depth > 0 {
            self.aborted_at = Some(
                self.aborted_at
                    .map_or(self.tx_depth, |d| d.min(self.tx_depth)),
            );
        }
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
async fn cancel_and_drain(client: &Client, ctx: &Ctx) -> bool {
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
        if !self.armed {
            return;
        }
        match self.recovery {
            Recovery::CancelAndDrain => {
                crate::status::AtomicCounters::bump(&self.ctx.counters.cancelled_statements);
                // The statement may or may not have taken effect: a transaction around it
                // can no longer be trusted to commit.
                self.state.mark_aborted();
            }
            _ => {
                if let Some(d) = self.depth_if_dropped {
                    self.state.tx_depth = d;
                    if self.state.aborted_at.is_some_and(|a| a > d) {
                        self.state.aborted_at = None;
                    }
                }
            }
        }
        let recovery = self.recovery.clone();
        self.state.spawn_recovery(self.client, self.ctx, recovery);
    }
}

impl OpGuard<'_> {
    /// Runs the operation under the deadline. On timeout the guard stays armed and is
    /// dropped, which cancels the statement on the server.
    async fn run<T>(
        mut self,
        deadline: Option<Instant>,
        sql: &str,
        fut: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
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

/// The error of a statement whose deadline passed (counted); `unsent` if it passed while
/// the connection was still recovering, before the statement was sent.
fn statement_timeout(ctx: &Ctx, sql: &str, unsent: bool) -> Error {
    crate::status::AtomicCounters::bump(&ctx.counters.statement_timeouts);
    let after = ctx.config.statement_timeout.unwrap_or_default();
    Error::Timeout(Box::new(Timeout {
        kind: TimeoutKind::Statement,
        after,
        status: None,
        holders: Vec::new(),
        last_connect_error: None,
        statement: (!sql.is_empty()).then(|| error::preview(sql)),
        unsent,
    }))
}

/// A transaction-control step and how to undo it if it is abandoned mid-flight.
#[derive(Debug, Clone)]
pub(crate) enum Control {
    Begin(String),
    Savepoint(u32),
    Release(u32),
    Commit,
    Rollback,
    RollbackTo(u32),
}

pub(crate) fn savepoint_name(depth: u32) -> String {
    format!("pool_sp_{depth}")
}

impl Control {
    fn sql(&self) -> Cow<'static, str> {
        match self {
            Control::Begin(sql) => Cow::Owned(sql.clone()),
            Control::Savepoint(d) => Cow::Owned(format!("SAVEPOINT {}", savepoint_name(*d))),
            Control::Release(d) => Cow::Owned(format!("RELEASE SAVEPOINT {}", savepoint_name(*d))),
            Control::Commit => Cow::Borrowed("COMMIT"),
            Control::Rollback => Cow::Borrowed("ROLLBACK"),
            Control::RollbackTo(d) => rollback_to_sql(*d),
        }
    }

    /// What to do, and where the depth ends up, if the step is abandoned after sending.
    fn if_dropped(&self) -> (Recovery, u32) {
        match self {
            // The BEGIN will have run; nobody holds the transaction: roll it back.
            Control::Begin(_) => (Recovery::DrainThen(Cow::Borrowed("ROLLBACK")), 0),
            Control::Savepoint(d) => (Recovery::DrainThen(rollback_to_sql(*d)), d - 1),
            Control::Release(d) | Control::RollbackTo(d) => (Recovery::Drain, d - 1),
            // Committed or not, make sure the connection is outside any transaction.
            Control::Commit | Control::Rollback => {
                (Recovery::DrainThen(Cow::Borrowed("ROLLBACK")), 0)
            }
        }
    }
}

pub(crate) fn rollback_to_sql(depth: u32) -> Cow<'static, str> {
    let name = savepoint_name(depth);
    Cow::Owned(format!(
        "ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"
    ))
}

impl Conn {
    pub(crate) fn new(
        client: Arc<Client>,
        ctx: Arc<Ctx>,
        meta: ConnMeta,
        notifications: mpsc::UnboundedReceiver<Notification>,
    ) -> Conn {
        Conn {
            client,
            ctx,
            state: ConnState::default(),
            meta,
            cache: StatementCache::default(),
            notifications,
        }
    }

    /// The server process serving this connection (`pg_backend_pid()`), as seen in
    /// `pg_stat_activity.pid`.
    pub fn backend_pid(&self) -> i32 {
        self.meta.backend_pid
    }

    /// Whether the connection is inside a transaction (only possible when it was reached
    /// through a [`Tx`](crate::Tx)).
    pub fn in_transaction(&self) -> bool {
        self.state.tx_depth > 0
    }

    /// Whether the connection is known to be unusable; the pool will discard it.
    pub fn is_broken(&self) -> bool {
        self.state.broken || self.closed()
    }

    /// When the connection was seen closed by the task reading its messages. Not API:
    /// lets the fault tests tell a connection handed out already dead (a pool bug) from
    /// one that died after it was handed out (which no pool can prevent).
    #[doc(hidden)]
    pub fn __closed_at(&self) -> Option<Instant> {
        self.state.closed_at.get().copied()
    }

    /// The server or the network closed the connection.
    fn closed(&self) -> bool {
        self.client.is_closed() || self.state.closed_at.get().is_some()
    }

    /// Runs a statement and returns its rows.
    ///
    /// If the future is dropped after the statement was sent, the statement is cancelled
    /// on the server and the connection is drained before its next use.
    pub fn query<'a, S>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, Vec<Row>>
    where
        S: ConnSql + 'a,
    {
        Box::pin(async move { self.rows(statement.__parts(), params, Place::Conn).await })
    }

    /// Runs a statement that returns exactly one row, else [`Error::RowCount`].
    ///
    /// Cancellation: as [`Conn::query`].
    pub fn query_one<'a, S>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, Row>
    where
        S: ConnSql + 'a,
    {
        Box::pin(async move { one_row(self.rows(statement.__parts(), params, Place::Conn).await?) })
    }

    /// Runs a statement that returns zero or one row, else [`Error::RowCount`].
    ///
    /// Cancellation: as [`Conn::query`].
    pub fn query_opt<'a, S>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, Option<Row>>
    where
        S: ConnSql + 'a,
    {
        Box::pin(async move { opt_row(self.rows(statement.__parts(), params, Place::Conn).await?) })
    }

    /// Runs a statement and returns the number of rows it affected.
    ///
    /// Cancellation: as [`Conn::query`].
    pub fn execute<'a, S>(
        &'a mut self,
        statement: S,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> StatementFuture<'a, u64>
    where
        S: ConnSql + 'a,
    {
        Box::pin(async move { self.count(statement.__parts(), params, Place::Conn).await })
    }

    /// Runs one or more statements separated by `;`, without parameters, using the simple
    /// query protocol. All of them are classified; transaction control is refused.
    ///
    /// Cancellation: as [`Conn::query`].
    pub fn batch_execute<'a, S>(&'a mut self, statements: S) -> StatementFuture<'a, ()>
    where
        S: ConnSql + 'a,
    {
        Box::pin(async move { self.batch(statements.__parts(), Place::Conn).await })
    }

    /// Prepares a statement on this connection (or takes it from the connection's cache).
    /// The result runs only on this connection.
    ///
    /// Cancellation: as [`Conn::query`].
    pub fn prepare<'a, S>(&'a mut self, statement: S) -> StatementFuture<'a, Prepared>
    where
        S: ConnSql + 'a,
    {
        Box::pin(async move { self.prepare_at(statement.__parts(), Place::Conn).await })
    }

    /// Sets a session parameter (`set_config(name, value, false)`). The pool resets it
    /// before the connection is reused.
    ///
    /// Cancellation: as [`Conn::query`].
    pub async fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let parts = SqlParts::known(
            "SELECT set_config($1, $2, false)",
            Kind::Session,
            Touches::GUC,
        );
        self.rows(parts, &[&name, &value], Place::Conn)
            .await
            .map(drop)
    }

    /// Starts listening on a notification channel (`LISTEN`). The pool runs
    /// `UNLISTEN *` before the connection is reused. Receive with [`Conn::notification`].
    ///
    /// Cancellation: as [`Conn::query`].
    pub async fn listen(&mut self, channel: &str) -> Result<()> {
        let sql = format!("LISTEN {}", quote_ident(channel));
        let parts = SqlParts::known(&sql, Kind::Session, Touches::LISTEN);
        self.batch(parts, Place::Conn).await
    }

    /// Waits for the next notification on a channel this connection listens to.
    ///
    /// Cancellation: safe; a notification is never lost by dropping this future.
    pub async fn notification(&mut self) -> Result<Notification> {
        self.notifications
            .recv()
            .await
            .ok_or_else(|| Error::broken("while waiting for a notification", None))
    }

    /// A notification already received, without waiting.
    pub fn try_notification(&mut self) -> Option<Notification> {
        self.notifications.try_recv().ok()
    }

    // ---- the engine ----------------------------------------------------------------

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.ctx
            .config
            .statement_timeout
            .map(|d| Instant::now() + d)
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

    /// Checks that the statement may run here and the connection is ready for it.
    pub(crate) async fn admit(
        &mut self,
        parts: &SqlParts<'_>,
        place: Place,
        deadline: Option<Instant>,
    ) -> Result<Classification> {
        if let Some(p) = parts.prepared
            && p.conn_id != self.meta.id
        {
            return Err(Error::refused(
                "<prepared statement>",
                "it was prepared on another connection; prepare it on this one (prepare is cached per connection)",
            ));
        }
        let class = placement(parts, place, self.state.tx_depth > 0)?;
        if class.kind == Kind::Session && self.ctx.config.pgbouncer_transaction_mode {
            return Err(Error::refused(parts.text, POOLER_SESSION_ADVICE));
        }
        self.ensure_ready(deadline, parts.text).await?;
        if self.state.aborted_at.is_some() && self.state.tx_depth > 0 {
            return Err(Error::TransactionAborted {
                reason: "an earlier statement in this transaction failed or was cancelled, so the server ignores \
                         everything until it is rolled back",
            });
        }
        Ok(class)
    }

    /// Splits the connection into the client (to build the driver's future) and a guard
    /// over the bookkeeping, and records the session state the statement touches.
    fn op(&mut self, touches: Touches) -> (&Client, OpGuard<'_>) {
        self.state.touches |= touches;
        self.guarded(Recovery::CancelAndDrain, None)
    }

    /// The client and a guard that, if the operation is abandoned, leaves the
    /// transaction depth at `depth_if_dropped` (when given) and starts `recovery`.
    fn guarded(
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

    async fn statement_for(
        &mut self,
        parts: &SqlParts<'_>,
        deadline: Option<Instant>,
    ) -> Result<Statement> {
        if let Some(p) = parts.prepared {
            return Ok(p.statement.clone());
        }
        if let Some(st) = self.cache.get(parts.text) {
            return Ok(st.clone());
        }
        let (client, guard) = self.op(Touches::empty());
        let st = guard
            .run(deadline, parts.text, client.prepare(parts.text))
            .await?;
        let capacity = self.ctx.config.statement_cache_capacity;
        self.cache.insert(parts.text, st.clone(), capacity);
        Ok(st)
    }

    /// How a statement with parameters goes to the server: unnamed (parse, bind and
    /// execute in one round trip) behind a transaction-mode pooler, else as a cached
    /// named statement.
    async fn call_for<'p>(
        &mut self,
        parts: &SqlParts<'_>,
        params: &[&'p (dyn ToSql + Sync)],
        deadline: Option<Instant>,
    ) -> Result<Call<'p>> {
        if self.ctx.config.pgbouncer_transaction_mode && parts.prepared.is_none() {
            let typed = self.typed_params(parts, params, deadline).await?;
            Ok(Call::Unnamed(typed))
        } else {
            let st = self.statement_for(parts, deadline).await?;
            Ok(Call::Named(st))
        }
    }

    /// The parameters paired with the types the server infers for them.
    async fn typed_params<'p>(
        &mut self,
        parts: &SqlParts<'_>,
        params: &[&'p (dyn ToSql + Sync)],
        deadline: Option<Instant>,
    ) -> Result<Vec<(&'p (dyn ToSql + Sync), Type)>> {
        let types = self.param_types(parts.text, deadline).await?;
        if types.len() != params.len() {
            return Err(Error::refused(
                parts.text,
                format!(
                    "it takes {} parameter(s) and {} were given",
                    types.len(),
                    params.len()
                ),
            ));
        }
        Ok(params.iter().copied().zip(types).collect())
    }

    /// The parameter types of `sql`, asked from the server once per connection. Outside
    /// a transaction the question (a named statement, described and closed) runs inside
    /// its own `BEGIN … COMMIT`, which a transaction-mode pooler keeps on one server
    /// connection, so nothing is left behind on a connection other clients share.
    async fn param_types(&mut self, sql: &str, deadline: Option<Instant>) -> Result<Vec<Type>> {
        if let Some(types) = self.cache.param_types.get(sql) {
            return Ok(types.clone());
        }
        let wrap = self.state.tx_depth == 0;
        // Abandoned midway, the wrapping transaction must not survive.
        let recovery = if wrap {
            Recovery::DrainThen(Cow::Borrowed("ROLLBACK"))
        } else {
            Recovery::CancelAndDrain
        };
        let (client, guard) = self.guarded(recovery, None);
        let describe = async {
            if wrap {
                client.batch_execute("BEGIN").await?;
            }
            // The statement is dropped here: its Close goes out before the COMMIT.
            let described = client.prepare(sql).await.map(|st| st.params().to_vec());
            if wrap {
                let end = if described.is_ok() {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                };
                client.batch_execute(end).await?;
            }
            described
        };
        let types = guard.run(deadline, sql, describe).await?;
        if self.cache.param_types.len() >= 256 {
            self.cache.param_types.clear();
        }
        self.cache.param_types.insert(sql.into(), types.clone());
        Ok(types)
    }

    fn after_success(&mut self, class: &Classification) {
        if class.touches.contains(Touches::DROPS_PREPARED) {
            self.cache.clear();
        }
    }

    /// Applies what a statement's outcome means for the connection's caches.
    fn settle<T>(&mut self, parts: &SqlParts<'_>, class: &Classification, res: &Result<T>) {
        match res {
            Ok(_) => self.after_success(class),
            Err(e) => self.after_error(parts, e),
        }
    }

    fn after_error(&mut self, parts: &SqlParts<'_>, e: &Error) {
        // A cached plan invalidated by a schema change: forget it so the next use
        // prepares afresh.
        if let Some(db) = e.as_db_error()
            && (db.code().code() == "0A000"
                || db.code().code() == "26000"
                || self.ctx.config.pgbouncer_transaction_mode)
        {
            self.cache.remove(parts.text);
        }
    }

    pub(crate) async fn rows(
        &mut self,
        parts: SqlParts<'_>,
        params: &[&(dyn ToSql + Sync)],
        place: Place,
    ) -> Result<Vec<Row>> {
        let deadline = self.deadline();
        let class = self.admit(&parts, place, deadline).await?;
        let call = self.call_for(&parts, params, deadline).await?;
        let (client, guard) = self.op(class.touches);
        let res = match &call {
            Call::Named(st) => {
                guard
                    .run(deadline, parts.text, client.query(st, params))
                    .await
            }
            Call::Unnamed(typed) => {
                guard
                    .run(deadline, parts.text, client.query_typed(parts.text, typed))
                    .await
            }
        };
        self.settle(&parts, &class, &res);
        res
    }

    pub(crate) async fn count(
        &mut self,
        parts: SqlParts<'_>,
        params: &[&(dyn ToSql + Sync)],
        place: Place,
    ) -> Result<u64> {
        let deadline = self.deadline();
        let class = self.admit(&parts, place, deadline).await?;
        let call = self.call_for(&parts, params, deadline).await?;
        let (client, guard) = self.op(class.touches);
        let res = match &call {
            Call::Named(st) => {
                guard
                    .run(deadline, parts.text, client.execute(st, params))
                    .await
            }
            Call::Unnamed(typed) => {
                guard
                    .run(
                        deadline,
                        parts.text,
                        client.execute_typed(parts.text, typed),
                    )
                    .await
            }
        };
        self.settle(&parts, &class, &res);
        res
    }

    pub(crate) async fn batch(&mut self, parts: SqlParts<'_>, place: Place) -> Result<()> {
        if parts.prepared.is_some() {
            return Err(Error::refused(
                "<prepared statement>",
                "batch_execute takes SQL text, not a prepared statement",
            ));
        }
        let deadline = self.deadline();
        let class = self.admit(&parts, place, deadline).await?;
        let (client, guard) = self.op(class.touches);
        let res = guard
            .run(deadline, parts.text, client.batch_execute(parts.text))
            .await;
        if res.is_ok() {
            self.after_success(&class);
        }
        res
    }

    pub(crate) async fn prepare_at(
        &mut self,
        parts: SqlParts<'_>,
        place: Place,
    ) -> Result<Prepared> {
        if self.ctx.config.pgbouncer_transaction_mode {
            return Err(Error::refused(parts.text, POOLER_PREPARE_ADVICE));
        }
        let deadline = self.deadline();
        let class = self.admit(&parts, place, deadline).await?;
        let statement = self.statement_for(&parts, deadline).await?;
        Ok(Prepared {
            statement,
            class,
            conn_id: self.meta.id,
        })
    }

    /// Runs a transaction-control step and applies its effect on the bookkeeping.
    pub(crate) async fn control(&mut self, step: Control) -> Result<()> {
        let deadline = self.deadline();
        let sql = step.sql();
        self.ensure_ready(deadline, &sql).await?;
        let (recovery, depth_if_dropped) = step.if_dropped();
        let (client, guard) = self.guarded(recovery, Some(depth_if_dropped));
        let res = guard.run(deadline, &sql, client.batch_execute(&sql)).await;
        let st = &mut self.state;
        match (&step, &res) {
            (_, Err(_)) if st.broken => {}
            (Control::Begin(_), Ok(())) => {
                st.tx_depth = 1;
                st.tx_epoch += 1;
                st.aborted_at = None;
            }
            (Control::Begin(_), Err(_)) => st.tx_depth = 0,
            (Control::Savepoint(d), Ok(())) => st.tx_depth = *d,
            (Control::Savepoint(d), Err(_)) => {
                st.tx_depth = d - 1;
                st.mark_aborted();
            }
            // A failed COMMIT (serialization failure, deferred constraint) ends the
            // transaction all the same.
            (Control::Commit, _) | (Control::Rollback, Ok(())) => {
                st.tx_depth = 0;
                st.aborted_at = None;
            }
            (Control::Release(d) | Control::RollbackTo(d), Ok(())) => {
                st.tx_depth = d - 1;
                if st.aborted_at.is_some_and(|a| a >= *d) || matches!(step, Control::RollbackTo(_))
                {
                    st.aborted_at = None;
                }
            }
            (Control::Release(_) | Control::RollbackTo(_) | Control::Rollback, Err(_)) => {
                // The savepoint stack is no longer what we think: end the whole
                // transaction. Live `Tx` handles see the epoch change and fail.
                st.tx_depth = 0;
                st.tx_epoch += 1;
                st.aborted_at = None;
                st.spawn_recovery(
                    &self.client,
                    &self.ctx,
                    Recovery::Run(Cow::Borrowed("ROLLBACK")),
                );
            }
        }
        res
    }

    /// Brings the connection back to a clean session for the next borrower: waits for
    /// recovery, ends any transaction, resets the session state the borrower touched.
    /// An error means the connection must be discarded.
    pub(crate) async fn clean(&mut self) -> Result<()> {
        self.ensure_ready(None, "").await?;
        let limit = self.ctx.config.cleanup_timeout;
        if self.state.tx_depth > 0 {
            self.simple(limit, "ROLLBACK").await?;
            self.state.tx_depth = 0;
            self.state.aborted_at = None;
            self.state.tx_epoch += 1;
        }
        let touches = self.state.touches;
        if !touches.is_empty() {
            let sql = crate::reset::reset_sql(touches);
            self.simple(limit, &sql).await?;
            crate::status::AtomicCounters::bump(&self.ctx.counters.resets_on_return);
            if crate::reset::drops_prepared(touches) {
                self.cache.clear();
            }
            self.state.touches = Touches::empty();
            if (touches.contains(Touches::GUC) || touches.contains(Touches::ROLE))
                && let Some(hook) = self.ctx.config.after_connect.clone()
            {
                tokio::time::timeout(limit, hook(self))
                    .await
                    .map_err(|_| {
                        Error::broken("re-running after_connect after a reset timed out", None)
                    })??;
                self.state.touches = Touches::empty();
            }
            while self.notifications.try_recv().is_ok() {}
        }
        if self.ctx.config.discard_prepared_on_return {
            self.cache.clear();
        }
        Ok(())
    }

    async fn simple(&mut self, limit: Duration, sql: &str) -> Result<()> {
        match tokio::time::timeout(limit, self.client.batch_execute(sql)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.state.broken = true;
                Err(Error::broken(
                    "while cleaning the connection for reuse",
                    Some(e),
                ))
            }
            Err(_) => {
                self.state.broken = true;
                Err(Error::broken(
                    "cleaning the connection for reuse timed out",
                    None,
                ))
            }
        }
    }

    /// Whether the connection can go straight back to the pool with no cleaning.
    pub(crate) fn is_clean(&self) -> bool {
        let s = &self.state;
        !s.broken
            && s.pending.is_none()
            && s.tx_depth == 0
            && s.touches.is_empty()
            && (!self.ctx.config.discard_prepared_on_return || self.cache.is_empty())
            && !self.closed()
    }

    /// Pings the server (a protocol-level `Sync`), bounded by `limit`.
    pub(crate) async fn ping(&mut self, limit: Duration) -> bool {
        let deadline = Some(Instant::now() + limit);
        if self.ensure_ready(deadline, "").await.is_err() {
            return false;
        }
        let (client, guard) = self.op(Touches::empty());
        guard
            .run(deadline, "", client.check_connection())
            .await
            .is_ok()
    }
}

/// The statement's classification, if it may run at `place` (`in_tx`: on a connection
/// inside a transaction); else the refusal, saying what to write instead.
pub(crate) fn placement(parts: &SqlParts<'_>, place: Place, in_tx: bool) -> Result<Classification> {
    let class = match &parts.class {
        Ok(c) => *c,
        Err(refusal) => return Err(Error::refused(parts.text, refusal.to_string())),
    };
    let allowed = match (place, class.kind) {
        (Place::Db, Kind::Plain) => true,
        (Place::Db, _) => false,
        (Place::Conn, Kind::TxOnly) => in_tx,
        _ => true,
    };
    match class.kind {
        _ if allowed => Ok(class),
        Kind::Session => Err(Error::refused(parts.text, SESSION_ADVICE)),
        _ => Err(Error::refused(parts.text, TX_ONLY_ADVICE)),
    }
}

const SESSION_ADVICE: &str = "it changes session state (SET, LISTEN, advisory lock, temp table, currval…), which is \
    lost when a one-shot statement's connection goes back to the pool; run it on a held connection: \
    `let mut conn = db.acquire().await?;` or in a #[with_conn] function";

const POOLER_SESSION_ADVICE: &str = "it changes session state, and behind PgBouncer in transaction mode \
    (`pgbouncer_transaction_mode`) a session is shared: the state would stay on a server connection other \
    clients get next, and be missing from this connection's next transaction; inside a transaction use \
    `tx.set_local(…)` or `tx.advisory_xact_lock(…)`, which end with it";

const POOLER_PREPARE_ADVICE: &str = "behind PgBouncer in transaction mode (`pgbouncer_transaction_mode`) a \
    named prepared statement lives on one server connection, and the next statement may run on another; pass \
    the SQL text instead (it runs as an unnamed statement in one round trip)";

const TX_ONLY_ADVICE: &str = "it only works inside a transaction (LOCK TABLE fails outside one, SET LOCAL does \
    nothing, and FOR UPDATE row locks or xact advisory locks are released when the statement ends); open one: \
    `let mut tx = conn.begin().await?;` or use #[transactional], and run it on the `Tx`";

pub(crate) fn one_row(mut rows: Vec<Row>) -> Result<Row> {
    if rows.len() == 1 {
        rows.pop().ok_or(Error::RowCount { rows: 0 })
    } else {
        Err(Error::RowCount { rows: rows.len() })
    }
}

pub(crate) fn opt_row(mut rows: Vec<Row>) -> Result<Option<Row>> {
    match rows.len() {
        0 | 1 => Ok(rows.pop()),
        n => Err(Error::RowCount { rows: n }),
    }
}

/// Quotes an identifier for SQL: `"name"` with inner quotes doubled. A dotted name is
/// quoted part by part (`schema.table` → `"schema"."table"`); parts already in double
/// quotes are kept as they are.
pub(crate) fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    for (i, part) in split_dotted(name).into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if part.len() >= 2 && part.starts_with('"') && part.ends_with('"') {
            out.push_str(part);
        } else {
            out.push('"');
            out.push_str(&part.replace('"', "\"\""));
            out.push('"');
        }
    }
    out
}

fn split_dotted(name: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    for (i, c) in name.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            '.' if !in_quotes => {
                parts.push(&name[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&name[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::quote_ident;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("account"), "\"account\"");
        assert_eq!(quote_ident("app.account"), "\"app\".\"account\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_ident("\"My.Table\""), "\"My.Table\"");
        assert_eq!(quote_ident("s.\"T\""), "\"s\".\"T\"");
    }
}
