//! The connection layer: one PostgreSQL connection, everything that runs on it, and
//! everything it must know to go back to the pool clean.
//!
//! It owns [`Conn`] and its bookkeeping: statement execution and the run-time
//! placement rules (`exec.rs`), the operation guard and the recovery of interrupted
//! operations (`guard.rs`), transaction depth and aborted state with the control steps
//! (`txn.rs`), the statement cache (`cache.rs`), cleaning for reuse (`clean.rs`,
//! `reset.rs`), opening a connection (`open.rs`) through the type-erased TLS connector
//! (`connector.rs`), the settings connections share (`settings.rs`), and who last
//! wrote through a primary, for read-your-writes (`writes.rs`). It knows
//! nothing of the pool that lends it: it may not use the engine, the builder or the
//! user-facing handles (`Tx`, `PooledConn`), which are built on top of it.

mod cache;
mod clean;
mod connector;
mod copy;
mod exec;
mod guard;
mod hosts;
mod ident;
mod open;
mod outcome;
mod pipeline;
mod reset;
mod settings;
mod ssl_mode;
#[cfg(feature = "rustls")]
mod tls;
mod txn;
mod writes;

use std::sync::Arc;

use pool_sql::{Kind, Touches};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Notification, Row};

use crate::error::{Error, Result};
use crate::stmt::{ConnSql, Prepared, SqlParts, StatementFuture};
use cache::StatementCache;
pub(crate) use cache::TextMap;
pub(crate) use connector::Connector;
#[cfg(feature = "spans")]
pub(crate) use exec::statement_span;
pub(crate) use exec::{Place, one_row, opt_row, paired, placement, placement_copy};
pub(crate) use guard::cancel_and_drain;
pub(crate) use ident::table_name;
pub(crate) use open::{ConnectFailure, open};
pub use pipeline::Pipelined;
pub(crate) use pipeline::{Item, Step, not_empty, send, send_typed};
pub(crate) use settings::{ConnConfig, Ctx};
pub use ssl_mode::SslMode;
#[cfg(feature = "rustls")]
pub(crate) use tls::rustls_connector;
pub(crate) use txn::Control;
use txn::TxState;
pub(crate) use writes::WriteLog;

/// A database connection, lent by the pool.
///
/// You get one as `&mut Conn` — from a [`PooledConn`](crate::PooledConn) (which derefs
/// to it), inside a `#[with_conn]` function, or from a transaction via a connection
/// source. It runs plain and session-state statements; transaction-only statements need a
/// [`Tx`](crate::Tx) from [`Conn::begin`].
///
/// Statements given as `&str` are prepared once per connection and cached.
pub struct Conn {
    client: Arc<Client>,
    ctx: Arc<Ctx>,
    state: ConnState,
    meta: ConnMeta,
    cache: StatementCache,
    notifications: mpsc::UnboundedReceiver<Notification>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.meta.id)
            .field("backend_pid", &self.meta.backend_pid)
            .field("tx_depth", &self.state.tx.depth())
            .field("touches", &self.state.touches)
            .finish_non_exhaustive()
    }
}

/// Facts about a connection that do not change while it lives.
#[derive(Debug, Clone)]
struct ConnMeta {
    id: u64,
    backend_pid: i32,
    expires: Option<Instant>,
}

/// What the pool must know to hand the connection to the next borrower clean.
#[derive(Debug, Default)]
struct ConnState {
    /// Where the connection stands in a transaction (`txn.rs` owns the rules).
    tx: TxState,
    /// Session state the borrower left behind.
    touches: Touches,
    /// A recovery task in flight; it returns whether the connection is clean.
    pending: Option<JoinHandle<bool>>,
    /// Unusable: discard on return.
    broken: bool,
    /// A statement was refused with SQLSTATE 25006 (`read_only_sql_transaction`), what a
    /// demoted primary or a standby answers a write — or a read-only transaction of the
    /// borrower's own. On return the server is asked which (`clean`); a read-only server's
    /// connection is discarded, so the pool does not keep sending writes to it.
    read_only_refused: bool,
    /// Why the connection closed, when the server or the network closed it while no
    /// statement was waiting (a FATAL sent to an idle session, a reset): set by the task
    /// that reads the connection's messages, taken by the first error that reports the
    /// connection lost, so that error names the real cause.
    closed_by: Arc<std::sync::Mutex<Option<tokio_postgres::Error>>>,
    /// When the task reading the connection's messages saw it end (set once, however it
    /// ended). Read by `is_broken`, so the pool knows as soon as that task does.
    closed_at: Arc<std::sync::OnceLock<Instant>>,
}

