//! What a connection needs to know about its pool: the settings of one connection, and
//! the counters it bumps. Filled in by `config/` (the builder), read here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_postgres::NoTls;

use super::Conn;
use super::connector::Connector;
use super::writes::WriteLog;
use crate::error::Result;
use crate::status::{AtomicCounters, DiscardReason};
use crate::telemetry::Telemetry;

/// A hook run on every new connection before it is first handed out.
pub(crate) type AfterConnect =
    Arc<dyn for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<()>> + Send + Sync>;

/// A hook that decides whether a connection may be used (`before_acquire`) or kept
/// (`after_release`): `Ok(true)` yes, `Ok(false)` discard it.
pub(crate) type CheckHook =
    Arc<dyn for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<bool>> + Send + Sync>;

/// Where a connection's password (or token) comes from when it changes while the pool
/// runs (rotating credentials, cloud IAM tokens): asked for each new connection.
pub(crate) type PasswordProvider = Arc<
    dyn Fn() -> BoxFuture<
            'static,
            std::result::Result<String, Box<dyn std::error::Error + Send + Sync>>,
        > + Send
        + Sync,
>;

/// The settings of each connection of a pool.
pub(crate) struct ConnConfig {
    /// Where and how to connect (with `connect_timeout` and `application_name` applied).
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) connect_timeout: Duration,
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) connector: Connector,
    pub(crate) after_connect: Option<AfterConnect>,
    pub(crate) before_acquire: Option<CheckHook>,
    pub(crate) after_release: Option<CheckHook>,
    pub(crate) password_provider: Option<PasswordProvider>,
    pub(crate) statement_cache_capacity: usize,
    /// Statement spans carry the statement's text.
    pub(crate) trace_statement_text: bool,
    pub(crate) discard_prepared_on_return: bool,
    /// Statements run as unnamed, self-contained messages; session state is refused.
    pub(crate) pgbouncer_transaction_mode: bool,
    /// How long each step of cleaning or recovering a connection may take (derived from
    /// `statement_timeout`, at most 5 s).
    pub(crate) cleanup_timeout: Duration,
    /// A primary's with replicas: where its writes are recorded for read-your-writes.
    pub(crate) writes: Option<Arc<WriteLog>>,
    /// A replica's: a host that is not in recovery is passed over at connect, like
    /// libpq's `target_session_attrs=standby`.
    pub(crate) standby_only: bool,
}

impl ConnConfig {
    /// The same settings for connections to another server (a replica): `pg` in place of
    /// this one's, no write log.
    pub(crate) fn with_server(&self, pg: tokio_postgres::Config) -> ConnConfig {
        ConnConfig {
            pg,
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
            max_lifetime: self.max_lifetime,
            connector: self.connector.clone(),
            after_connect: self.after_connect.clone(),
            before_acquire: self.before_acquire.clone(),
            after_release: self.after_release.clone(),
            password_provider: self.password_provider.clone(),
            statement_cache_capacity: self.statement_cache_capacity,
            trace_statement_text: self.trace_statement_text,
            discard_prepared_on_return: self.discard_prepared_on_return,
            pgbouncer_transaction_mode: self.pgbouncer_transaction_mode,
            cleanup_timeout: self.cleanup_timeout,
            writes: None,
            standby_only: self.standby_only,
        }
    }
}

impl Default for ConnConfig {
    /// The builder's defaults.
    fn default() -> ConnConfig {
        ConnConfig {
            pg: tokio_postgres::Config::new(),
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Some(Duration::from_secs(60)),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            connector: Connector::new(NoTls),
            after_connect: None,
            before_acquire: None,
            after_release: None,
            password_provider: None,
            statement_cache_capacity: 256,
            trace_statement_text: false,
            discard_prepared_on_return: false,
            pgbouncer_transaction_mode: false,
            cleanup_timeout: Duration::from_secs(5),
            writes: None,
            standby_only: false,
        }
    }
}

impl std::fmt::Debug for ConnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnConfig")
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("statement_cache_capacity", &self.statement_cache_capacity)
            .field(
                "pgbouncer_transaction_mode",
                &self.pgbouncer_transaction_mode,
            )
            .finish_non_exhaustive()
    }
}

/// What all connections of a pool share: their settings and the pool's counters. Kept
/// apart from the engine's state so that connections (which live inside that state) do
/// not keep the pool itself alive.
pub(crate) struct Ctx {
    pub(crate) config: ConnConfig,
    pub(crate) counters: AtomicCounters,
    /// The pool's metrics (nothing without the `metrics` feature).
    pub(crate) telemetry: Telemetry,
    next_conn_id: AtomicU64,
}

impl Ctx {
    pub(crate) fn new(config: ConnConfig, telemetry: Telemetry) -> Ctx {
        Ctx {
            config,
            counters: AtomicCounters::default(),
            telemetry,
            next_conn_id: AtomicU64::new(1),
        }
    }

    /// A connection is closed instead of reused, for `reason`: counted.
    pub(crate) fn discard(&self, reason: DiscardReason) {
        self.counters.discard(reason);
        self.telemetry.discarded(reason);
    }

    /// The identity the next connection will get.
    pub(crate) fn peek_conn_id(&self) -> u64 {
        self.next_conn_id.load(Ordering::Relaxed)
    }

    /// A new connection's identity.
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}
