//! Building a pool: options, defaults, validation.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, CancelToken, Client, NoTls, Socket};

use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::pool::Pool;

/// What to do when a task that already holds a connection asks the same pool for another.
///
/// Holding one connection while waiting for a second is how pools deadlock: with
/// `max_size` tasks each holding one, nobody's second checkout can ever be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NestedCheckout {
    /// Refuse at once with [`Error::NestedCheckout`] naming both call sites (default).
    #[default]
    Error,
    /// Log a warning with both call sites and hand the connection out anyway.
    Warn,
    /// Do not check. Holders are still recorded for diagnostics.
    Allow,
}

/// Where a pool gets its connection settings: a URL or key-value string, or a
/// `tokio_postgres::Config`.
pub struct ConfigSource(std::result::Result<tokio_postgres::Config, String>);

impl From<&str> for ConfigSource {
    fn from(s: &str) -> Self {
        ConfigSource(tokio_postgres::Config::from_str(s).map_err(|e| e.to_string()))
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
        ConfigSource(Ok(c))
    }
}
impl From<&tokio_postgres::Config> for ConfigSource {
    fn from(c: &tokio_postgres::Config) -> Self {
        ConfigSource(Ok(c.clone()))
    }
}

type ConnectFuture = BoxFuture<
    'static,
    std::result::Result<
        (
            Client,
            BoxStream<'static, std::result::Result<AsyncMessage, tokio_postgres::Error>>,
        ),
        tokio_postgres::Error,
    >,
>;

/// Opens connections and sends cancel requests, with the TLS connector type erased so
/// that `Pool` needs no type parameter.
pub(crate) struct Connector {
    connect: Box<dyn Fn(tokio_postgres::Config) -> ConnectFuture + Send + Sync>,
    cancel: Box<
        dyn Fn(CancelToken) -> BoxFuture<'static, std::result::Result<(), tokio_postgres::Error>>
            + Send
            + Sync,
    >,
}

impl Connector {
    fn new<T>(tls: T) -> Connector
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let for_cancel = tls.clone();
        Connector {
            connect: Box::new(move |config: tokio_postgres::Config| {
                let tls = tls.clone();
                Box::pin(async move {
                    let (client, mut connection) = config.connect(tls).await?;
                    let messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    Ok((client, Box::pin(messages) as BoxStream<'static, _>))
                })
            }),
            cancel: Box::new(move |token: CancelToken| {
                let tls = for_cancel.clone();
                Box::pin(async move { token.cancel_query(tls).await })
            }),
        }
    }

    pub(crate) fn connect(&self, config: tokio_postgres::Config) -> ConnectFuture {
        (self.connect)(config)
    }

    pub(crate) fn cancel(
        &self,
        token: CancelToken,
    ) -> impl Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send + 'static {
        (self.cancel)(token)
    }
}

/// A hook run on every new connection before it is first handed out.
pub(crate) type AfterConnect =
    Arc<dyn for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<()>> + Send + Sync>;

/// The validated settings of a pool.
pub(crate) struct PoolConfig {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) max_size: usize,
    pub(crate) min_idle: usize,
    pub(crate) acquire_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) validate_after_idle: Option<Duration>,
    pub(crate) leak_threshold: Option<Duration>,
    pub(crate) max_waiting: Option<usize>,
    pub(crate) nested_checkout: NestedCheckout,
    pub(crate) connector: Connector,
    pub(crate) after_connect: Option<AfterConnect>,
    pub(crate) statement_cache_capacity: usize,
    pub(crate) discard_prepared_on_return: bool,
    /// Statements run as unnamed, self-contained messages; session state is refused.
    pub(crate) pgbouncer_transaction_mode: bool,
    pub(crate) close_timeout: Duration,
    pub(crate) cleanup_timeout: Duration,
    /// Holder records (checkout site, task, time) and the nested-checkout check.
    pub(crate) bookkeeping: bool,
}

impl fmt::Debug for PoolConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolConfig")
            .field("max_size", &self.max_size)
            .field("min_idle", &self.min_idle)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("idle_timeout", &self.idle_timeout)
            .field("validate_after_idle", &self.validate_after_idle)
            .field("leak_threshold", &self.leak_threshold)
            .field("max_waiting", &self.max_waiting)
            .field("nested_checkout", &self.nested_checkout)
            .finish_non_exhaustive()
    }
}

