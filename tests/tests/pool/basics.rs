//! Checkout, statements, return: the happy paths.

use crate::common::*;

#[tokio::test]
async fn acquire_query_release() {
    let (tdb, builder) = setup().await;
    let pool = builder.max_size(2).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let row = conn
        .query_one("SELECT 40 + $1::int", &[&2i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    let pid = conn.backend_pid();
    let admin = tdb.admin().await;
    assert_eq!(backend_state(&admin, pid).await.as_deref(), Some("idle"));
    drop(conn);
    let status = pool.status();
    assert_eq!((status.size, status.idle, status.in_use), (1, 1, 0));
    assert_eq!(status.counters.acquires, 1);
    // The same connection is reused.
    let conn = db.acquire().await.unwrap();
    assert_eq!(conn.backend_pid(), pid);
}
