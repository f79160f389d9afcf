//! `retry = N` on real serialization failures from concurrent serializable transactions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use pool_core::{Conn, Error, Tx, transactional};

use crate::common::*;

/// Read-modify-write under SERIALIZABLE: concurrent runs conflict with 40001.
#[transactional(isolation = serializable, retry = 50, backoff_ms = 2)]
async fn increment(tx: &mut Tx, attempts: &AtomicU32) -> Result<(), Error> {
    attempts.fetch_add(1, Ordering::Relaxed);
    let n: i64 = tx
        .query_one("SELECT n FROM counter WHERE id = 1", &[])
        .await?
        .get(0);
    tokio::task::yield_now().await;
    tx.execute("UPDATE counter SET n = $1 WHERE id = 1", &[&(n + 1)])
        .await?;
    Ok(())
}

/// Runs `tasks` concurrent tasks that each call `increment` `each` times on a fresh
/// counter table, under real serializable conflicts. Returns the database (kept while
/// the pool is used), the pool, the counter's final value (read on a separate
/// connection) and how many times the bodies ran.
async fn contended<F, E>(
    tasks: i64,
    each: i64,
    increment: F,
) -> (tests::harness::TestDb, pool_core::Pool, i64, i64)
where
    F: Fn(pool_core::Pool, Arc<AtomicU32>, i64) -> tokio::task::JoinHandle<Result<(), E>>,
    E: std::fmt::Debug,
{
    let (tdb, builder) = setup().await;
    tdb.batch_execute(
        "CREATE TABLE counter (id int PRIMARY KEY, n bigint); INSERT INTO counter VALUES (1, 0)",
    )
    .await;
    let pool = builder.max_size(8).build().unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|_| increment(pool.clone(), Arc::clone(&attempts), each))
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let n: i64 = tdb
        .connect()
        .await
        .query_one("SELECT n FROM counter", &[])
        .await
        .unwrap()
        .get(0);
    (tdb, pool, n, i64::from(attempts.load(Ordering::Relaxed)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_failures_are_retried_and_counts_are_exact() {
    const TASKS: i64 = 8;
    const EACH: i64 = 25;
    let (_tdb, _pool, n, attempts) = contended(TASKS, EACH, |pool, attempts, each| {
        tokio::spawn(async move {
            let mut db = pool.db();
            for _ in 0..each {
                increment(&mut db, &attempts).await?;
            }
            Ok::<_, Error>(())
        })
    })
    .await;
    assert_eq!(n, TASKS * EACH, "lost or duplicated increments");
    assert!(
        attempts > TASKS * EACH,
        "no conflict happened, so nothing was retried ({attempts} attempts)"
    );
}

#[transactional(isolation = serializable, retry = 2, backoff_ms = 1)]
async fn always_conflicts(tx: &mut Tx, attempts: &AtomicU32) -> Result<(), Error> {
    attempts.fetch_add(1, Ordering::Relaxed);
    // A genuine 40001 from the server.
    tx.batch_execute("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$")
        .await?;
    Ok(())
}

#[transactional(retry = 5, backoff_ms = 1)]
async fn other_error(tx: &mut Tx, attempts: &AtomicU32) -> Result<(), Error> {
    attempts.fetch_add(1, Ordering::Relaxed);
    tx.batch_execute("SELECT 1/0").await?;
    Ok(())
}

#[tokio::test]
async fn gives_up_after_n_retries_and_never_retries_other_errors() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let attempts = AtomicU32::new(0);
    let err = always_conflicts(&mut db, &attempts).await.unwrap_err();
    assert!(err.is_serialization_failure(), "{err}");
    assert_eq!(
        attempts.load(Ordering::Relaxed),
        3,
        "one run plus two retries"
    );
    let attempts = AtomicU32::new(0);
    let err = other_error(&mut db, &attempts).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22012"));
    assert_eq!(
        attempts.load(Ordering::Relaxed),
        1,
        "division by zero must not be retried"
    );
}

#[transactional(retry = 5, backoff_ms = 1)]
async fn conflict_handled_in_a_savepoint(tx: &mut Tx, attempts: &AtomicU32) -> Result<(), Error> {
    attempts.fetch_add(1, Ordering::Relaxed);
    // A deadlock inside a savepoint, rolled back there: the body carries on.
    let mut sp = tx.savepoint().await?;
    let handled = sp
        .batch_execute("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40P01'; END $$")
        .await;
    assert!(handled.is_err());
    sp.rollback().await?;
    // Then an error that a rerun cannot cure.
    tx.batch_execute("SELECT 1/0").await?;
    Ok(())
}

#[tokio::test]
async fn a_conflict_rolled_back_in_a_savepoint_does_not_make_a_later_error_retryable() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let attempts = AtomicU32::new(0);
    let err = conflict_handled_in_a_savepoint(&mut db, &attempts)
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22012"), "{err}");
    assert_eq!(
        attempts.load(Ordering::Relaxed),
        1,
        "a division by zero was retried because of a deadlock the body had handled"
    );
}

