//! `#[transactional]`: commit, rollback, panic, cancellation, savepoints.

use std::time::Duration;

use pool_core::{Error, Tx, transactional, with_conn};

use crate::common::*;

#[transactional]
async fn insert(tx: &mut Tx, x: i32) -> Result<(), Error> {
    tx.execute("INSERT INTO t VALUES ($1)", &[&x]).await?;
    Ok(())
}

#[transactional]
async fn insert_then_fail(tx: &mut Tx, x: i32) -> Result<(), Error> {
    tx.execute("INSERT INTO t VALUES ($1)", &[&x]).await?;
    if x > 0 {
        // An early return of an error, not a database error.
        return Err(Error::RowCount { rows: 0 });
    }
    Ok(())
}

#[transactional]
async fn insert_then_panic(tx: &mut Tx, x: i32) -> Result<(), Error> {
    tx.execute("INSERT INTO t VALUES ($1)", &[&x]).await?;
    panic!("boom");
}

#[transactional]
async fn insert_then_sleep(tx: &mut Tx, x: i32) -> Result<(), Error> {
    tx.execute("INSERT INTO t VALUES ($1)", &[&x]).await?;
    tx.query("SELECT pg_sleep(10)", &[]).await?;
    Ok(())
}

#[tokio::test]
async fn commits_on_ok_and_rolls_back_on_err_panic_and_cancel() {
    let (tdb, builder) = setup().await;
    tdb.batch_execute("CREATE TABLE t (x int)").await;
    let admin = tdb.admin().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();

    insert(&mut db, 1).await.unwrap();
    assert!(insert_then_fail(&mut db, 2).await.is_err());
    let p = pool.clone();
    assert!(
        tokio::spawn(async move { insert_then_panic(&mut p.db(), 3).await })
            .await
            .unwrap_err()
            .is_panic()
    );
    // Cancelled mid-body: the future is dropped while pg_sleep runs.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), insert_then_sleep(&mut db, 4))
            .await
            .is_err()
    );
    assert_eq!(rows(&tdb).await, vec![1]);

    let mut conn = db.acquire().await.unwrap();
    assert_clean(&admin, &mut conn).await;
}

#[transactional]
async fn outer(tx: &mut Tx, fail_inner: bool) -> Result<(), Error> {
    tx.execute("INSERT INTO t VALUES (10)", &[]).await?;
    // Nested: runs as a savepoint; an inner error rolls back only the inner work.
    if let Err(e) = inner(tx, fail_inner).await {
        assert!(fail_inner, "{e}");
    }
    tx.execute("INSERT INTO t VALUES (30)", &[]).await?;
    Ok(())
}

#[transactional]
async fn inner(tx: &mut Tx, fail: bool) -> Result<(), Error> {
    assert_eq!(
        tx.depth(),
        2,
        "nested #[transactional] must run as a savepoint"
    );
    tx.execute("INSERT INTO t VALUES (20)", &[]).await?;
    if fail {
        tx.execute("INSERT INTO t VALUES ('not a number')", &[])
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn nested_calls_are_savepoints() {
    let (tdb, builder) = setup().await;
    tdb.batch_execute("CREATE TABLE t (x int)").await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    outer(&mut db, true).await.unwrap();
    assert_eq!(rows(&tdb).await, vec![10, 30]);
    tdb.batch_execute("DELETE FROM t").await;
    outer(&mut db, false).await.unwrap();
    assert_eq!(rows(&tdb).await, vec![10, 20, 30]);
    assert_eq!(pool.status().counters.acquires, 2);
}

/// A transaction can call a `#[with_conn]` helper: it runs inside the transaction.
#[with_conn]
async fn count(conn: &mut pool_core::Conn) -> Result<i64, Error> {
    Ok(conn.query_one("SELECT count(*) FROM t", &[]).await?.get(0))
}

#[transactional(isolation = repeatable_read, read_only)]
async fn snapshot(tx: &mut Tx) -> Result<(i64, String, String), Error> {
    let n = count(tx).await?;
    let iso: String = tx
        .query_one("SHOW transaction_isolation", &[])
        .await?
        .get(0);
    let ro: String = tx
        .query_one("SHOW transaction_read_only", &[])
        .await?
        .get(0);
    Ok((n, iso, ro))
}

#[tokio::test]
async fn options_reach_the_server_and_with_conn_helpers_join_the_transaction() {
    let (tdb, builder) = setup().await;
    tdb.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .await;
    let pool = builder.max_size(1).build().unwrap();
    let (n, iso, ro) = snapshot(&mut pool.db()).await.unwrap();
    assert_eq!((n, iso.as_str(), ro.as_str()), (1, "repeatable read", "on"));
}

struct Tally {
    rows: i64,
}

impl Tally {
    /// `&mut self` methods keep their receiver; the transaction comes from the caller.
    #[transactional(isolation = repeatable_read)]
    async fn refresh(&mut self, tx: &mut Tx, at_least: i64) -> Result<(), Error> {
        let n: i64 = tx.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
        self.rows = n.max(at_least);
        Ok(())
    }
}

#[tokio::test]
async fn mut_self_methods_work() {
    let (tdb, builder) = setup().await;
    tdb.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3)")
        .await;
    let pool = builder.max_size(1).build().unwrap();
    let mut tally = Tally { rows: 0 };
    tally.refresh(&mut pool.db(), 0).await.unwrap();
    assert_eq!(tally.rows, 3);
}
