//! Broken connections are never handed out.

use std::time::Duration;

use crate::common::*;

#[tokio::test]
async fn terminated_idle_backends_are_replaced_transparently() {
    let (tdb, builder) = setup().await;
    let admin = tdb.admin().await;
    let pool = builder
        .max_size(4)
        .validate_after_idle(Duration::ZERO)
        .build()
        .unwrap();
    {
        let mut db = pool.db();
        let _set = db.acquire_many(4).await.unwrap();
    }
    assert_eq!(pool.status().idle, 4);
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'pool-core'",
            &[&tdb.name()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 4);
    let mut db = pool.db();
    for i in 0..100 {
        let mut conn = db
            .acquire()
            .await
            .unwrap_or_else(|e| panic!("acquire {i}: {e}"));
        let one: i32 = conn
            .query_one("SELECT 1", &[])
            .await
            .unwrap_or_else(|e| panic!("query {i}: {e}"))
            .get(0);
        assert_eq!(one, 1);
    }
    let c = pool.status().counters;
    assert!(c.discarded_broken + c.discarded_validation >= 4, "{:?}", c);
    assert!(pool.status().size <= 4);
}

#[tokio::test]
async fn a_connection_broken_while_held_is_discarded_on_return() {
    let (tdb, builder) = setup().await;
    let admin = tdb.admin().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let pid = conn.backend_pid();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let err = conn.query("SELECT 1", &[]).await.unwrap_err();
    assert!(err.is_closed(), "{err}");
    assert!(conn.is_broken());
    drop(conn);
    let mut conn = db.acquire().await.unwrap();
    assert_ne!(conn.backend_pid(), pid);
    assert_clean(&admin, &mut conn).await;
    assert_eq!(pool.status().counters.discarded_broken, 1);
}

#[tokio::test]
async fn max_lifetime_and_idle_timeout_are_enforced_in_the_background() {
    let (_tdb, builder) = setup().await;
    let pool = builder
        .max_size(3)
        .min_idle(1)
        .idle_timeout(Duration::from_millis(200))
        .max_lifetime(Duration::from_millis(600))
        .build()
        .unwrap();
    {
        let mut db = pool.db();
        let _set = db.acquire_many(3).await.unwrap();
    }
    assert_eq!(pool.status().idle, 3);
    // Idle connections above min_idle are closed after idle_timeout.
    let shrunk = eventually(Duration::from_secs(5), || async { pool.status().size == 1 }).await;
    assert!(shrunk, "{}", pool.status());
    assert!(pool.status().counters.discarded_idle >= 2);
    // The survivor expires (max_lifetime) and min_idle opens a replacement.
    let replaced = eventually(Duration::from_secs(5), || async {
        let s = pool.status();
        s.counters.discarded_expired >= 1 && s.idle == 1
    })
    .await;
    assert!(replaced, "{}", pool.status());
}