/// Configures and builds a [`Pool`]. Start with [`Pool::builder`].
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
/// | [`statement_cache_capacity`](Self::statement_cache_capacity) | 256 | prepared statements kept per connection |
/// | [`discard_prepared_on_return`](Self::discard_prepared_on_return) | false | drop the statement cache on every return |
/// | [`pgbouncer_transaction_mode`](Self::pgbouncer_transaction_mode) | false | statement handling that works through a transaction-mode pooler |
/// | [`close_timeout`](Self::close_timeout) | 10 s | how long `close()` waits for connections in use |
#[must_use = "a builder does nothing until build() or connect()"]
pub struct Builder {
    source: ConfigSource,
    max_size: usize,
    min_idle: usize,
    acquire_timeout: Duration,
    connect_timeout: Duration,
    statement_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    idle_timeout: Option<Duration>,
    validate_after_idle: Option<Duration>,
    leak_threshold: Option<Duration>,
    max_waiting: Option<usize>,
    nested_checkout: NestedCheckout,
    application_name: Option<String>,
    connector: Option<Connector>,
    after_connect: Option<AfterConnect>,
    statement_cache_capacity: usize,
    discard_prepared_on_return: bool,
    pgbouncer_transaction_mode: bool,
    close_timeout: Duration,
    bookkeeping: bool,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

impl Builder {
    pub(crate) fn new(source: ConfigSource) -> Builder {
        Builder {
            source,
            max_size: 10,
            min_idle: 0,
            acquire_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Some(Duration::from_secs(60)),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            validate_after_idle: Some(Duration::from_secs(1)),
            leak_threshold: None,
            max_waiting: None,
            nested_checkout: NestedCheckout::Error,
            application_name: None,
            connector: None,
            after_connect: None,
            statement_cache_capacity: 256,
            discard_prepared_on_return: false,
            pgbouncer_transaction_mode: false,
            close_timeout: Duration::from_secs(10),
            bookkeeping: true,
        }
    }

    /// The most connections the pool opens, in use and idle together. Never exceeded,
    /// not even briefly while connections are being replaced.
    pub fn max_size(mut self, n: usize) -> Self {
        self.max_size = n;
        self
    }

    /// Idle connections kept open by the background task, so bursts find them ready.
    pub fn min_idle(mut self, n: usize) -> Self {
        self.min_idle = n;
        self
    }

    /// How long an acquire waits for a connection before failing with a timeout that
    /// lists who holds the connections.
    pub fn acquire_timeout(mut self, d: Duration) -> Self {
        self.acquire_timeout = d;
        self
    }

    /// The deadline for opening one connection: TCP connect, TLS, startup and
    /// authentication together.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The deadline for every statement. A statement that runs longer fails with a
    /// timeout and is cancelled on the server. `None` disables it — then a stuck query
    /// holds its connection forever, the failure this default exists to prevent.
    pub fn statement_timeout(mut self, d: impl Into<Option<Duration>>) -> Self {
        self.statement_timeout = d.into();
        self
    }

    /// Connections older than this (less a random 0–12.5 %, so they do not all expire
    /// together) are closed when returned or found idle. `None`: keep forever.
    pub fn max_lifetime(mut self, d: impl Into<Option<Duration>>) -> Self {
        self.max_lifetime = d.into();
        self
    }

    /// Idle connections above `min_idle` are closed after this long. `None`: never.
    pub fn idle_timeout(mut self, d: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = d.into();
        self
    }

    /// A connection idle longer than this is pinged before it is handed out; a dead one
    /// is discarded and the next is tried. `Some(Duration::ZERO)` pings every time;
    /// `None` never pings (closed connections are still never handed out).
    pub fn validate_after_idle(mut self, d: impl Into<Option<Duration>>) -> Self {
        self.validate_after_idle = d.into();
        self
    }

    /// Warn (once per checkout, with the checkout site and task) about a connection held
    /// longer than this. `None`: off.
    pub fn leak_threshold(mut self, d: impl Into<Option<Duration>>) -> Self {
        self.leak_threshold = d.into();
        self
    }

    /// At most this many tasks wait for a connection; more fail at once with
    /// [`Error::TooManyWaiters`]. `None`: unbounded.
    pub fn max_waiting(mut self, n: impl Into<Option<usize>>) -> Self {
        self.max_waiting = n.into();
        self
    }

    /// What a second checkout by a task that already holds a connection does.
    pub fn nested_checkout(mut self, policy: NestedCheckout) -> Self {
        self.nested_checkout = policy;
        self
    }

