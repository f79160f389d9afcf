//! The read side's options: replicas, their lag bound, what reads do when no replica
//! can serve them, and how often positions are sampled. Validated into one
//! [`ReplicaPlan`] per pool, which `api/` turns into a pool per replica.

use std::time::Duration;

use super::{Builder, ConfigSource, PoolConfig};
use crate::conn::ConnConfig;
use crate::error::{Error, Result};

/// What a read on the read side ([`ReadDb`](crate::ReadDb)) does when no replica can
/// serve it (all down, not standbys, or behind by more than `max_replica_lag`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReplicaFallback {
    /// Read from the primary, on a read-only session (default).
    #[default]
    Primary,
    /// Fail with [`Error::NoReplica`](crate::Error::NoReplica), which says why each
    /// replica was passed over. A task's read right after its own write still goes to
    /// the primary when no replica has replayed that write: read-your-writes comes
    /// first.
    Fail,
}

/// The replica options as set on the builder.
#[derive(Default)]
pub(crate) struct ReplicaOptions {
    pub(super) sources: Vec<ConfigSource>,
    pub(super) max_lag: Option<Duration>,
    pub(super) fallback: ReplicaFallback,
    pub(super) sample_every: Option<Duration>,
}

/// The validated read side: one pool's settings per replica, and how to route.
pub(crate) struct ReplicaPlan {
    /// Each replica's name (`host:port`) and the settings of its pool.
    pub(crate) servers: Vec<(String, PoolConfig, ConnConfig)>,
    pub(crate) max_lag: Option<Duration>,
    pub(crate) fallback: ReplicaFallback,
    pub(crate) sample_every: Duration,
}

/// How often positions are sampled by default.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

impl Builder {
    /// Adds a streaming replica (a URL or `tokio_postgres::Config`, like the primary's),
    /// for the read side: [`Pool::read_db`](crate::Pool::read_db) sends reads to the
    /// replicas that are up, standbys, within [`max_replica_lag`](Self::max_replica_lag),
    /// and — for a task that has just written — past that write. Call it once per
    /// replica. Each replica gets a pool of its own with this builder's settings
    /// (`max_size` is per server); its sessions are `default_transaction_read_only`.
    /// TLS settings are the pool's: a replica URL may not carry `sslmode`/`sslrootcert`.
    pub fn replica(mut self, config: impl Into<ConfigSource>) -> Self {
        self.replicas.sources.push(config.into());
        self
    }

    /// The most a replica may lag the primary and still serve reads (default: no
    /// bound). Lag is measured in time: how long ago the primary was at a position the
    /// replica has not replayed yet, from positions sampled every
    /// [`replica_sample_interval`](Self::replica_sample_interval) (so it is known to
    /// about that precision). A replica behind by more is passed over until it catches
    /// up. Must be more than zero.
    pub fn max_replica_lag(mut self, d: Duration) -> Self {
        self.replicas.max_lag = Some(d);
        self
    }

    /// What reads do when no replica can serve them (default
    /// [`ReplicaFallback::Primary`]).
    pub fn replica_fallback(mut self, fallback: ReplicaFallback) -> Self {
        self.replicas.fallback = fallback;
        self
    }

    /// How often the primary's WAL position and each replica's replay position are
    /// sampled (default 200 ms), one small query on each server through its pool. A
    /// task's reads right after its own write go to the primary until a sample shows a
    /// replica past it, so this is also how soon they return to the replicas.
    pub fn replica_sample_interval(mut self, d: Duration) -> Self {
        self.replicas.sample_every = Some(d);
        self
    }

    /// Takes the read side's options out, to be validated (`ReplicaOptions::plan`)
    /// against the primary's validated settings.
    pub(crate) fn take_replicas(&mut self) -> ReplicaOptions {
        std::mem::take(&mut self.replicas)
    }
}

impl ReplicaOptions {
    /// Validates the read side against the primary's validated settings: `None`
    /// without replicas.
    pub(crate) fn plan(self, pool: &PoolConfig, conn: &ConnConfig) -> Result<Option<ReplicaPlan>> {
        if self.sources.is_empty() {
            let set = if self.max_lag.is_some() {
                Some("max_replica_lag")
            } else if self.sample_every.is_some() {
                Some("replica_sample_interval")
            } else {
                None
            };
            if let Some(field) = set {
                return Err(Error::config(
                    field,
                    "is set but the pool has no replica; add them with `.replica(url)` or drop the option",
                ));
            }
            return Ok(None);
        }
        if self.max_lag.is_some_and(|d| d.is_zero()) {
            return Err(Error::config(
                "max_replica_lag",
                "is zero: no replica is ever exactly at the primary's position; give the staleness you accept (e.g. 1 s), or leave it unset for no bound",
            ));
        }
        let sample_every = self.sample_every.unwrap_or(SAMPLE_EVERY);
        if sample_every < Duration::from_millis(10) {
            return Err(Error::config(
                "replica_sample_interval",
                "is under 10 ms, which would spend the servers on sampling; give 10 ms or more (default 200 ms)",
            ));
        }
        if let Some(max) = self.max_lag
            && max < sample_every
        {
            return Err(Error::config(
                "max_replica_lag",
                format!(
                    "({max:?}) is shorter than replica_sample_interval ({sample_every:?}), so lag cannot be known that precisely; sample more often or allow more lag"
                ),
            ));
        }
        let mut servers = Vec::with_capacity(self.sources.len());
        for source in self.sources {
            let name_hint = servers.len() + 1;
            let mut pg = source.pg.map_err(|e| {
                Error::config(
                    "replica",
                    format!("URL number {name_hint} could not be parsed ({e}); write it as postgres://user:password@host:port/dbname"),
                )
            })?;
            if source.ssl != super::ssl::SslOptions::default() {
                return Err(Error::config(
                    "replica",
                    format!(
                        "URL number {name_hint} sets sslmode or sslrootcert; replicas use the pool's TLS settings: set them on the primary's URL or the builder"
                    ),
                ));
            }
            if pg.get_hosts().is_empty() {
                return Err(Error::config(
                    "replica",
                    format!(
                        "URL number {name_hint} names no host; add one, e.g. postgres://user@replica-1/dbname"
                    ),
                ));
            }
            if pg.get_application_name().is_none()
                && let Some(name) = conn.pg.get_application_name()
            {
                pg.application_name(name);
            }
            super::validate::cap_connect_timeout(&mut pg, conn.connect_timeout);
            pg.ssl_mode(conn.pg.get_ssl_mode());
            // The server refuses writes on the read side even after a promotion.
            let options = match pg.get_options() {
                Some(o) => format!("{o} -c default_transaction_read_only=on"),
                None => "-c default_transaction_read_only=on".to_owned(),
            };
            pg.options(&options);
            let name = super::default_name(&pg);
            let mut config = pool.clone();
            config.name = Some(match &pool.name {
                Some(primary) => format!("{primary}/{name}"),
                None => name.clone(),
            });
            let mut replica = conn.with_server(pg);
            replica.standby_only = true;
            servers.push((name, config, replica));
        }
        Ok(Some(ReplicaPlan {
            servers,
            max_lag: self.max_lag,
            fallback: self.fallback,
            sample_every,
        }))
    }
}
