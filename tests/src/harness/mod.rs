//! PostgreSQL test harness shared by every integration test and example.
//!
//! * [`server`] resolves, once per process, the PostgreSQL server to test
//!   against: the one named by [`database_url`] if it answers, otherwise a
//!   private throwaway cluster started from the local PostgreSQL binaries.
//! * [`test_db`] creates a fresh, uniquely named database on that server and
//!   drops it again when the returned [`TestDb`] is dropped (also on panic).
//! * [`PrivateCluster`] is a cluster owned by one test, for tests that need
//!   to stop, restart, pause or reconfigure the server.
//!
//! Nothing tied to a tokio runtime is ever stored in a static (each
//! `#[tokio::test]` has its own runtime); only configurations, URLs and
//! process handles are. Every private cluster and the cached `initdb`
//! template are watched by a detached reaper shell that kills the postmaster
//! and removes the directory once the test process is gone, so no postgres
//! process or temporary directory outlives the test run.
//!
//! Environment variables:
//!
//! * `DATABASE_URL`: the server to use (default
//!   `postgres://postgres@127.0.0.1:5432/postgres`).
//! * `POOL_CORE_PG_BINDIR`: if set, the only directory searched for the
//!   PostgreSQL server binaries (`initdb`, `postgres`).

mod binaries;
mod cluster;
mod error;
mod process;
mod server;
mod setup;
mod testdb;

pub use cluster::{PrivateCluster, PrivateClusterBuilder};
pub use error::HarnessError;
pub use server::{Server, server};
pub use testdb::{TestDb, test_db, try_test_db};

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The default server URL used when `DATABASE_URL` is not set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Returns the `DATABASE_URL` environment variable, or
/// [`DEFAULT_DATABASE_URL`] if it is unset or empty.
pub fn database_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => DEFAULT_DATABASE_URL.to_owned(),
    }
}

/// Returns `url` with its database name replaced by `dbname`.
///
/// Handles `postgres://` / `postgresql://` URLs (keeping any `?query`) and
/// key/value connection strings (by appending `dbname=...`, which overrides
/// an earlier `dbname`).
pub(crate) fn replace_dbname(url: &str, dbname: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return format!("{url} dbname={dbname}");
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let query_pos = rest.find('?');
    let authority_end = rest
        .find('/')
        .filter(|slash| query_pos.is_none_or(|q| *slash < q))
        .or(query_pos)
        .unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let query = query_pos.map_or("", |q| &rest[q..]);
    format!("{}{authority}/{dbname}{query}", &url[..rest_start])
}

/// A process-unique, hard to guess suffix: `<counter>_<random hex>`.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(counter);
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    format!("{counter}_{:06x}", hasher.finish() & 0xff_ffff)
}

/// Formats an error together with its chain of sources.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod unit {
    use super::replace_dbname;

    #[test]
    fn replaces_dbname() {
        assert_eq!(
            replace_dbname("postgres://u@h:1/postgres", "x"),
            "postgres://u@h:1/x"
        );
        assert_eq!(
            replace_dbname("postgres://u@h:1", "x"),
            "postgres://u@h:1/x"
        );
        assert_eq!(
            replace_dbname("postgresql://u@h/db?sslmode=disable", "x"),
            "postgresql://u@h/x?sslmode=disable"
        );
        assert_eq!(
            replace_dbname("postgres://u@h?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(
            replace_dbname("host=h user=u", "x"),
            "host=h user=u dbname=x"
        );
    }
}