    /// The `application_name` the server shows for these connections, unless the URL
    /// or config already sets one.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// Use a TLS connector (for example `postgres-native-tls` or `tokio-postgres-rustls`)
    /// instead of `NoTls`. It is also used for cancel requests.
    pub fn tls<T>(mut self, tls: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        self.connector = Some(Connector::new(tls));
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
        self.after_connect = Some(Arc::new(hook));
        self
    }

    /// How many prepared statements each connection caches (0 disables the cache; every
    /// statement is then prepared on each use).
    pub fn statement_cache_capacity(mut self, n: usize) -> Self {
        self.statement_cache_capacity = n;
        self
    }

    /// Drop each connection's prepared statements when it is returned, so no borrower
    /// sees another's. Off by default: the cache is what makes repeated statements fast.
    pub fn discard_prepared_on_return(mut self, yes: bool) -> Self {
        self.discard_prepared_on_return = yes;
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
        self.pgbouncer_transaction_mode = yes;
        self
    }

    /// How long [`Pool::close`] waits for connections in use to come back.
    pub fn close_timeout(mut self, d: Duration) -> Self {
        self.close_timeout = d;
        self
    }

    /// Benchmarks only, not API: `false` turns off the holder records (checkout site,
    /// task, time) and with them the nested-checkout check, leak warnings and the holders
    /// listed by `holders()` and timeout errors, to measure what that bookkeeping costs.
    #[doc(hidden)]
    pub fn __bookkeeping(mut self, on: bool) -> Self {
        self.bookkeeping = on;
        self
    }

    /// Validates the settings and builds the pool. Lazy: no connection is opened until
    /// the first acquire (or by the background task, for `min_idle`).
    pub fn build(self) -> Result<Pool> {
        Ok(Pool::from_config(self.validate()?))
    }

    /// Builds the pool and proves it can connect by opening one connection, which stays
    /// in the pool. Fails with the connect error (bad password, unreachable server…).
    ///
    /// If the future is dropped, the pool is dropped with it.
    pub async fn connect(self) -> Result<Pool> {
        let pool = self.build()?;
        pool.warm_up().await?;
        Ok(pool)
    }

