//! The incidents in `shared/seeds/`, replayed against the runtime backstops.

use std::sync::OnceLock;
use std::time::Duration;

use pool_core::{Error, Pool, TimeoutKind};

use crate::common::*;

/// Seed 000: a handler holds a pooled connection while a helper checks out a second one
/// through a global pool. With 4 connections and 16 concurrent requests every task
/// holds one and waits for another — the server froze. Here every nested checkout is
/// refused at once, naming both call sites, and nothing waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_nested_checkout_through_a_global_pool_is_refused_at_once() {
    static GLOBAL: OnceLock<Pool> = OnceLock::new();
    let (_tdb, builder) = setup().await;
    // A long acquire timeout: if the backstop failed, the test would hang, not pass.
    let pool = builder
        .max_size(4)
        .acquire_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    GLOBAL.set(pool).unwrap();

    async fn person(id: i32) -> Result<i32, Error> {
        // The helper reaches for the global pool instead of taking the held connection.
        let mut db = GLOBAL.get().unwrap().db();
        let mut conn = db.acquire().await?; // SECOND_SITE
        Ok(conn.query_one("SELECT $1::int", &[&id]).await?.get(0))
    }

    async fn persons_in_group() -> Result<Vec<i32>, Error> {
        let mut db = GLOBAL.get().unwrap().db();
        let mut conn = db.acquire().await?; // FIRST_SITE
        let rows = conn.query("SELECT generate_series(1, 3)", &[]).await?;
        let mut out = Vec::new();
        for row in rows {
            out.push(person(row.get(0)).await?);
        }
        Ok(out)
    }

    let tasks: Vec<_> = (0..16).map(|_| tokio::spawn(persons_in_group())).collect();
    let all = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks))
        .await
        .expect("nested checkouts hung instead of being refused");
    let source = include_str!("seeds.rs");
    let line_of =
        |marker: &str| source.lines().position(|l| l.contains(marker)).unwrap() as u32 + 1;
    for result in all {
        match result.unwrap() {
            Err(Error::NestedCheckout { first, second }) => {
                assert!(first.file().ends_with("seeds.rs") && second.file().ends_with("seeds.rs"));
                assert_eq!(first.line(), line_of("// FIRST_SITE"));
                assert_eq!(second.line(), line_of("// SECOND_SITE"));
            }
            other => panic!("expected a nested-checkout error, got {other:?}"),
        }
    }
    let pool = GLOBAL.get().unwrap();
    let status = pool.status();
    assert_eq!(status.counters.nested_checkouts, 16);
    assert_eq!(status.in_use, 0);
    assert!(pool.holders().is_empty());
}

/// Seed 001: queries without a deadline piled up in `ClientRead` until the server's
/// connection limit. Here a statement past `statement_timeout` fails fast and is
/// cancelled on the server.
#[tokio::test]
async fn seed_001_statement_timeout_fails_fast_and_cancels_on_the_server() {
    let (tdb, builder) = setup().await;
    let pool = builder
        .max_size(1)
        .statement_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let admin = tdb.admin().await;
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let pid = conn.backend_pid();
    let err = conn.query("SELECT pg_sleep(30)", &[]).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(err.as_timeout().unwrap().kind(), TimeoutKind::Statement);
    assert!(err.to_string().contains("pg_sleep(30)"), "{err}");
    let gone = eventually(Duration::from_secs(3), || async {
        backend_state(&admin, pid).await.as_deref() == Some("idle")
    })
    .await;
    assert!(gone, "pg_sleep(30) is still running on the server");
    // The same connection is usable again, outside any transaction.
    assert_clean(&admin, &mut conn).await;
    assert_eq!(pool.status().counters.statement_timeouts, 1);
}

/// Seed 001, the other half: a query whose future is dropped (a cancelled request, a
/// `select!` that lost) is cancelled on the server, and the next borrower of a pool of
/// one gets the connection back promptly.
#[tokio::test]
async fn seed_001_dropped_query_is_cancelled_and_the_next_borrower_is_served() {
    let (tdb, builder) = setup().await;
    let pool = builder
        .max_size(1)
        .acquire_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let admin = tdb.admin().await;
    let worker_pool = pool.clone();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let worker = tokio::spawn(async move {
        let mut db = worker_pool.db();
        let mut conn = db.acquire().await.unwrap();
        started_tx.send(conn.backend_pid()).unwrap();
        conn.query("SELECT pg_sleep(30)", &[]).await
    });
    let pid = started_rx.await.unwrap();
    let running = eventually(Duration::from_secs(3), || async {
        backend_state(&admin, pid).await.as_deref() == Some("active")
    })
    .await;
    assert!(running);
    worker.abort();
    assert!(worker.await.unwrap_err().is_cancelled());
    // acquire_timeout is 1 s: a connection left busy would fail this acquire.
    let mut db = pool.db();
    let mut conn = db
        .acquire()
        .await
        .expect("the next borrower was not served within a second");
    assert_eq!(
        conn.backend_pid(),
        pid,
        "the connection should have been recovered, not replaced"
    );
    assert_clean(&admin, &mut conn).await;
    assert_eq!(pool.status().counters.cancelled_statements, 1);
}
