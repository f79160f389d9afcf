//! `Pipeline`: several statements in one round trip on a held connection or in a
//! transaction — answers in order, placement checked before anything is sent, a
//! failure's reach (its own implicit transaction outside a transaction, the whole
//! transaction inside one), a dropped pipeline cancelled and drained.

use std::time::Duration;

use pool_core::{Error, sql};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactions_statements_go_together_and_answer_in_order() {
    let (tdb, builder) = setup().await;
    tdb.batch_execute("CREATE TABLE t (x int PRIMARY KEY)")
        .await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let values: Vec<i32> = (1..=50).collect();
    let params: Vec<[&(dyn pool_core::ToSql + Sync); 1]> = values
        .iter()
        .map(|v| [v as &(dyn pool_core::ToSql + Sync)])
        .collect();
    // A transaction-only statement is welcome in a transaction's pipeline.
    let mut pipeline = tx
        .pipeline()
        .execute(sql!("LOCK TABLE t IN EXCLUSIVE MODE"), &[]);
    for p in &params {
        pipeline = pipeline.execute("INSERT INTO t VALUES ($1)", p);
    }
    let out = pipeline
        .query("SELECT count(*)::int4 FROM t", &[])
        .run()
        .await
        .unwrap();
    assert_eq!(out.len(), 52);
    assert!(out[1..51].iter().all(|o| o.count() == 1));
    assert_eq!(out[51].rows()[0].get::<_, i32>(0), 50);
    tx.commit().await.unwrap();
    assert_eq!(rows(&tdb).await, values);
    drop(conn);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_aborts_the_transaction_and_is_reported() {
    let (tdb, builder) = setup().await;
    tdb.batch_execute("CREATE TABLE t (x int PRIMARY KEY)")
        .await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let err = tx
        .pipeline()
        .execute("INSERT INTO t VALUES (1)", &[])
        .query("SELECT 1 / 0", &[])
        .execute("INSERT INTO t VALUES (2)", &[])
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22012"), "{err}");
    let err = tx.commit().await.unwrap_err();
    assert!(matches!(err, Error::TransactionAborted { .. }), "{err}");
    assert!(rows(&tdb).await.is_empty());
    drop(conn);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_connection_each_statement_stands_alone() {
    let (tdb, builder) = setup().await;
    tdb.batch_execute("CREATE TABLE t (x int PRIMARY KEY)")
        .await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let err = conn
        .pipeline()
        .execute("INSERT INTO t VALUES (1)", &[])
        .execute("INSERT INTO t VALUES (1)", &[])
        .execute("INSERT INTO t VALUES (2)", &[])
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23505"), "{err}");
    // The duplicate failed alone: its neighbours are committed.
    assert_eq!(rows(&tdb).await, vec![1, 2]);
    // A statement that cannot run here is refused before anything is sent.
    let err = conn
        .pipeline()
        .execute("INSERT INTO t VALUES (3)", &[])
        .execute("LOCK TABLE t", &[])
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert_eq!(rows(&tdb).await, vec![1, 2]);
    let err = conn.pipeline().run().await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    let admin = tdb.connect().await;
    assert_clean(&admin, &mut conn).await;
    drop(conn);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pipeline_is_cancelled_and_the_connection_drained() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let pid = conn.backend_pid();
    let dropped = tokio::time::timeout(
        Duration::from_millis(200),
        conn.pipeline()
            .query("SELECT 1", &[])
            .query("SELECT pg_sleep(30)", &[])
            .query("SELECT 2", &[])
            .run(),
    )
    .await;
    assert!(dropped.is_err());
    assert_clean(&admin, &mut conn).await;
    assert_eq!(conn.backend_pid(), pid);
    drop(conn);
    pool.close().await;
}