impl ConnState {
    /// The error that closed the connection, if one was recorded and not yet reported.
    fn take_closed_by(&self) -> Option<tokio_postgres::Error> {
        self.closed_by
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

impl Conn {
    fn new(
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

    /// What this connection shares with its pool (settings, counters, metrics).
    #[cfg(feature = "metrics")]
    pub(crate) fn ctx(&self) -> Arc<Ctx> {
        Arc::clone(&self.ctx)
    }

    /// The server process serving this connection (`pg_backend_pid()`), as seen in
    /// `pg_stat_activity.pid`.
    #[inline]
    pub fn backend_pid(&self) -> i32 {
        self.meta.backend_pid
    }

    /// A statement on this connection was refused with 25006 outside the connection's
    /// own methods (by the shared lane): ask the server on return whether it is read-only.
    pub(crate) fn note_read_only_refusal(&mut self) {
        self.state.read_only_refused = true;
    }

    /// Where the task reading the connection's messages records why it closed (for the
    /// shared lane, whose statements in flight all report that cause).
    pub(crate) fn closed_by_slot(&self) -> Arc<std::sync::Mutex<Option<tokio_postgres::Error>>> {
        Arc::clone(&self.state.closed_by)
    }

    /// The connection is to be discarded on return (the shared lane could not get it
    /// quiet).
    pub(crate) fn give_up(&mut self) {
        self.state.broken = true;
    }

    /// The driver's client, for the shared lane, which pipelines statements from many
    /// tasks on it while this `Conn` is held by the lane.
    pub(crate) fn shared_client(&self) -> Arc<Client> {
        Arc::clone(&self.client)
    }

    /// Whether the connection is inside a transaction (only possible when it was reached
    /// through a [`Tx`](crate::Tx)).
    pub fn in_transaction(&self) -> bool {
        self.state.tx.depth() > 0
    }

    /// Whether the connection is known to be unusable; the pool will discard it.
    #[inline]
    pub fn is_broken(&self) -> bool {
        self.state.broken || self.closed()
    }

    /// When the connection was seen closed by the task reading its messages (see
    /// `__private::closed_at`).
    pub(crate) fn closed_at(&self) -> Option<Instant> {
        self.state.closed_at.get().copied()
    }

    /// The connection's identity within its pool: later connections have larger ids.
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.meta.id
    }

    /// When the connection reaches `max_lifetime`, if it has one.
    #[inline]
    pub(crate) fn expires(&self) -> Option<Instant> {
        self.meta.expires
    }

    /// The server or the network closed the connection.
    #[inline]
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
        StatementFuture::new(
            async move { self.rows(statement.__parts(), params, Place::Conn).await },
        )
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
        StatementFuture::new(async move {
            one_row(self.rows(statement.__parts(), params, Place::Conn).await?)
        })
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
        StatementFuture::new(async move {
            opt_row(self.rows(statement.__parts(), params, Place::Conn).await?)
        })
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
        StatementFuture::new(
            async move { self.count(statement.__parts(), params, Place::Conn).await },
        )
    }

    /// Runs one or more statements separated by `;`, without parameters, using the simple
    /// query protocol. All of them are classified; transaction control is refused.
    ///
    /// Cancellation: as [`Conn::query`].
    pub fn batch_execute<'a, S>(&'a mut self, statements: S) -> StatementFuture<'a, ()>
    where
        S: ConnSql + 'a,
    {
        StatementFuture::new(async move { self.batch(statements.__parts(), Place::Conn).await })
    }

    /// Prepares a statement on this connection (or takes it from the connection's cache).
    /// The result runs only on this connection.
    ///
    /// Cancellation: as [`Conn::query`].
    pub fn prepare<'a, S>(&'a mut self, statement: S) -> StatementFuture<'a, Prepared>
    where
        S: ConnSql + 'a,
    {
        StatementFuture::new(async move { self.prepare_at(statement.__parts(), Place::Conn).await })
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

    /// Starts listening on a notification channel (`LISTEN`). The channel is named
    /// exactly as `pg_notify` names it: the whole text, case and every character kept
    /// (it is quoted for the statement, which runs alone). A name PostgreSQL cannot take
    /// (empty, a NUL, over 63 bytes) is refused before anything is sent. The pool runs
    /// `UNLISTEN *` before the connection is reused. Receive with [`Conn::notification`].
    ///
    /// Cancellation: as [`Conn::query`].
    pub async fn listen(&mut self, channel: &str) -> Result<()> {
        let name = ident::channel_name(channel).map_err(|why| Error::refused("LISTEN", why))?;
        let sql = format!("LISTEN {name}");
        let parts = SqlParts::known(&sql, Kind::Session, Touches::LISTEN);
        self.count(parts, &[], Place::Conn).await.map(drop)
    }

    /// Stops listening on a channel (`UNLISTEN`), named as for [`Conn::listen`].
    ///
    /// Cancellation: as [`Conn::query`].
    pub async fn unlisten(&mut self, channel: &str) -> Result<()> {
        let name = ident::channel_name(channel).map_err(|why| Error::refused("UNLISTEN", why))?;
        let sql = format!("UNLISTEN {name}");
        let parts = SqlParts::known(&sql, Kind::Session, Touches::LISTEN);
        self.count(parts, &[], Place::Conn).await.map(drop)
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
}
