//! An exhausted pool says who holds its connections.

use std::time::Duration;

use pool_core::{Error, TimeoutKind};

use crate::common::*;

#[tokio::test]
async fn acquire_timeout_names_the_holders_checkout_sites() {
    let (_tdb, builder) = setup().await;
    let pool = builder
        .max_size(2)
        .acquire_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut db1 = pool.db();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let holder_pool = pool.clone();
    let holder = tokio::spawn(async move {
        let mut db = holder_pool.db();
        let _held = db.acquire().await.unwrap(); // HOLDER_SITE
        let _ = rx.await;
    });
    // One connection is held by another task, the other by this one.
    let _c1 = db1.acquire().await.unwrap(); // MAIN_SITE
    while pool.status().in_use < 2 {
        tokio::task::yield_now().await;
    }
    let waiter_pool = pool.clone();
    let err = tokio::spawn(async move { waiter_pool.db().acquire().await.map(drop) })
        .await
        .unwrap()
        .unwrap_err();
    let Error::Timeout(t) = &err else {
        panic!("expected a timeout, got {err:?}")
    };
    assert_eq!(t.kind(), TimeoutKind::Acquire);
    let source = include_str!("exhaustion.rs");
    let line_of = |marker: &str| source.lines().position(|l| l.contains(marker)).unwrap() + 1;
    let message = err.to_string();
    for marker in ["// HOLDER_SITE", "// MAIN_SITE"] {
        let site = format!("exhaustion.rs:{}:", line_of(marker));
        assert!(message.contains(&site), "{message}\n  does not name {site}");
    }
    assert_eq!(t.holders().len(), 2);
    assert_eq!(t.status().unwrap().in_use, 2);
    assert!(message.contains("waiting for a connection"), "{message}");
    assert_eq!(pool.status().counters.timeouts, 1);
    let _ = tx.send(());
    holder.await.unwrap();
}

#[tokio::test]
async fn max_waiting_fails_fast() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).max_waiting(2).build().unwrap();
    let mut db = pool.db();
    let _held = db.acquire().await.unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.db().acquire().await.map(drop) })
        })
        .collect();
    while pool.status().waiting < 2 {
        tokio::task::yield_now().await;
    }
    let other = pool.clone();
    let err = tokio::spawn(async move { other.db().acquire().await.map(drop) })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyWaiters {
                waiting: 2,
                max_waiting: 2
            }
        ),
        "{err}"
    );
    drop(_held);
    for w in waiters {
        w.await.unwrap().unwrap();
    }
}
