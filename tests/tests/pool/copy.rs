//! COPY through the client: `copy_in` sinks and `copy_out` streams on `Conn`, `Tx` and
//! `Db`, text and binary, and a connection that comes back clean however a copy ends —
//! checked on the server.

use std::pin::pin;
use std::time::Duration;

use futures::{SinkExt, StreamExt, TryStreamExt};
use pool_core::bytes::Bytes;
use pool_core::tokio_postgres::types::Type;
use pool_core::{Error, PooledConn, sql};

use crate::common::{backend_state, eventually, in_transaction, setup};

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// The server's view of a backend: its state and whether it is inside a transaction.
async fn server_side(client: &tokio_postgres::Client, pid: i32) -> (Option<String>, bool) {
    (
        backend_state(client, pid).await,
        in_transaction(client, pid).await,
    )
}

#[tokio::test]
async fn copy_in_and_out_round_trip_on_conn_tx_and_db() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    admin
        .batch_execute("CREATE TABLE t (a int, b text)")
        .await
        .unwrap();
    let pool = builder.max_size(2).build().unwrap();
    let mut db = pool.db();

    // Conn, text format, from a string.
    let mut conn = db.acquire().await.unwrap();
    let mut sink = conn.copy_in("COPY t (a, b) FROM STDIN").await.unwrap();
    for i in 0..1000 {
        sink.send(Bytes::from(format!("{i}\trow {i}\n")))
            .await
            .unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 1000);
    drop(sink);
    let out: Vec<Bytes> = conn
        .copy_out(sql!("COPY (SELECT a, b FROM t ORDER BY a) TO STDOUT"))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let text: String = out
        .iter()
        .map(|b| std::str::from_utf8(b).unwrap())
        .collect();
    assert_eq!(text.lines().count(), 1000);
    assert_eq!(text.lines().nth(7), Some("7\trow 7"));

    // Tx, CSV via sql!, committed with the transaction.
    let mut tx = conn.begin().await.unwrap();
    let mut sink = tx
        .copy_in(sql!("COPY t (a, b) FROM STDIN (FORMAT csv)"))
        .await
        .unwrap();
    sink.send(Bytes::from_static(b"5000,\"a, b\"\n5001,c\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    drop(sink);
    let seen: i64 = tx
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 1002);
    assert_eq!(count(&admin, "t").await, 1000, "visible before commit");
    tx.commit().await.unwrap();
    assert_eq!(count(&admin, "t").await, 1002);
    PooledConn::release(conn);

    // Db: the sink holds a connection for its life, and the pinned style of
    // tokio-postgres works as is.
    {
        let sink = db.copy_in("COPY t (a) FROM STDIN").await.unwrap();
        let mut sink = pin!(sink);
        sink.as_mut()
            .send(Bytes::from_static(b"1\n2\n"))
            .await
            .unwrap();
        assert_eq!(pool.status().in_use, 1);
        assert_eq!(sink.finish().await.unwrap(), 2);
    }
    let total: usize = db
        .copy_out("COPY t TO STDOUT")
        .await
        .unwrap()
        .map(|chunk| chunk.unwrap().iter().filter(|b| **b == b'\n').count())
        .fold(0, |a, n| async move { a + n })
        .await;
    assert_eq!(total, 1004);
    let s = pool.status();
    assert_eq!((s.in_use, s.counters.discarded()), (0, 0), "{s}");
}

#[tokio::test]
async fn binary_copy_works_through_the_drivers_binary_types() {
    let (tdb, builder) = setup().await;
    tdb.connect()
        .await
        .batch_execute("CREATE TABLE t (id int8, name text, score float8)")
        .await
        .unwrap();
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let types = [Type::INT8, Type::TEXT, Type::FLOAT8];
    let mut writer = conn
        .copy_in(sql!("COPY t (id, name, score) FROM STDIN (FORMAT binary)"))
        .await
        .unwrap()
        .binary(&types)
        .unwrap();
    for i in 0..500i64 {
        let name = format!("n{i}");
        #[allow(clippy::cast_precision_loss)]
        let score = i as f64 / 2.0;
        writer.write(&[&i, &name, &score]).await.unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), 500);
    drop(writer);
    let rows: Vec<_> = conn
        .copy_out(sql!(
            "COPY (SELECT id, name, score FROM t ORDER BY id) TO STDOUT (FORMAT binary)"
        ))
        .await
        .unwrap()
        .binary(&types)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows.len(), 500);
    assert_eq!(rows[41].get::<i64>(0), 41);
    assert_eq!(rows[41].get::<&str>(1), "n41");
    assert!((rows[41].get::<f64>(2) - 20.5).abs() < f64::EPSILON);
    // Binary after data has gone is refused, with the fix.
    let mut sink = conn.copy_in("COPY t (id) FROM STDIN").await.unwrap();
    sink.feed(Bytes::from_static(b"1\n")).await.unwrap();
    sink.flush().await.unwrap();
    let err = sink.binary(&types).unwrap_err();
    assert!(err.to_string().contains("before any data"), "{err}");
}

