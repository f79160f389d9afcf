//! The configuration layer: [`Builder`] and its options, each kept once with its
//! default, and their validation (`validate.rs`).
//!
//! It owns the pool's own settings ([`PoolConfig`], read by the engine) and fills in the
//! settings of each connection ([`ConnConfig`], owned by the connection layer, with the
//! TLS connector and the `after_connect` hook). It may not touch a running pool: the
//! methods that build one (`build`, `connect`) are written with `Pool`, in `api/`.

mod lane;
mod replicas;
mod ssl;
mod validate;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_postgres::Socket;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use crate::conn::{Conn, ConnConfig, Connector};
use crate::error::Result;
pub(crate) use lane::LanePlan;
pub use replicas::ReplicaFallback;
pub(crate) use replicas::{ReplicaOptions, ReplicaPlan};
pub use ssl::SslMode;
use ssl::{SslOptions, TlsChoice, take_ssl_options};

/// What to do when a task that already holds a connection asks the same pool for another.
///
/// Holding one connection while waiting for a second is how pools deadlock: with
/// `max_size` tasks each holding one, nobody's second checkout can ever be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NestedCheckout {
    /// Refuse at once with [`Error::NestedCheckout`](crate::Error::NestedCheckout) naming both call sites (default).
    #[default]
    Error,
    /// Log a warning with both call sites and hand the connection out anyway.
    Warn,
    /// Do not check. Holders are still recorded for diagnostics.
    Allow,
}

/// Where a pool gets its connection settings: a URL or key-value string, or a
/// `tokio_postgres::Config`.
///
/// A string may carry the libpq TLS options the driver does not read (`sslmode=verify-ca`,
/// `sslmode=verify-full`, `sslrootcert=…`): the pool takes them out and honours them
/// (see [`SslMode`]).
pub struct ConfigSource {
    pg: std::result::Result<tokio_postgres::Config, String>,
    ssl: SslOptions,
}

impl From<&str> for ConfigSource {
    fn from(s: &str) -> Self {
        match take_ssl_options(s) {
            Ok((rest, ssl)) => ConfigSource {
                pg: tokio_postgres::Config::from_str(&rest).map_err(|e| e.to_string()),
                ssl,
            },
            Err(e) => ConfigSource {
                pg: Err(e),
                ssl: SslOptions::default(),
            },
        }
    }
}
impl From<String> for ConfigSource {
    fn from(s: String) -> Self {
        ConfigSource::from(s.as_str())
    }
}
impl From<&String> for ConfigSource {
    fn from(s: &String) -> Self {
        ConfigSource::from(s.as_str())
    }
}
impl From<tokio_postgres::Config> for ConfigSource {
    fn from(c: tokio_postgres::Config) -> Self {
        ConfigSource {
            pg: Ok(c),
            ssl: SslOptions::default(),
        }
    }
}
impl From<&tokio_postgres::Config> for ConfigSource {
    fn from(c: &tokio_postgres::Config) -> Self {
        ConfigSource::from(c.clone())
    }
}

/// The validated settings of the pool itself (the connections' own are in
/// [`ConnConfig`]).
#[derive(Debug, Clone)]
pub(crate) struct PoolConfig {
    pub(crate) max_size: usize,
    pub(crate) min_idle: usize,
    pub(crate) acquire_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) validate_after_idle: Option<Duration>,
    pub(crate) leak_threshold: Option<Duration>,
    pub(crate) max_waiting: Option<usize>,
    pub(crate) nested_checkout: NestedCheckout,
    pub(crate) close_timeout: Duration,
    /// Holder records (checkout site, task, time) and the nested-checkout check.
    pub(crate) bookkeeping: bool,
    /// The pool's name in metrics (`None`: `host:port`).
    pub(crate) name: Option<String>,
}

impl Default for PoolConfig {
    /// The builder's defaults.
    fn default() -> PoolConfig {
        PoolConfig {
            max_size: 10,
            min_idle: 0,
            acquire_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            validate_after_idle: Some(Duration::from_secs(1)),
            leak_threshold: None,
            max_waiting: None,
            nested_checkout: NestedCheckout::Error,
            close_timeout: Duration::from_secs(10),
            bookkeeping: true,
            name: None,
        }
    }
}

