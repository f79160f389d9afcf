//! Seed 003: connections never returned on error paths filled the pool after 30–45
//! minutes. Here every path — error, early return, panic, cancellation, inside and
//! outside transactions — returns the connection clean.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pool_core::{Error, Pool};

use crate::common::*;

async fn one_path(pool: &Pool, path: usize) -> Result<(), Error> {
    let mut db = pool.db();
    let mut conn = db.acquire().await?;
    match path % 7 {
        0 => {
            conn.query("SELECT 1", &[]).await?;
        }
        1 => {
            // A server error, returned with `?`.
            conn.query("SELEC broken", &[]).await?;
        }
        2 => panic!("handler panicked while holding a connection"),
        3 => {
            let mut tx = conn.begin().await?;
            tx.execute("INSERT INTO t VALUES (1)", &[]).await?;
            // An error inside the transaction: early return, the Tx is dropped.
            tx.execute("INSERT INTO missing_table VALUES (1)", &[])
                .await?;
            tx.commit().await?;
        }
        4 => {
            let mut tx = conn.begin().await?;
            tx.execute("INSERT INTO t VALUES (1)", &[]).await?;
            panic!("handler panicked inside a transaction");
        }
        5 => {
            // The request is cancelled mid-statement.
            let _ = tokio::time::timeout(
                Duration::from_millis(2),
                conn.query("SELECT pg_sleep(0.02)", &[]),
            )
            .await;
        }
        _ => {
            let mut tx = conn.begin().await?;
            tx.execute("INSERT INTO t VALUES (2)", &[]).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_003_every_error_path_returns_the_connection_clean() {
    let (tdb, builder) = setup().await;
    let admin = tdb.admin().await;
    admin.batch_execute("SELECT 1").await.unwrap();
    let setup_client = tdb.connect().await;
    setup_client
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .unwrap();
    let pool = builder.max_size(4).build().unwrap();

    let next = Arc::new(AtomicUsize::new(0));
    const TOTAL: usize = 2100;
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= TOTAL {
                        break;
                    }
                    // Panics are contained per request, as a web framework would.
                    let pool = pool.clone();
                    let _ = tokio::spawn(async move { one_path(&pool, i).await }).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }

    // Recovery and cleaning happen off the callers' paths; give them a moment.
    let settled = eventually(Duration::from_secs(10), || async {
        pool.status().in_use == 0
    })
    .await;
    assert!(settled, "connections still in use: {}", pool.status());
    assert!(
        pool.holders().is_empty(),
        "holders left: {:?}",
        pool.holders()
    );
    let status = pool.status();
    assert!(status.size <= 4);
    assert_eq!(status.counters.acquires, TOTAL as u64);
    let stuck: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state <> 'idle' \
             AND application_name = 'pool-core'",
            &[&tdb.name()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stuck, 0, "backends left busy or idle in transaction");
    // Only committed rows of path 6 are there: panics and errors rolled back.
    let ones: i64 = admin_count(&tdb, "SELECT count(*) FROM t WHERE x = 1").await;
    assert_eq!(ones, 0, "work from failed transactions was committed");
    // Full strength: all four connections at once, each clean.
    let mut db = pool.db();
    let mut set = db
        .acquire_many(4)
        .await
        .expect("pool not back at full strength");
    for conn in set.iter_mut() {
        assert_clean(&admin, conn).await;
    }
}

async fn admin_count(tdb: &tests::harness::TestDb, sql: &str) -> i64 {
    tdb.connect()
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}