#[tokio::test]
async fn a_copy_in_dropped_before_finish_commits_nothing_and_leaves_the_connection_clean() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    admin.batch_execute("CREATE TABLE t (a int)").await.unwrap();
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let pid = conn.backend_pid();
    {
        let mut sink = conn.copy_in("COPY t FROM STDIN").await.unwrap();
        for i in 0..10_000 {
            sink.feed(Bytes::from(format!("{i}\n"))).await.unwrap();
        }
        sink.flush().await.unwrap();
        assert_eq!(backend_state(&admin, pid).await.as_deref(), Some("active"));
    }
    // Outside a transaction: aborted, nothing written, connection idle and usable.
    assert!(
        eventually(Duration::from_secs(10), || async {
            server_side(&admin, pid).await == (Some("idle".to_owned()), false)
        })
        .await,
        "{:?}",
        server_side(&admin, pid).await
    );
    assert_eq!(count(&admin, "t").await, 0);
    let one: i32 = conn.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert!(!conn.in_transaction());

    // Inside a transaction: the copy and the transaction are aborted; the Tx says so,
    // and the connection comes back outside any transaction.
    let mut tx = conn.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (-1)", &[]).await.unwrap();
    {
        let mut sink = tx.copy_in("COPY t FROM STDIN").await.unwrap();
        sink.send(Bytes::from_static(b"1\n2\n")).await.unwrap();
    }
    let err = tx
        .execute("INSERT INTO t VALUES (-2)", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TransactionAborted { .. }), "{err}");
    assert!(tx.commit().await.is_err());
    assert_eq!(count(&admin, "t").await, 0);
    PooledConn::release(conn);
    let mut conn = db.acquire().await.unwrap();
    assert_eq!(conn.backend_pid(), pid, "the connection was not kept");
    assert!(!conn.in_transaction());
    assert_eq!(
        server_side(&admin, pid).await,
        (Some("idle".to_owned()), false)
    );
    let _ = conn.execute("SELECT 1", &[]).await.unwrap();
    assert_eq!(pool.status().counters.discarded(), 0);
}

#[tokio::test]
async fn a_copy_out_dropped_midway_is_cancelled_and_the_connection_comes_back_clean() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let pid = conn.backend_pid();
    {
        let mut data = conn
            .copy_out("COPY (SELECT generate_series(1, 100000000)) TO STDOUT")
            .await
            .unwrap();
        for _ in 0..10 {
            data.next().await.unwrap().unwrap();
        }
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            backend_state(&admin, pid).await.as_deref() == Some("idle")
        })
        .await,
        "the dropped COPY is still running"
    );
    assert_eq!(pool.status().counters.cancelled_statements, 1);
    let one: i32 = conn.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    // In a transaction the rest is drained, and the transaction goes on.
    admin.batch_execute("CREATE TABLE t (a int)").await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    {
        let mut data = tx
            .copy_out("COPY (SELECT generate_series(1, 20000)) TO STDOUT")
            .await
            .unwrap();
        data.next().await.unwrap().unwrap();
    }
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&admin, "t").await, 1);
    PooledConn::release(conn);
    assert_eq!(pool.status().counters.discarded(), 0);
}

#[tokio::test]
async fn malformed_copy_data_is_the_servers_error_and_the_connection_stays_usable() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    admin.batch_execute("CREATE TABLE t (a int)").await.unwrap();
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let mut sink = conn.copy_in("COPY t FROM STDIN").await.unwrap();
    sink.send(Bytes::from_static(b"1\nnot a number\n3\n"))
        .await
        .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert!(matches!(err, Error::Db(_)), "{err:?}");
    assert_eq!(err.code().map(|c| c.code()), Some("22P02"));
    assert!(err.to_string().contains("not a number"), "{err}");
    // Ended: further use of the sink says so.
    let again = sink.finish().await.unwrap_err();
    assert!(again.to_string().contains("already ended"), "{again}");
    drop(sink);
    assert_eq!(count(&admin, "t").await, 0);
    let one: i32 = conn.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    PooledConn::release(conn);
    assert_eq!(pool.status().counters.discarded(), 0);
}

#[tokio::test]
async fn copy_statements_go_only_through_the_copy_methods() {
    let (tdb, builder) = setup().await;
    tdb.connect()
        .await
        .batch_execute("CREATE TABLE t (a int)")
        .await
        .unwrap();
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let refused = |r: Result<u64, Error>, needle: &str| match r {
        Err(Error::Refused { reason, .. }) => assert!(reason.contains(needle), "{reason}"),
        other => panic!("not refused: {other:?}"),
    };
    refused(db.execute("COPY t FROM STDIN", &[]).await, "use `copy_in`");
    let mut conn = db.acquire().await.unwrap();
    refused(
        conn.execute("copy t to stdout", &[]).await,
        "use `copy_out`",
    );
    let err = conn.batch_execute("COPY t FROM STDIN").await.unwrap_err();
    assert!(err.to_string().contains("copy_in"), "{err}");
    let err = conn.prepare("COPY t FROM STDIN").await.unwrap_err();
    assert!(err.to_string().contains("copy_in"), "{err}");
    let err = conn.copy_in("SELECT 1").await.unwrap_err();
    assert!(err.to_string().contains("`copy_in` takes"), "{err}");
    let err = conn.copy_in("COPY t TO STDOUT").await.unwrap_err();
    assert!(err.to_string().contains("read it with `copy_out`"), "{err}");
    let err = conn.copy_out("COPY t FROM STDIN").await.unwrap_err();
    assert!(err.to_string().contains("feed it with `copy_in`"), "{err}");
    let err = conn
        .copy_in("COPY t FROM STDIN; SELECT 1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("runs alone"), "{err}");
    // A COPY from a server file is an ordinary statement (refused here only by the
    // server: the file does not exist).
    let err = conn
        .execute("COPY t FROM '/nonexistent/pool-core-test.csv'", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Db(_)), "{err:?}");
    // Nothing was sent for the refusals: the connection is fine.
    let one: i32 = conn.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}