/// Configures and builds a [`Pool`](crate::Pool). Start with [`Pool::builder`](crate::Pool::builder).
///
/// | option | default | meaning |
/// |---|---|---|
/// | [`max_size`](Self::max_size) | 10 | connections open at most, in use or idle |
/// | [`min_idle`](Self::min_idle) | 0 | idle connections kept open in the background |
/// | [`acquire_timeout`](Self::acquire_timeout) | 30 s | longest wait for a connection |
/// | [`connect_timeout`](Self::connect_timeout) | 10 s | longest connection handshake (TCP, TLS, startup, auth) |
/// | [`statement_timeout`](Self::statement_timeout) | 60 s | longest statement; cancelled on the server when exceeded |
/// | [`max_lifetime`](Self::max_lifetime) | 30 min (−0…12.5 % jitter) | connections are replaced after this |
/// | [`idle_timeout`](Self::idle_timeout) | 10 min | idle connections above `min_idle` are closed after this |
/// | [`validate_after_idle`](Self::validate_after_idle) | 1 s | connections idle longer are pinged before hand-out |
/// | [`leak_threshold`](Self::leak_threshold) | off | warn once about a connection held longer |
/// | [`max_waiting`](Self::max_waiting) | unbounded | waiters beyond this fail at once |
/// | [`nested_checkout`](Self::nested_checkout) | `Error` | a second checkout by the same task |
/// | [`application_name`](Self::application_name) | `pool-core` | shown in `pg_stat_activity` (if the URL sets none) |
/// | [`before_acquire`](Self::before_acquire), [`after_release`](Self::after_release) | none | hooks that may refuse a connection before hand-out or after return |
/// | [`password_provider`](Self::password_provider) | none (the URL's) | asked for each new connection's password or token |
/// | [`statement_cache_capacity`](Self::statement_cache_capacity) | 256 | prepared statements kept per connection (least recently used evicted) |
/// | [`discard_prepared_on_return`](Self::discard_prepared_on_return) | false | drop the statement cache on every return |
/// | [`pgbouncer_transaction_mode`](Self::pgbouncer_transaction_mode) | false | statement handling that works through a transaction-mode pooler |
/// | [`close_timeout`](Self::close_timeout) | 10 s | how long `close()` waits for connections in use |
/// | [`shared_lane`](Self::shared_lane) | on | `Db` one-shots pipelined on shared connections, no checkout each |
/// | [`shared_connections`](Self::shared_connections), [`shared_in_flight`](Self::shared_in_flight) | `max_size`, 128 | how many connections the lane may share, statements in flight on each |
/// | [`replica`](Self::replica) | none | a streaming replica for the read side (`pool.read_db()`); once per replica |
/// | [`max_replica_lag`](Self::max_replica_lag) | no bound | a replica further behind serves no reads |
/// | [`replica_fallback`](Self::replica_fallback) | `Primary` | reads when no replica can serve them |
/// | [`replica_sample_interval`](Self::replica_sample_interval) | 200 ms | how often WAL positions are sampled |
#[must_use = "a builder does nothing until build() or connect()"]
pub struct Builder {
    source: ConfigSource,
    application_name: Option<String>,
    /// TLS options set on the builder, over the URL's.
    ssl: SslOptions,
    tls: TlsChoice,
    /// The pool's own settings, each kept once: the builder's methods set them, `build`
    /// validates them.
    pool: PoolConfig,
    /// The settings of each connection.
    conn: ConnConfig,
    /// The read side: replicas and how to route to them.
    replicas: ReplicaOptions,
    /// The shared lane for one-shot statements.
    lane: lane::LaneOptions,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("pool", &self.pool)
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl Builder {
    pub(crate) fn new(source: ConfigSource) -> Builder {
        Builder {
            source,
            application_name: None,
            ssl: SslOptions::default(),
            tls: TlsChoice::None,
            pool: PoolConfig::default(),
            conn: ConnConfig::default(),
            replicas: ReplicaOptions::default(),
            lane: lane::LaneOptions::default(),
        }
    }

    /// The most connections the pool opens, in use and idle together. Never exceeded,
    /// not even briefly while connections are being replaced.
    pub fn max_size(mut self, n: usize) -> Self {
        self.pool.max_size = n;
        self
    }

    /// The pool's name, the `db.client.connection.pool.name` of its metrics (feature
    /// `metrics`); unique within the application. Default: the server's `host:port`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.pool.name = Some(name.into());
        self
    }

    /// Idle connections kept open by the background task, so bursts find them ready:
    /// opened as the pool is built (inside a runtime; else at the first acquire) and
    /// refilled in the background, also after an outage, with no request needed.
    pub fn min_idle(mut self, n: usize) -> Self {
        self.pool.min_idle = n;
        self
    }

    /// How long an acquire waits for a connection before failing with a timeout that
    /// lists who holds the connections.
    pub fn acquire_timeout(mut self, d: Duration) -> Self {
        self.pool.acquire_timeout = d;
        self
    }

