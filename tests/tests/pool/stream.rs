//! Row streams: rows as they arrive, on a borrowed connection that comes back clean
//! however the stream ends — checked on the server.

use std::time::Duration;

use futures::StreamExt;
use pool_core::{Error, PooledConn};

use crate::common::{backend_state, eventually, setup};

#[tokio::test]
async fn rows_arrive_in_order_and_the_count_is_known_at_the_end() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let mut rows = conn
        .query_stream("SELECT g FROM generate_series(1, $1) g", &[&1000i32])
        .await
        .unwrap();
    let mut expect = 1;
    while let Some(row) = rows.next().await {
        let g: i32 = row.unwrap().get(0);
        assert_eq!(g, expect);
        expect += 1;
    }
    assert_eq!(expect, 1001);
    assert_eq!(rows.rows_affected(), Some(1000));
    drop(rows);
    let one: i32 = conn.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test]
async fn a_stream_dropped_midway_is_cancelled_and_the_connection_comes_back_clean() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let pid = conn.backend_pid();
    {
        let mut rows = conn
            .query_stream("SELECT generate_series(1, 100000000)", &[])
            .await
            .unwrap();
        for _ in 0..10 {
            rows.next().await.unwrap().unwrap();
        }
    }
    // Cancelled on the server, not read to its end: the backend is idle again soon.
    assert!(
        eventually(Duration::from_secs(10), || async {
            backend_state(&admin, pid).await.as_deref() == Some("idle")
        })
        .await,
        "the dropped stream's statement is still running"
    );
    assert_eq!(pool.status().counters.cancelled_statements, 1);
    // No portal left open — the only one is this statement's own — and the connection
    // works.
    let check = "SELECT statement FROM pg_cursors";
    let open: Vec<String> = conn
        .query(check, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(open, vec![check.to_owned()]);
    assert!(!conn.in_transaction());
    PooledConn::release(conn);
    let s = pool.status();
    assert_eq!(s.counters.discarded(), 0, "{s}");
}

#[tokio::test]
async fn a_stream_dropped_midway_in_a_transaction_leaves_it_usable() {
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
    {
        let mut rows = tx
            .query_stream("SELECT g FROM generate_series(1, 20000) g", &[])
            .await
            .unwrap();
        rows.next().await.unwrap().unwrap();
    }
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let n: i64 = tdb
        .connect()
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the transaction did not survive the dropped stream");
}

#[tokio::test]
async fn an_error_mid_stream_ends_it_and_the_connection_stays_usable() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let mut rows = conn
        .query_stream("SELECT 10 / (5 - g) FROM generate_series(1, 10) g", &[])
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut failed = None;
    while let Some(row) = rows.next().await {
        match row {
            Ok(row) => got.push(row.get::<_, i32>(0)),
            Err(e) => failed = Some(e),
        }
    }
    drop(rows);
    assert_eq!(got, vec![2, 3, 5, 10]);
    let e = failed.expect("no error from the stream");
    assert!(matches!(e, Error::Db(_)), "{e}");
    assert_eq!(e.code().map(|c| c.code()), Some("22012"));
    let one: i32 = conn.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test]
async fn a_one_shot_stream_holds_its_connection_until_dropped() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut rows = db
        .query_stream("SELECT g FROM generate_series(1, 3) g", &[])
        .await
        .unwrap();
    assert_eq!(pool.status().in_use, 1);
    let mut n = 0;
    while let Some(row) = rows.next().await {
        row.unwrap();
        n += 1;
    }
    assert_eq!(n, 3);
    drop(rows);
    let s = pool.status();
    assert_eq!((s.in_use, s.idle), (0, 1), "{s}");
    // Statements that need a session are refused as one-shots, before a checkout.
    let refused = db
        .query_stream("SELECT set_config('a.b', 'c', false)", &[])
        .await;
    assert!(matches!(refused, Err(Error::Refused { .. })), "{refused:?}");
}

#[tokio::test]
async fn parameters_need_to_live_only_until_the_stream_starts() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let n = 5i32;
    // A temporary parameter slice, as with tokio-postgres' `query_raw`.
    let mut rows = conn
        .query_stream("SELECT generate_series(1, $1)", &[&n])
        .await
        .unwrap();
    let mut count = 0;
    while let Some(row) = rows.next().await {
        row.unwrap();
        count += 1;
    }
    assert_eq!(count, 5);
}