/// The check also sees through user error types and anyhow-style errors.
#[derive(Debug)]
struct Wrapped(Error);
impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wrapped")
    }
}
impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}
impl From<Error> for Wrapped {
    fn from(e: Error) -> Self {
        Wrapped(e)
    }
}

#[transactional(retry = 1, backoff_ms = 1)]
async fn wrapped_conflict(tx: &mut Tx, attempts: &AtomicU32) -> Result<(), Wrapped> {
    attempts.fetch_add(1, Ordering::Relaxed);
    tx.batch_execute("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40P01'; END $$")
        .await?;
    Ok(())
}

#[transactional(retry = 1, backoff_ms = 1)]
async fn boxed_conflict(
    tx: &mut Tx,
    attempts: &AtomicU32,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    attempts.fetch_add(1, Ordering::Relaxed);
    tx.batch_execute("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$")
        .await?;
    Ok(())
}

#[tokio::test]
async fn retry_sees_through_wrapping_error_types() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let attempts = AtomicU32::new(0);
    assert!(wrapped_conflict(&mut db, &attempts).await.is_err());
    assert_eq!(attempts.load(Ordering::Relaxed), 2);
    let attempts = AtomicU32::new(0);
    assert!(boxed_conflict(&mut db, &attempts).await.is_err());
    assert_eq!(attempts.load(Ordering::Relaxed), 2);
}

/// The usual application error: `#[error(transparent)]` hides the pool's error from the
/// source chain (its `source()` is the pool error's own, which a server error lacks).
#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error(transparent)]
    Db(#[from] Error),
}

/// An error type that keeps nothing of the pool's error at all.
#[derive(Debug)]
struct Opaque;
impl From<Error> for Opaque {
    fn from(_: Error) -> Self {
        Opaque
    }
}

#[transactional(isolation = serializable, retry = 50, backoff_ms = 2)]
async fn increment_app(tx: &mut Tx, attempts: &AtomicU32) -> Result<(), AppError> {
    attempts.fetch_add(1, Ordering::Relaxed);
    let n: i64 = tx
        .query_one("SELECT n FROM counter WHERE id = 1", &[])
        .await?
        .get(0);
    tokio::task::yield_now().await;
    tx.execute("UPDATE counter SET n = $1 WHERE id = 1", &[&(n + 1)])
        .await?;
    Ok(())
}

#[transactional(retry = 1, backoff_ms = 1)]
async fn opaque_conflict(tx: &mut Tx, attempts: &AtomicU32) -> Result<(), Opaque> {
    attempts.fetch_add(1, Ordering::Relaxed);
    tx.batch_execute("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$")
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_works_whatever_the_error_type() {
    const TASKS: i64 = 8;
    const EACH: i64 = 10;
    let (_tdb, pool, n, _) = contended(TASKS, EACH, |pool, attempts, each| {
        tokio::spawn(async move {
            let mut db = pool.db();
            for _ in 0..each {
                increment_app(&mut db, &attempts).await?;
            }
            Ok::<_, AppError>(())
        })
    })
    .await;
    assert_eq!(
        n,
        TASKS * EACH,
        "lost increments: a transparent wrapper was not retried"
    );
    let mut db = pool.db();
    let attempts = AtomicU32::new(0);
    assert!(opaque_conflict(&mut db, &attempts).await.is_err());
    assert_eq!(
        attempts.load(Ordering::Relaxed),
        2,
        "an opaque error type was not retried"
    );
}

/// At run time, a connection lent by a transaction is refused by a retrying function.
#[tokio::test]
async fn a_retrying_transaction_refuses_a_connection_inside_a_transaction() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let lent: &mut Conn = tx.conn();
    let attempts = AtomicU32::new(0);
    let err = increment(lent, &attempts).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert_eq!(attempts.load(Ordering::Relaxed), 0);
}
