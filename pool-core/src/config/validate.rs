//! Validating a builder's settings: each bad value is refused with the option's name
//! and what to write instead; derived settings are filled in.

use std::time::Duration;

use super::{Builder, PoolConfig};
use crate::conn::ConnConfig;
use crate::error::{Error, Result};

impl Builder {
    /// The settings, checked, with the connection settings completed (the parsed URL,
    /// `application_name`, the driver's connect timeout, `cleanup_timeout`).
    pub(crate) fn validate(self) -> Result<(PoolConfig, ConnConfig)> {
        let mut pg = self.source.pg.map_err(|e| {
            Error::config(
                "url",
                format!("could not be parsed ({e}); write it as postgres://user:password@host:port/dbname or key=value pairs"),
            )
        })?;
        if self.pool.max_size == 0 {
            return Err(Error::config(
                "max_size",
                "is 0; a pool needs at least 1 connection (the default is 10)",
            ));
        }
        if self.pool.min_idle > self.pool.max_size {
            return Err(Error::config(
                "min_idle",
                format!(
                    "({}) is larger than max_size ({}); lower min_idle or raise max_size",
                    self.pool.min_idle, self.pool.max_size
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
        nonzero("acquire_timeout", Some(self.pool.acquire_timeout))?;
        nonzero("connect_timeout", Some(self.conn.connect_timeout))?;
        nonzero("statement_timeout", self.conn.statement_timeout)?;
        nonzero("max_lifetime", self.conn.max_lifetime)?;
        nonzero("idle_timeout", self.pool.idle_timeout)?;
        nonzero("leak_threshold", self.pool.leak_threshold)?;
        nonzero("close_timeout", Some(self.pool.close_timeout))?;
        if self.pool.max_waiting == Some(0) {
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
        cap_connect_timeout(&mut pg, self.conn.connect_timeout);
        let cleanup_timeout = self
            .conn
            .statement_timeout
            .unwrap_or(Duration::from_secs(5))
            .min(Duration::from_secs(5));
        let mut conn = self.conn;
        Builder::settle_tls(self.ssl, self.source.ssl, self.tls, &mut pg, &mut conn)?;
        conn.pg = pg;
        conn.cleanup_timeout = cleanup_timeout;
        if conn.pgbouncer_transaction_mode {
            conn.statement_cache_capacity = 0;
        }
        Ok((self.pool, conn))
    }
}

/// The driver's own connect_timeout only covers each TCP connect; the pool's covers the
/// whole handshake. Keeps the driver's if it is shorter, else sets the pool's.
pub(super) fn cap_connect_timeout(pg: &mut tokio_postgres::Config, pool: Duration) {
    if pg.get_connect_timeout().is_none_or(|d| *d > pool) {
        pg.connect_timeout(pool);
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
        let (_, conn) = Pool::builder(URL).validate().unwrap();
        assert_eq!(conn.pg.get_application_name(), Some("pool-core"));
        let (_, conn) = Pool::builder(format!("{URL}?application_name=billing"))
            .validate()
            .unwrap();
        assert_eq!(conn.pg.get_application_name(), Some("billing"));
        let (_, conn) = Pool::builder(URL)
            .application_name("api")
            .validate()
            .unwrap();
        assert_eq!(conn.pg.get_application_name(), Some("api"));
    }

    #[test]
    fn bad_replica_settings_name_the_field_and_the_fix() {
        use std::time::Duration;
        let replica = "postgres://postgres@127.0.0.2/app";
        let (f, p) = field_of(
            Pool::builder(URL)
                .replica(replica)
                .max_replica_lag(Duration::ZERO)
                .build(),
        );
        assert_eq!(f, "max_replica_lag");
        assert!(p.contains("leave it unset"), "{p}");
        let (f, p) = field_of(
            Pool::builder(URL)
                .max_replica_lag(Duration::from_secs(1))
                .build(),
        );
        assert_eq!(f, "max_replica_lag");
        assert!(p.contains(".replica(url)"), "{p}");
        let (f, _) = field_of(
            Pool::builder(URL)
                .replica_sample_interval(Duration::from_secs(1))
                .build(),
        );
        assert_eq!(f, "replica_sample_interval");
        let (f, p) = field_of(
            Pool::builder(URL)
                .replica(replica)
                .max_replica_lag(Duration::from_millis(50))
                .build(),
        );
        assert_eq!(f, "max_replica_lag");
        assert!(p.contains("sample more often"), "{p}");
        let (f, p) = field_of(
            Pool::builder(URL)
                .replica(replica)
                .replica_sample_interval(Duration::from_millis(1))
                .build(),
        );
        assert_eq!(f, "replica_sample_interval");
        assert!(p.contains("10 ms or more"), "{p}");
        let (f, p) = field_of(
            Pool::builder(URL)
                .replica(format!("{replica}?sslmode=verify-full"))
                .build(),
        );
        assert_eq!(f, "replica");
        assert!(p.contains("pool's TLS settings"), "{p}");
        let (f, p) = field_of(Pool::builder(URL).replica("postgres://[::1").build());
        assert_eq!(f, "replica");
        assert!(p.contains("number 1"), "{p}");
        // A good one builds, lazily, with the replica's sessions read-only.
        let pool = Pool::builder(URL).replica(replica).build().unwrap();
        assert_eq!(pool.replica_status().len(), 1);
        assert_eq!(pool.replica_status()[0].name, "127.0.0.2:5432");
        assert!(!pool.replica_status()[0].usable);
    }
}