    fn validate(self) -> Result<PoolConfig> {
        let mut pg = self.source.0.map_err(|e| {
            Error::config(
                "url",
                format!("could not be parsed ({e}); write it as postgres://user:password@host:port/dbname or key=value pairs"),
            )
        })?;
        if self.max_size == 0 {
            return Err(Error::config(
                "max_size",
                "is 0; a pool needs at least 1 connection (the default is 10)",
            ));
        }
        if self.min_idle > self.max_size {
            return Err(Error::config(
                "min_idle",
                format!(
                    "({}) is larger than max_size ({}); lower min_idle or raise max_size",
                    self.min_idle, self.max_size
                ),
            ));
        }
        let nonzero = |field: &'static str, d: Option<Duration>| match d {
            Some(d) if d.is_zero() => Err(Error::config(
                field,
                "is zero, which would fail every operation at once; give a positive duration (or None to disable, where allowed)",
            )),
            _ => Ok(()),
        };
        nonzero("acquire_timeout", Some(self.acquire_timeout))?;
        nonzero("connect_timeout", Some(self.connect_timeout))?;
        nonzero("statement_timeout", self.statement_timeout)?;
        nonzero("max_lifetime", self.max_lifetime)?;
        nonzero("idle_timeout", self.idle_timeout)?;
        nonzero("leak_threshold", self.leak_threshold)?;
        nonzero("close_timeout", Some(self.close_timeout))?;
        if self.max_waiting == Some(0) {
            return Err(Error::config(
                "max_waiting",
                "is 0, so any acquire that cannot be served at once fails; use None for unbounded or a positive bound",
            ));
        }
        if pg.get_hosts().is_empty() {
            return Err(Error::config(
                "url",
                "names no host; add one, e.g. postgres://user@127.0.0.1/dbname",
            ));
        }
        if pg.get_application_name().is_none() {
            pg.application_name(self.application_name.as_deref().unwrap_or("pool-core"));
        } else if let Some(name) = self.application_name {
            pg.application_name(name);
        }
        // The driver's own connect_timeout only covers each TCP connect; ours covers the
        // whole handshake. Keep the driver's if it is shorter.
        if pg
            .get_connect_timeout()
            .is_none_or(|d| *d > self.connect_timeout)
        {
            pg.connect_timeout(self.connect_timeout);
        }
        let cleanup_timeout = self
            .statement_timeout
            .unwrap_or(Duration::from_secs(5))
            .min(Duration::from_secs(5));
        Ok(PoolConfig {
            pg,
            max_size: self.max_size,
            min_idle: self.min_idle,
            acquire_timeout: self.acquire_timeout,
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
            max_lifetime: self.max_lifetime,
            idle_timeout: self.idle_timeout,
            validate_after_idle: self.validate_after_idle,
            leak_threshold: self.leak_threshold,
            max_waiting: self.max_waiting,
            nested_checkout: self.nested_checkout,
            connector: self.connector.unwrap_or_else(|| Connector::new(NoTls)),
            after_connect: self.after_connect,
            statement_cache_capacity: if self.pgbouncer_transaction_mode {
                0
            } else {
                self.statement_cache_capacity
            },
            discard_prepared_on_return: self.discard_prepared_on_return,
            pgbouncer_transaction_mode: self.pgbouncer_transaction_mode,
            close_timeout: self.close_timeout,
            cleanup_timeout,
            bookkeeping: self.bookkeeping,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use crate::{Error, Pool};

    fn field_of(r: crate::Result<Pool>) -> (&'static str, String) {
        match r {
            Err(Error::Config { field, problem }) => (field, problem),
            Err(e) => panic!("expected a config error, got {e}"),
            Ok(_) => panic!("expected a config error, got a pool"),
        }
    }

    const URL: &str = "postgres://postgres@127.0.0.1/app";

    #[test]
    fn bad_settings_name_the_field_and_the_fix() {
        let (f, p) = field_of(Pool::builder(URL).max_size(0).build());
        assert_eq!(f, "max_size");
        assert!(p.contains("at least 1"), "{p}");
        let (f, p) = field_of(Pool::builder(URL).max_size(2).min_idle(3).build());
        assert_eq!(f, "min_idle");
        assert!(p.contains("raise max_size"), "{p}");
        let (f, p) = field_of(Pool::builder("postgres://[::1").build());
        assert_eq!(f, "url");
        assert!(p.contains("postgres://user:password@host"), "{p}");
        for (field, builder) in [
            (
                "acquire_timeout",
                Pool::builder(URL).acquire_timeout(Duration::ZERO),
            ),
            (
                "connect_timeout",
                Pool::builder(URL).connect_timeout(Duration::ZERO),
            ),
            (
                "statement_timeout",
                Pool::builder(URL).statement_timeout(Duration::ZERO),
            ),
            (
                "max_lifetime",
                Pool::builder(URL).max_lifetime(Duration::ZERO),
            ),
            (
                "idle_timeout",
                Pool::builder(URL).idle_timeout(Duration::ZERO),
            ),
            (
                "leak_threshold",
                Pool::builder(URL).leak_threshold(Duration::ZERO),
            ),
            (
                "close_timeout",
                Pool::builder(URL).close_timeout(Duration::ZERO),
            ),
        ] {
            let (f, p) = field_of(builder.build());
            assert_eq!(f, field);
            assert!(p.contains("positive duration"), "{p}");
        }
        let (f, _) = field_of(Pool::builder(URL).max_waiting(0).build());
        assert_eq!(f, "max_waiting");
        let (f, _) = field_of(Pool::builder("dbname=x").build());
        assert_eq!(f, "url");
    }

    #[test]
    fn build_is_lazy_and_needs_no_runtime() {
        let pool = Pool::builder(URL).build().unwrap();
        let s = pool.status();
        assert_eq!((s.size, s.max_size), (0, 10));
        // Disabling optional deadlines is allowed.
        Pool::builder(URL)
            .statement_timeout(None)
            .max_lifetime(None)
            .idle_timeout(None)
            .build()
            .unwrap();
    }

    #[test]
    fn application_name_defaults_to_pool_core_unless_set() {
        let pool = Pool::builder(URL).build().unwrap();
        assert_eq!(
            pool.shared.config().pg.get_application_name(),
            Some("pool-core")
        );
        let pool = Pool::builder(format!("{URL}?application_name=billing"))
            .build()
            .unwrap();
        assert_eq!(
            pool.shared.config().pg.get_application_name(),
            Some("billing")
        );
        let pool = Pool::builder(URL).application_name("api").build().unwrap();
        assert_eq!(pool.shared.config().pg.get_application_name(), Some("api"));
    }
}
