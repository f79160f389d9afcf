//! `before_acquire` and `after_release`: a hook may refuse a connection; one that errors
//! or panics is reported and its connection discarded; nothing leaks either way.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pool_core::{Error, Pool};

use crate::common::{backends, eventually, setup};

/// The pool's books balance and the server agrees: every connection counted exists.
async fn no_leak(pool: &Pool, tdb: &tests::harness::TestDb) {
    let admin = tdb.connect().await;
    let agreed = eventually(Duration::from_secs(5), || async {
        let s = pool.status();
        s.in_use == 0 && s.connecting == 0 && backends(&admin, tdb.name()).await.len() == s.size
    })
    .await;
    assert!(agreed, "{}", pool.status());
}

#[tokio::test]
async fn before_acquire_may_reject_and_another_connection_is_handed_out() {
    let (tdb, builder) = setup().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let pool = builder
        .max_size(2)
        .before_acquire(move |_conn| {
            // The first connection offered is refused.
            let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move { Ok(!first) })
        })
        .build()
        .unwrap();
    let mut db = pool.db();
    db.acquire()
        .await
        .unwrap()
        .query_one("SELECT 1", &[])
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(pool.status().counters.discarded_rejected, 1);
    // Idle connections are looked at too, and so are ones handed to a waiter.
    db.acquire()
        .await
        .unwrap()
        .query_one("SELECT 1", &[])
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    no_leak(&pool, &tdb).await;
}

#[tokio::test]
async fn acquire_many_puts_every_connection_of_the_set_through_before_acquire() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let pool = builder
        .max_size(3)
        .min_idle(3)
        .before_acquire(move |_conn| {
            // The second connection looked at is refused.
            let n = seen.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok(n != 1) })
        })
        .build()
        .unwrap();
    // Three idle connections first: the set is taken from the idle list at once.
    assert!(
        eventually(Duration::from_secs(10), || async {
            pool.status().idle == 3
        })
        .await,
        "{}",
        pool.status()
    );
    let before: Vec<i32> = backends(&admin, tdb.name())
        .await
        .iter()
        .map(|b| b.0)
        .collect();
    let mut db = pool.db();
    let mut set = db.acquire_many(3).await.unwrap();
    let pids: Vec<i32> = set.iter_mut().map(|c| c.backend_pid()).collect();
    // Three looked at, one refused and replaced by a new connection, which was looked at
    // too.
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let status = pool.status();
    assert_eq!(status.counters.discarded_rejected, 1, "{status}");
    assert_eq!(status.counters.acquires, 3, "{status}");
    assert_eq!(
        pids.iter().filter(|p| before.contains(p)).count(),
        2,
        "{pids:?} {before:?}"
    );
    drop(set);
    no_leak(&pool, &tdb).await;
}

#[tokio::test]
async fn a_connection_handed_to_a_waiter_goes_through_before_acquire() {
    let (tdb, builder) = setup().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let pool = builder
        .max_size(1)
        .before_acquire(move |_conn| {
            // The second look (the hand-over to the waiter) refuses.
            let n = seen.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok(n != 1) })
        })
        .build()
        .unwrap();
    let mut db = pool.db();
    let held = db.acquire().await.unwrap();
    let first_pid = held.backend_pid();
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
    drop(held);
    let pid = waiter.await.unwrap().unwrap();
    assert_ne!(pid, first_pid, "the refused connection was handed out");
    let status = pool.status();
    assert_eq!(status.counters.discarded_rejected, 1);
    // Two checkouts: the refused hand-over is not one.
    assert_eq!(status.counters.acquires, 2, "{status}");
    no_leak(&pool, &tdb).await;
}

#[tokio::test]
async fn hooks_that_fail_or_panic_are_reported_and_their_connections_discarded() {
    let (tdb, builder) = setup().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let pool = builder
        .max_size(2)
        .before_acquire(move |_conn| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match n {
                    0 => Err(Error::TransactionAborted {
                        reason: "a failing hook",
                    }),
                    1 => panic!("a panicking hook"),
                    _ => Ok(true),
                }
            })
        })
        .build()
        .unwrap();
    let mut db = pool.db();
    db.acquire()
        .await
        .unwrap()
        .query_one("SELECT 1", &[])
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        pool.status().counters.discarded_hook,
        2,
        "{}",
        pool.status()
    );
    no_leak(&pool, &tdb).await;
}

#[tokio::test]
async fn a_hook_that_always_refuses_ends_at_the_acquire_deadline() {
    let (_tdb, builder) = setup().await;
    let pool = builder
        .max_size(1)
        .acquire_timeout(Duration::from_millis(500))
        .before_acquire(|_conn| Box::pin(async { Ok(false) }))
        .build()
        .unwrap();
    let err = pool.db().acquire().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(pool.status().counters.discarded_rejected >= 1);
}

#[tokio::test]
async fn after_release_may_close_a_connection_and_failures_are_counted() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let pool = builder
        .max_size(1)
        .after_release(move |_conn| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match n {
                    0 => Ok(false),
                    1 => panic!("a panicking hook"),
                    _ => Ok(true),
                }
            })
        })
        .build()
        .unwrap();
    let mut db = pool.db();
    for expect_gone in [true, true, false] {
        let pid = {
            let conn = db.acquire().await.unwrap();
            conn.backend_pid()
        };
        let settled = eventually(Duration::from_secs(5), || async {
            let alive = backends(&admin, tdb.name())
                .await
                .iter()
                .any(|(p, _)| *p == pid);
            pool.status().in_use == 0 && alive != expect_gone
        })
        .await;
        assert!(settled, "expect_gone {expect_gone}: {}", pool.status());
    }
    let c = pool.status().counters;
    assert_eq!((c.discarded_rejected, c.discarded_hook), (1, 1), "{c:?}");
    no_leak(&pool, &tdb).await;
}
