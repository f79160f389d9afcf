//! Waiting for a connection: a connection handed over through the queue is recorded as
//! the waiter's at once, every waiter that outlives `acquire_timeout` is failed by the
//! pool's deadline sweeper and leaves the queue, and waiters still time out after the
//! runtime the sweeper first ran on is gone.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use pool_core::{Error, TaskKey};

use crate::common::*;

fn line_of(marker: &str) -> u32 {
    let source = include_str!("waiting.rs");
    let line = source
        .lines()
        .position(|l| l.contains(marker) && !l.contains("line_of"))
        .unwrap();
    u32::try_from(line + 1).unwrap()
}

#[tokio::test]
async fn a_handed_over_connection_is_recorded_as_the_waiters() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    drop(db.acquire().await.unwrap()); // opens the connection
    let before = pool.status().counters;
    let held = db.acquire().await.unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let waiter_pool = pool.clone();
    let waiter = tokio::spawn(async move {
        let mut db = waiter_pool.db();
        let conn = db.acquire().await.unwrap(); // WAITER_SITE
        // The hand-over made this task the holder: a second checkout from it is the
        // nested checkout, refused naming the first site.
        let nested = waiter_pool.db().acquire().await.map(drop).unwrap_err();
        let _ = got_tx.send(nested);
        let _ = release_rx.await;
        drop(conn);
    });
    while pool.status().waiting < 1 {
        tokio::task::yield_now().await;
    }
    drop(held);
    let nested = got_rx.await.unwrap();
    let Error::NestedCheckout { first, .. } = nested else {
        panic!("expected a nested checkout error, got {nested:?}")
    };
    assert_eq!(first.line(), line_of("// WAITER_SITE"));
    let holders = pool.holders();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(holders[0].site.line(), line_of("// WAITER_SITE"));
    assert!(matches!(holders[0].task, TaskKey::Task(_)));
    let counters = pool.status().counters;
    assert_eq!(
        (
            counters.acquires - before.acquires,
            counters.waits - before.waits
        ),
        (2, 1)
    );
    release_tx.send(()).unwrap();
    waiter.await.unwrap();
    assert!(pool.holders().is_empty());
    assert_eq!(pool.status().idle, 1);
}

#[tokio::test]
async fn a_waiter_dropped_after_the_hand_over_gives_the_connection_back() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    drop(db.acquire().await.unwrap()); // opens the connection
    let held = db.acquire().await.unwrap();
    let before = pool.status().counters;
    let (queued_tx, queued_rx) = tokio::sync::oneshot::channel();
    let (drop_tx, drop_rx) = tokio::sync::oneshot::channel::<()>();
    let waiter_pool = pool.clone();
    let waiter = tokio::spawn(async move {
        let mut db = waiter_pool.db();
        let mut waiting = pin!(db.acquire());
        let first = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        let _ = queued_tx.send(());
        // Not polled again: the connection is handed over while this task waits here…
        let _ = drop_rx.await;
        // …and the acquire is dropped without ever taking it.
    });
    queued_rx.await.unwrap();
    assert_eq!(pool.status().waiting, 1);
    drop(held);
    assert_eq!(pool.holders().len(), 1, "recorded as the waiter's");
    drop_tx.send(()).unwrap();
    waiter.await.unwrap();
    let status = pool.status();
    assert!(pool.holders().is_empty(), "{:?}", pool.holders());
    assert_eq!((status.waiting, status.idle, status.in_use), (0, 1, 0));
    assert_eq!(status.counters.acquires, before.acquires, "{status}");
    let mut conn = db.acquire().await.unwrap();
    let one: i32 = conn.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test]
async fn every_waiter_past_its_deadline_times_out_and_leaves_the_queue() {
    let (_tdb, builder) = setup().await;
    let pool = builder
        .max_size(1)
        .acquire_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut db = pool.db();
    drop(db.acquire().await.unwrap()); // opens the connection
    let held = db.acquire().await.unwrap();
    let before = pool.status().counters;
    // Half the waiters give up by themselves before the deadline; the sweeper fails the
    // other half.
    let waiters: Vec<_> = (0..20)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut db = pool.db();
                if i % 2 == 0 {
                    tokio::time::timeout(Duration::from_millis(50), db.acquire())
                        .await
                        .map(|r| r.map(drop))
                        .ok()
                } else {
                    Some(db.acquire().await.map(drop))
                }
            })
        })
        .collect();
    let mut timed_out = 0;
    for w in waiters {
        match w.await.unwrap() {
            None => {}
            Some(Err(e)) if e.is_timeout() => timed_out += 1,
            Some(other) => panic!("expected a timeout, got {other:?}"),
        }
    }
    assert_eq!(timed_out, 10);
    let status = pool.status();
    assert_eq!(status.waiting, 0, "{status}");
    assert_eq!(status.counters.timeouts - before.timeouts, 10, "{status}");
    assert_eq!(status.counters.waits - before.waits, 10, "{status}");
    // The pool is not wedged: the connection goes straight to the next borrower.
    drop(held);
    let mut other = pool.db();
    let conn = other.acquire().await.unwrap();
    assert_eq!(pool.status().counters.waits - before.waits, 10);
    drop(conn);
}

#[test]
fn waiters_still_time_out_after_the_sweepers_runtime_is_gone() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    let (tdb, builder) = first.block_on(setup());
    let pool = builder
        .max_size(1)
        .acquire_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let waiter = |pool: pool_core::Pool| async move {
        let mut db = pool.db();
        let held = db.acquire().await.unwrap();
        let other = pool.clone();
        // A hung waiter fails the test instead of hanging it.
        let err = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::spawn(async move { other.db().acquire().await.map(drop) }),
        )
        .await
        .expect("the waiter was never failed: no deadline sweeper")
        .unwrap()
        .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        drop(held);
    };
    // The sweeper starts on the first runtime…
    first.block_on(waiter(pool.clone()));
    drop(first);
    // …which is gone now, and with it the sweeper (and the connection it drove).
    let second = runtime();
    second.block_on(waiter(pool.clone()));
    assert_eq!(pool.status().counters.timeouts, 2);
    drop(second);
    drop(tdb);
}
