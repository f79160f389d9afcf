//! `resize` and `drain` at run time, checked against the server's own list of backends.

use std::collections::HashSet;
use std::time::Duration;

use pool_core::Error;

use crate::common::{backends, eventually, setup};

#[tokio::test]
async fn growing_serves_a_waiter_at_once() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let _held = db.acquire().await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut db = pool.db();
            let conn = db.acquire().await?;
            Ok::<i32, Error>(conn.backend_pid())
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            pool.status().waiting == 1
        })
        .await
    );
    pool.resize(2).unwrap();
    // Served while the first connection is still held.
    let pid = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter was not served after growing")
        .unwrap()
        .unwrap();
    assert!(pid > 0);
    assert_eq!(pool.max_size(), 2);
}

#[tokio::test]
async fn shrinking_closes_idle_now_and_in_use_on_return() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    let pool = builder.max_size(4).build().unwrap();
    let mut db = pool.db();
    // Four connections open, then all idle.
    drop(db.acquire_many(4).await.unwrap());
    assert_eq!(pool.status().idle, 4);
    pool.resize(2).unwrap();
    let s = pool.status();
    assert_eq!((s.size, s.idle, s.max_size), (2, 2, 2), "{s}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            backends(&admin, tdb.name()).await.len() == 2
        })
        .await
    );
    // In use: three held, shrink to one; they close as they come back.
    pool.resize(3).unwrap();
    let mut set = db.acquire_many(3).await.unwrap();
    pool.resize(1).unwrap();
    assert_eq!(
        pool.status().size,
        3,
        "in-use connections are never taken away"
    );
    for conn in set.iter_mut() {
        conn.execute("SELECT 1", &[]).await.unwrap();
    }
    drop(set);
    let s = pool.status();
    assert_eq!((s.size, s.idle), (1, 1), "{s}");
    assert_eq!(s.counters.discarded_retired, 4, "{s}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            backends(&admin, tdb.name()).await.len() == 1
        })
        .await
    );
}

#[tokio::test]
async fn bad_sizes_are_config_errors_that_say_what_to_do() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(4).min_idle(2).build().unwrap();
    for (n, hint) in [(0, "at least 1"), (1, "at least min_idle")] {
        match pool.resize(n) {
            Err(Error::Config { field, problem, .. }) => {
                assert_eq!(field, "max_size");
                assert!(problem.contains(hint), "{problem}");
            }
            other => panic!("resize({n}) gave {other:?}"),
        }
    }
    assert_eq!(pool.max_size(), 4);
}

#[tokio::test]
async fn drain_replaces_every_connection_and_no_acquire_fails() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    let pool = builder.max_size(4).build().unwrap();
    let mut db = pool.db();
    drop(db.acquire_many(3).await.unwrap());
    let mut held = db.acquire().await.unwrap();
    let old: HashSet<i32> = backends(&admin, tdb.name())
        .await
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(old.len(), 3);
    // Other tasks keep working through the drain.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut db = pool.db();
                for _ in 0..20 {
                    db.query_one("SELECT 1", &[]).await?;
                }
                Ok::<(), Error>(())
            })
        })
        .collect();
    pool.drain().unwrap();
    held.execute("SELECT 1", &[]).await.unwrap();
    let held_pid = held.backend_pid();
    drop(held);
    drop(db);
    for w in workers {
        w.await
            .unwrap()
            .expect("an acquire failed during the drain");
    }
    let replaced = eventually(Duration::from_secs(5), || async {
        let now: HashSet<i32> = backends(&admin, tdb.name())
            .await
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        now.is_disjoint(&old) && !now.contains(&held_pid)
    })
    .await;
    assert!(replaced, "an old backend is still serving the pool");
    // The three old connections (the held one among them), whatever was idle or in use.
    assert_eq!(
        pool.status().counters.discarded_retired,
        3,
        "{}",
        pool.status()
    );
}
