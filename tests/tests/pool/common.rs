//! Helpers shared by the pool tests.

use std::time::Duration;

use pool_core::{Builder, Pool};
use tests::harness::{TestDb, test_db};
use tests::poll::eventually_every;
use tokio_postgres::Client;

/// A fresh database and a pool builder pointed at it, with short deadlines so a
/// failing test fails fast instead of hanging.
pub async fn setup() -> (TestDb, Builder) {
    let db = test_db().await;
    let builder = Pool::builder(db.config())
        .acquire_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .statement_timeout(Duration::from_secs(10));
    (db, builder)
}

/// The values of column `x` of table `t`, in order, read on a fresh plain client.
pub async fn rows(tdb: &TestDb) -> Vec<i32> {
    tdb.connect()
        .await
        .query("SELECT x FROM t ORDER BY x", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The backends of our pool in this database, as `(pid, state)` from `pg_stat_activity`.
pub async fn backends(admin: &Client, dbname: &str) -> Vec<(i32, String)> {
    admin
        .query(
            "SELECT pid, coalesce(state, '') FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'pool-core' ORDER BY pid",
            &[&dbname],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The state (`idle`, `active`, `idle in transaction`…) of one backend, or `None` if gone.
pub async fn backend_state(admin: &Client, pid: i32) -> Option<String> {
    admin
        .query_opt(
            "SELECT coalesce(state, '') FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// Polls `f` every 20 ms until it returns true or `within` passes; returns the last answer.
pub async fn eventually<F, Fut>(within: Duration, f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_every(within, Duration::from_millis(20), f).await
}

/// Whether a backend is inside a transaction block, from the server's view.
pub async fn in_transaction(admin: &Client, pid: i32) -> bool {
    admin
        .query_one(
            "SELECT xact_start IS NOT NULL FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0)
}

/// Asserts what the next borrower must always get: a connection that is idle on the
/// server (not busy, not in or aborted in a transaction) and answers statements.
pub async fn assert_clean(admin: &Client, conn: &mut pool_core::Conn) {
    // The statement runs first: a connection still held by the test may have a recovery
    // in flight (an interrupted statement being cancelled), which its next statement
    // waits for; only then does the server's view say what the next user gets.
    let pid = conn.backend_pid();
    let one: i32 = conn.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert_eq!(
        backend_state(admin, pid).await.as_deref(),
        Some("idle"),
        "backend {pid} is not idle"
    );
    assert!(
        !in_transaction(admin, pid).await,
        "backend {pid} is inside a transaction"
    );
}

/// Call after installing a test's own subscriber (`set_default`) and before what it
/// observes. Other tests of this binary run on other threads, and a callsite they
/// registered while this subscriber was being installed can keep the interest computed
/// without it ("never"): tracing-core then skips the span or event for every subscriber
/// until interest is rebuilt. Rebuilding here, once those first registrations are done,
/// makes the test see every callsite.
pub fn see_every_callsite() {
    tracing::callsite::rebuild_interest_cache();
}