    /// The deadline for opening one connection: TCP connect, TLS, startup and
    /// authentication together.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.conn.connect_timeout = d;
        self
    }

    /// The deadline for every statement. A statement that runs longer fails with a
    /// timeout and is cancelled on the server. `None` disables it — then a stuck query
    /// holds its connection forever, the failure this default exists to prevent.
    pub fn statement_timeout(mut self, d: impl Into<Option<Duration>>) -> Self {
        self.conn.statement_timeout = d.into();
        self
    }

    /// Connections older than this (less a random 0–12.5 %, so they do not all expire
    /// together) are closed when returned or found idle. `None`: keep forever.
    pub fn max_lifetime(mut self, d: impl Into<Option<Duration>>) -> Self {
        self.conn.max_lifetime = d.into();
        self
    }

    /// Idle connections above `min_idle` are closed after this long. `None`: never.
    pub fn idle_timeout(mut self, d: impl Into<Option<Duration>>) -> Self {
        self.pool.idle_timeout = d.into();
        self
    }

    /// A connection idle longer than this is pinged before it is handed out; a dead one
    /// is discarded and the next is tried. `Some(Duration::ZERO)` pings every time;
    /// `None` never pings (closed connections are still never handed out).
    pub fn validate_after_idle(mut self, d: impl Into<Option<Duration>>) -> Self {
        self.pool.validate_after_idle = d.into();
        self
    }

    /// Warn (once per checkout, with the checkout site and task) about a connection held
    /// longer than this. `None`: off.
    pub fn leak_threshold(mut self, d: impl Into<Option<Duration>>) -> Self {
        self.pool.leak_threshold = d.into();
        self
    }

    /// At most this many tasks wait for a connection; more fail at once with
    /// [`Error::TooManyWaiters`](crate::Error::TooManyWaiters). `None`: unbounded.
    pub fn max_waiting(mut self, n: impl Into<Option<usize>>) -> Self {
        self.pool.max_waiting = n.into();
        self
    }

    /// What a second checkout by a task that already holds a connection does.
    pub fn nested_checkout(mut self, policy: NestedCheckout) -> Self {
        self.pool.nested_checkout = policy;
        self
    }

    /// The `application_name` the server shows for these connections, unless the URL
    /// or config already sets one.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// Use a TLS connector of your own (for example `postgres-native-tls`) instead of
    /// `NoTls`; it is also used for cancel requests. It decides what to verify: with it,
    /// `sslmode=verify-ca` and `verify-full` mean `require`. For rustls configured from the
    /// URL, use `rustls()` (feature `rustls`).
    pub fn tls<T>(mut self, tls: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        self.conn.connector = Connector::new(tls);
        self.tls = TlsChoice::Custom;
        self
    }

    /// Run this on every new connection before its first use, for example to set a
    /// `search_path`. Session settings made here are the connection's baseline: when a
    /// borrower's own `SET` is reset on return, the hook runs again to restore them.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), pool_core::Error> {
    /// let pool = pool_core::Pool::builder("postgres://postgres@127.0.0.1/app")
    ///     .after_connect(|conn| Box::pin(async move { conn.set("search_path", "app, public").await }))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn after_connect<F>(mut self, hook: F) -> Self
    where
        F: for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<()>> + Send + Sync + 'static,
    {
        self.conn.after_connect = Some(Arc::new(hook));
        self
    }

    /// Run this before each connection is handed out: `Ok(true)` hands it out,
    /// `Ok(false)` discards it (counted as `discarded_rejected`) and another is tried,
    /// all within the same `acquire_timeout`. A hook that errors, panics, or leaves the
    /// connection in a transaction is reported (a warning naming it), its connection
    /// discarded and counted as `discarded_hook`. With the hook set, every checkout takes
    /// the slow path.
    ///
    /// ```no_run
    /// # fn f() -> Result<(), pool_core::Error> {
    /// let pool = pool_core::Pool::builder("postgres://postgres@127.0.0.1/app")
    ///     .before_acquire(|conn| Box::pin(async move {
    ///         // e.g. refuse connections to a standby after a failover
    ///         let row = conn.query_one("SELECT pg_is_in_recovery()", &[]).await?;
    ///         Ok(!row.get::<_, bool>(0))
    ///     }))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn before_acquire<F>(mut self, hook: F) -> Self
    where
        F: for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<bool>> + Send + Sync + 'static,
    {
        self.conn.before_acquire = Some(Arc::new(hook));
        self
    }

    /// Run this on each connection given back, after the pool has cleaned it:
    /// `Ok(true)` keeps it, `Ok(false)` closes it (counted as `discarded_rejected`).
    /// Errors and panics are reported and the connection discarded, as for
    /// [`before_acquire`](Self::before_acquire). With the hook set, every return goes
    /// through a background task.
    pub fn after_release<F>(mut self, hook: F) -> Self
    where
        F: for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<bool>> + Send + Sync + 'static,
    {
        self.conn.after_release = Some(Arc::new(hook));
        self
    }

    /// Asks `provider` for the password (or token) of each new connection, instead of
    /// the one in the URL: for rotating credentials (Vault leases, RDS IAM tokens).
    /// Connections already open keep working; [`Pool::drain`](crate::Pool::drain)
    /// replaces them when the old credential is about to be revoked. The provider gets
    /// half of `connect_timeout`; failing or hanging, it is reported as
    /// [`Error::Credentials`](crate::Error::Credentials), never as a bare timeout.
    ///
    /// ```no_run
    /// # async fn fetch_token() -> Result<String, Box<dyn std::error::Error + Send + Sync>> { Ok(String::new()) }
    /// # fn f() -> Result<(), pool_core::Error> {
    /// let pool = pool_core::Pool::builder("postgres://app@db.internal/app")
    ///     .password_provider(|| async { fetch_token().await })
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn password_provider<F, Fut>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<
                Output = std::result::Result<String, Box<dyn std::error::Error + Send + Sync>>,
            > + Send
            + 'static,
    {
        self.conn.password_provider = Some(Arc::new(move || Box::pin(provider())));
        self
    }

    /// Put each statement's text in its tracing span (`db.query.text`). Off by default:
    /// statement texts can hold data, and spans often leave the process.
    pub fn trace_statement_text(mut self, on: bool) -> Self {
        self.conn.trace_statement_text = on;
        self
    }

    /// How many prepared statements each connection caches (0 disables the cache; every
    /// statement is then prepared on each use).
    pub fn statement_cache_capacity(mut self, n: usize) -> Self {
        self.conn.statement_cache_capacity = n;
        self
    }

    /// Drop each connection's prepared statements when it is returned, so no borrower
    /// sees another's. Off by default: the cache is what makes repeated statements fast.
    pub fn discard_prepared_on_return(mut self, yes: bool) -> Self {
        self.conn.discard_prepared_on_return = yes;
        self
    }

    /// Connect through PgBouncer in `pool_mode = transaction` (or another
    /// transaction-level pooler): each transaction, and each statement outside one, may
    /// run on a different server connection. Off by default.
    ///
    /// The pool's statement handling then works through it:
    ///
    /// * Statements given as text (and `sql!`) run as *unnamed* statements, parsed,
    ///   bound and executed in one round trip that PgBouncer keeps on one server
    ///   connection. The statement cache is off (`statement_cache_capacity` is ignored):
    ///   a named prepared statement lives on one server connection, and the next
    ///   statement may run on another ("prepared statement "s1" does not exist").
    /// * Parameter types are asked from the server the first time a connection runs a
    ///   statement text, and remembered by that connection. Outside a transaction that
    ///   question runs in its own `BEGIN … COMMIT`, so it cannot leave a statement
    ///   behind on a server connection that other clients use.
    /// * [`Conn::prepare`] and [`Tx::prepare`](crate::Tx::prepare) are refused: a named
    ///   statement would not outlive the transaction.
    /// * Session-state statements (`SET`, `LISTEN`, session advisory locks, temporary
    ///   tables, `PREPARE`…) are refused, in and out of transactions: they would stick to
    ///   a server connection shared with other clients, and be missing from this one's
    ///   next transaction. Use [`Tx::set_local`](crate::Tx::set_local) and
    ///   [`Tx::advisory_xact_lock`](crate::Tx::advisory_xact_lock) inside a transaction.
    ///
    /// Parameters and results must use built-in types: the driver looks up other types
    /// (enums, domains, composites) with a cached named statement. `backend_pid()` and
    /// the holders' backend pids name whichever server connection answered first.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), pool_core::Error> {
    /// let pool = pool_core::Pool::builder("postgres://app@127.0.0.1:6432/app")
    ///     .pgbouncer_transaction_mode(true)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn pgbouncer_transaction_mode(mut self, yes: bool) -> Self {
        self.conn.pgbouncer_transaction_mode = yes;
        self
    }

    /// How long [`Pool::close`](crate::Pool::close) waits for connections in use to come back.
    pub fn close_timeout(mut self, d: Duration) -> Self {
        self.pool.close_timeout = d;
        self
    }

    /// Benchmarks only (through `__private::bookkeeping`): `false` turns off the holder
    /// records (checkout site, task, time) and with them the nested-checkout check, leak
    /// warnings and the holders listed by `holders()` and timeout errors, to measure what
    /// that bookkeeping costs.
    pub(crate) fn bookkeeping(mut self, on: bool) -> Self {
        self.pool.bookkeeping = on;
        self
    }
}

/// A pool's default name: its first `host:port`.
pub(crate) fn default_name(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}
