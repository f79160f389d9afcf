//! Growth that follows demand: a spike of short requests opens at most a couple of
//! connections beyond those already open (each is a server process kept for
//! `idle_timeout`); sustained demand reaches `max_size`; holds that suddenly grow long
//! still get their connections.

use std::time::Duration;

use pool_core::Pool;

use crate::common::{eventually, setup};

/// `n` tasks at once, each holding a connection for one statement of `hold`.
async fn burst(pool: &Pool, n: usize, hold: Duration) {
    let secs = hold.as_secs_f64();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut db = pool.db();
                let mut conn = db.acquire().await.unwrap();
                conn.execute("SELECT pg_sleep($1)", &[&secs]).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn warm(builder: pool_core::Builder, min_idle: usize, max: usize) -> Pool {
    let pool = builder
        .min_idle(min_idle)
        .max_size(max)
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            pool.status().idle == min_idle
        })
        .await,
        "min_idle not reached: {}",
        pool.status()
    );
    pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_of_short_requests_opens_at_most_two_more() {
    let (_tdb, builder) = setup().await;
    let pool = warm(builder, 5, 10).await;
    for _ in 0..3 {
        burst(&pool, 50, Duration::from_millis(2)).await;
    }
    let s = pool.status();
    assert!(s.counters.created <= 7, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_demand_reaches_max_size() {
    let (_tdb, builder) = setup().await;
    let pool = warm(builder, 2, 10).await;
    let load: Vec<_> = (0..30)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut db = pool.db();
                for _ in 0..40 {
                    let mut conn = db.acquire().await.unwrap();
                    conn.execute("SELECT pg_sleep(0.02)", &[]).await.unwrap();
                }
            })
        })
        .collect();
    let reached = eventually(Duration::from_secs(10), || async {
        pool.status().size == 10
    })
    .await;
    assert!(
        reached,
        "max_size not reached under load: {}",
        pool.status()
    );
    for task in load {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_that_grow_long_still_get_their_connections() {
    let (_tdb, builder) = setup().await;
    let pool = warm(builder, 2, 10).await;
    // The pool learns that holds are short…
    burst(&pool, 20, Duration::from_millis(1)).await;
    // …then ten tasks must hold a connection at the same time.
    let all_held = std::sync::Arc::new(tokio::sync::Barrier::new(10));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (pool, all_held) = (pool.clone(), all_held.clone());
            tokio::spawn(async move {
                let mut db = pool.db();
                let conn = db.acquire().await.unwrap();
                all_held.wait().await;
                drop(conn);
            })
        })
        .collect();
    for task in tasks {
        // A watchdog: without growth the tasks wait until acquire_timeout and fail.
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the ten holders never all got a connection")
            .unwrap();
    }
    assert_eq!(pool.status().size, 10);
}
