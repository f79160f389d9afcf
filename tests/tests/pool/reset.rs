//! Session state one borrower leaves behind never reaches the next.

use crate::common::*;

#[tokio::test]
async fn session_state_does_not_survive_to_the_next_borrower() {
    let (tdb, builder) = setup().await;
    let admin = tdb.admin().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let pid = {
        let mut conn = db.acquire().await.unwrap();
        conn.set("work_mem", "7MB").await.unwrap();
        conn.set("application_name", "someone-else").await.unwrap();
        conn.batch_execute("SET search_path TO pg_catalog")
            .await
            .unwrap();
        conn.batch_execute("CREATE TEMP TABLE scratch (x int)")
            .await
            .unwrap();
        conn.query("SELECT pg_advisory_lock(42)", &[])
            .await
            .unwrap();
        conn.listen("events").await.unwrap();
        conn.batch_execute("PREPARE mine AS SELECT 1")
            .await
            .unwrap();
        let pid = conn.backend_pid();
        let locks: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(locks, 1);
        pid
    };
    let mut conn = db.acquire().await.unwrap();
    assert_eq!(
        conn.backend_pid(),
        pid,
        "the same connection must come back, cleaned"
    );
    let row = conn
        .query_one(
            "SELECT current_setting('work_mem'), current_setting('application_name'), \
             current_setting('search_path'), to_regclass('pg_temp.scratch') IS NULL, \
             (SELECT count(*) FROM pg_listening_channels()), \
             (SELECT count(*) FROM pg_prepared_statements WHERE name = 'mine')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "4MB");
    assert_eq!(row.get::<_, String>(1), "pool-core");
    assert_eq!(row.get::<_, String>(2), "\"$user\", public");
    assert!(row.get::<_, bool>(3), "temp table survived");
    assert_eq!(row.get::<_, i64>(4), 0, "LISTEN survived");
    assert_eq!(row.get::<_, i64>(5), 0, "prepared statement survived");
    let locks: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(locks, 0, "advisory lock survived");
    assert_eq!(pool.status().counters.resets_on_return, 1);
}

#[tokio::test]
async fn an_untouched_connection_is_returned_without_a_reset() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    for _ in 0..3 {
        let mut conn = db.acquire().await.unwrap();
        conn.query("SELECT 1", &[]).await.unwrap();
    }
    assert_eq!(pool.status().counters.resets_on_return, 0);
}

#[tokio::test]
async fn after_connect_settings_are_the_baseline_a_reset_restores() {
    let (_tdb, builder) = setup().await;
    let pool = builder
        .max_size(1)
        .after_connect(|conn| {
            Box::pin(async move { conn.set("search_path", "pg_catalog, public").await })
        })
        .build()
        .unwrap();
    let mut db = pool.db();
    {
        let mut conn = db.acquire().await.unwrap();
        conn.set("search_path", "public").await.unwrap();
    }
    let mut conn = db.acquire().await.unwrap();
    let path: String = conn
        .query_one("SELECT current_setting('search_path')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(path, "pg_catalog, public");
}

/// Prepared statements are kept per connection by default (that is what makes repeated
/// statements one round trip); `discard_prepared_on_return` drops them on every return.
#[tokio::test]
async fn prepared_statements_are_discarded_on_return_when_configured() {
    for discard in [false, true] {
        let (_tdb, builder) = setup().await;
        let pool = builder
            .max_size(1)
            .discard_prepared_on_return(discard)
            .build()
            .unwrap();
        let mut db = pool.db();
        let pid = {
            let mut conn = db.acquire().await.unwrap();
            conn.query("SELECT 1 + 1", &[]).await.unwrap();
            conn.backend_pid()
        };
        let mut conn = db.acquire().await.unwrap();
        assert_eq!(conn.backend_pid(), pid);
        let named: i64 = conn
            .query_one(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT 1 + 1'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            named,
            if discard { 0 } else { 1 },
            "discard_prepared_on_return({discard})"
        );
    }
}

/// A full statement cache evicts the least recently used statement, and the evicted one
/// is closed on the server.
#[tokio::test]
async fn a_full_statement_cache_evicts_the_least_recently_used() {
    let (_tdb, builder) = setup().await;
    let pool = builder
        .max_size(1)
        .statement_cache_capacity(3)
        .build()
        .unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    for sql in ["SELECT 1", "SELECT 2", "SELECT 3", "SELECT 1", "SELECT 3"] {
        conn.query(sql, &[]).await.unwrap();
    }
    // The check is a fourth statement: preparing it evicts the least recently used,
    // `SELECT 2` (used once, before both others were used again).
    let rows = conn
        .query(
            "SELECT statement FROM pg_prepared_statements ORDER BY statement",
            &[],
        )
        .await
        .unwrap();
    let kept: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        kept,
        vec![
            "SELECT 1".to_owned(),
            "SELECT 3".to_owned(),
            "SELECT statement FROM pg_prepared_statements ORDER BY statement".to_owned(),
        ]
    );
}
