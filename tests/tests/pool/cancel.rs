//! Cancellation safety: every operation is polled N times and dropped, for N = 0, 1, 2 …
//! until it completes. After each drop the pool must be consistent and the next
//! borrower's connection clean.

use std::future::Future;
use std::time::Duration;

use pool_core::{Pool, TxOptions};
use tests::poll::poll_n_then_drop;

use crate::common::*;

/// Runs `op` on a fresh checkout for N = 0, 1, 2 … until it completes within N polls,
/// checking the pool and the next borrower after each drop.
async fn fuzz<Op, Fut>(
    label: &str,
    pool: &Pool,
    admin: &tokio_postgres::Client,
    mut op: Op,
) -> usize
where
    Op: FnMut(Pool, usize) -> Fut,
    Fut: Future<Output = bool>,
{
    for n in 0..400 {
        let completed = op(pool.clone(), n).await;
        // The pool recovers dropped work off the caller's path; the next borrower waits
        // for that, never gets a busy or dirty connection.
        let mut db = pool.db();
        let mut conn = db
            .acquire()
            .await
            .unwrap_or_else(|e| panic!("{label}, N={n}: {e}"));
        assert_clean(admin, &mut conn).await;
        drop(conn);
        let status = pool.status();
        assert!(status.size <= pool.max_size(), "{label}, N={n}: {status}");
        assert!(pool.holders().is_empty(), "{label}, N={n}: holders left");
        if completed {
            eprintln!("{label}: completed at N={n}");
            // N = 0 drops before the first poll; N = 1 after the first poll sent the
            // request. Completing later than that means drops mid-flight were exercised.
            assert!(
                n >= 2,
                "{label} completed at N={n}: no drop happened mid-flight"
            );
            return n;
        }
    }
    panic!("{label}: never completed");
}

#[tokio::test]
async fn acquire_dropped_at_every_point() {
    let (tdb, builder) = setup().await;
    let admin = tdb.admin().await;
    // Connection validation on every hand-out adds await points to the acquire path.
    let pool = builder
        .max_size(1)
        .validate_after_idle(Duration::ZERO)
        .build()
        .unwrap();
    fuzz(
        "acquire (cold and warm)",
        &pool,
        &admin,
        |pool, n| async move {
            let mut db = pool.db();
            poll_n_then_drop(db.acquire(), n).await
        },
    )
    .await;
}

#[tokio::test]
async fn query_dropped_at_every_point() {
    let (tdb, builder) = setup().await;
    let admin = tdb.admin().await;
    let pool = builder.max_size(1).build().unwrap();
    fuzz("query", &pool, &admin, |pool, n| async move {
        let mut db = pool.db();
        let mut conn = db.acquire().await.unwrap();
        poll_n_then_drop(conn.query("SELECT 1", &[]), n).await
    })
    .await;
}

#[tokio::test]
async fn begin_dropped_at_every_point() {
    let (tdb, builder) = setup().await;
    let admin = tdb.admin().await;
    let pool = builder.max_size(1).build().unwrap();
    fuzz("begin", &pool, &admin, |pool, n| async move {
        let mut db = pool.db();
        let mut conn = db.acquire().await.unwrap();
        let opts = TxOptions::new().isolation(pool_core::Isolation::Serializable);
        poll_n_then_drop(conn.begin_with(opts), n).await
    })
    .await;
}

#[tokio::test]
async fn commit_and_rollback_dropped_at_every_point() {
    let (tdb, builder) = setup().await;
    let admin = tdb.admin().await;
    tdb.batch_execute("CREATE TABLE t (x int)").await;
    let pool = builder.max_size(1).build().unwrap();
    for commit in [true, false] {
        fuzz(
            if commit { "commit" } else { "rollback" },
            &pool,
            &admin,
            |pool, n| async move {
                let mut db = pool.db();
                let mut conn = db.acquire().await.unwrap();
                let mut tx = conn.begin().await.unwrap();
                tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
                if commit {
                    poll_n_then_drop(tx.commit(), n).await
                } else {
                    poll_n_then_drop(tx.rollback(), n).await
                }
            },
        )
        .await;
    }
}

#[tokio::test]
async fn savepoint_steps_dropped_at_every_point() {
    let (tdb, builder) = setup().await;
    let admin = tdb.admin().await;
    let pool = builder.max_size(1).build().unwrap();
    fuzz("savepoint release", &pool, &admin, |pool, n| async move {
        let mut db = pool.db();
        let mut conn = db.acquire().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        let completed = {
            let mut sp = tx.savepoint().await.unwrap();
            sp.execute("SELECT 1", &[]).await.unwrap();
            poll_n_then_drop(sp.commit(), n).await
        };
        // The outer transaction goes on, whatever happened to the savepoint.
        if completed {
            tx.query("SELECT 1", &[]).await.unwrap();
            tx.commit().await.unwrap();
        }
        completed
    })
    .await;
}
