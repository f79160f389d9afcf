//! Per-call deadlines: `.timeout(d)` / `.no_timeout()` on a statement's future replace
//! the pool's `statement_timeout` for that one statement, shorter or longer, with the
//! same cancel on the server and clean connection when it passes.

use std::time::Duration;

use pool_core::{Error, PooledConn, TimeoutKind};

use crate::common::{backend_state, eventually, in_transaction, setup};

fn statement_timeout(e: &Error) -> Duration {
    let t = e
        .as_timeout()
        .unwrap_or_else(|| panic!("not a timeout: {e:?}"));
    assert_eq!(t.kind(), TimeoutKind::Statement, "{e}");
    t.after()
}

#[tokio::test]
async fn a_shorter_deadline_cancels_on_the_server_and_the_connection_stays_in_service() {
    let (tdb, builder) = setup().await;
    let admin = tdb.admin().await;
    // The pool's own deadline is 10 s (see `setup`).
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let pid = conn.backend_pid();
    let err = conn
        .execute("SELECT pg_sleep(10)", &[])
        .timeout(Duration::from_millis(150))
        .await
        .unwrap_err();
    assert_eq!(statement_timeout(&err), Duration::from_millis(150));
    assert!(err.to_string().contains("150ms"), "{err}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            backend_state(&admin, pid).await.as_deref() == Some("idle")
        })
        .await,
        "pg_sleep is still running on the server"
    );
    let s = pool.status();
    assert_eq!(
        (
            s.counters.statement_timeouts,
            s.counters.cancelled_statements
        ),
        (1, 1),
        "{s}"
    );
    // The same connection goes on, and the next statement has the pool's deadline
    // again: a 0.3 s sleep is not cut at 150 ms.
    conn.execute("SELECT pg_sleep(0.3)", &[]).await.unwrap();
    assert_eq!(conn.backend_pid(), pid);
    assert!(!in_transaction(&admin, pid).await);
    PooledConn::release(conn);
    assert_eq!(pool.status().counters.discarded(), 0);
}

#[tokio::test]
async fn a_longer_deadline_or_none_outlasts_the_pools() {
    let (_tdb, builder) = setup().await;
    let pool = builder
        .max_size(1)
        .statement_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let err = conn.execute("SELECT pg_sleep(0.4)", &[]).await.unwrap_err();
    assert_eq!(statement_timeout(&err), Duration::from_millis(100));
    conn.execute("SELECT pg_sleep(0.4)", &[])
        .timeout(Duration::from_secs(5))
        .await
        .unwrap();
    let row = conn
        .query_one("SELECT pg_sleep(0.4), 7", &[])
        .no_timeout()
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(1), 7);
    PooledConn::release(conn);
    // One-shot on `Db`: the deadline is the statement's.
    db.execute("SELECT pg_sleep(0.4)", &[])
        .timeout(Duration::from_secs(5))
        .await
        .unwrap();
    let err = db
        .query("SELECT pg_sleep(5)", &[])
        .timeout(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(statement_timeout(&err), Duration::from_millis(200));
}

#[tokio::test]
async fn in_a_transaction_a_passed_deadline_aborts_it_and_nothing_commits() {
    let (tdb, builder) = setup().await;
    tdb.connect()
        .await
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .unwrap();
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let err = tx
        .query("SELECT pg_sleep(10)", &[])
        .timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(statement_timeout(&err), Duration::from_millis(100));
    let err = tx
        .execute("INSERT INTO t VALUES (2)", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TransactionAborted { .. }), "{err}");
    drop(tx);
    PooledConn::release(conn);
    let n: i64 = tdb
        .connect()
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_zero_deadline_is_refused_before_anything_is_sent() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let err = conn
        .execute("SELECT 1", &[])
        .timeout(Duration::ZERO)
        .await
        .unwrap_err();
    match &err {
        Error::Config { field, problem, .. } => {
            assert_eq!(*field, "StatementFuture::timeout");
            assert!(problem.contains("no_timeout"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.status().counters.statement_timeouts, 0);
    conn.execute("SELECT 1", &[]).await.unwrap();
}
