//! Transactions: commit, rollback, drop, savepoints, aborted transactions.

use pool_core::{Error, Isolation, LockMode, TxOptions};

use crate::common::*;

async fn count(tdb: &tests::harness::TestDb) -> i64 {
    tdb.connect()
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn commit_rollback_and_drop() {
    let (tdb, builder) = setup().await;
    tdb.batch_execute("CREATE TABLE t (x int)").await;
    let admin = tdb.admin().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let pid = conn.backend_pid();

    let mut tx = conn.begin().await.unwrap();
    assert!(in_transaction(&admin, pid).await);
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&tdb).await, 1);

    let mut tx = conn.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count(&tdb).await, 1);

    {
        let mut tx = conn.begin().await.unwrap();
        tx.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
        // dropped: rolled back
    }
    // The rollback is sent at once, not at the next use.
    assert!(
        eventually(std::time::Duration::from_secs(2), || async {
            !in_transaction(&admin, pid).await
        })
        .await
    );
    assert_eq!(count(&tdb).await, 1);
    assert_clean(&admin, &mut conn).await;
}

#[tokio::test]
async fn savepoints_roll_back_alone() {
    let (tdb, builder) = setup().await;
    tdb.batch_execute("CREATE TABLE t (x int)").await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    {
        let mut sp = tx.savepoint().await.unwrap();
        assert_eq!(sp.depth(), 2);
        sp.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
        // A failure inside the savepoint...
        assert!(
            sp.execute("INSERT INTO nope VALUES (1)", &[])
                .await
                .is_err()
        );
        // ...refuses further work without a round trip, and commit rolls back loudly.
        assert!(matches!(
            sp.query("SELECT 1", &[]).await,
            Err(Error::TransactionAborted { .. })
        ));
        assert!(matches!(
            sp.commit().await,
            Err(Error::TransactionAborted { .. })
        ));
    }
    // The outer transaction is intact.
    tx.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
    {
        let mut sp = tx.savepoint().await.unwrap();
        sp.execute("INSERT INTO t VALUES (4)", &[]).await.unwrap();
        sp.commit().await.unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(rows(&tdb).await, vec![1, 3, 4]);
}

#[tokio::test]
async fn a_failed_transaction_cannot_commit_silently() {
    let (tdb, builder) = setup().await;
    tdb.batch_execute("CREATE TABLE t (x int)").await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let _ignored = tx
        .execute("INSERT INTO t VALUES ('not a number')", &[])
        .await;
    // PostgreSQL would turn this COMMIT into a silent ROLLBACK.
    let err = tx.commit().await.unwrap_err();
    assert!(matches!(err, Error::TransactionAborted { .. }), "{err}");
    assert_eq!(count(&tdb).await, 0);
    conn.query("SELECT 1", &[]).await.unwrap();
}

#[tokio::test]
async fn transaction_only_statements_run_in_a_transaction_and_are_refused_outside() {
    let (tdb, builder) = setup().await;
    tdb.batch_execute("CREATE TABLE account (id int, cents int)")
        .await;
    // pg_locks is cluster-wide, but `'account'::regclass` resolves in the test database.
    let admin = tdb.connect().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let pid = conn.backend_pid();

    // Refused before anything is sent, with advice.
    let err = conn
        .execute("LOCK TABLE account IN EXCLUSIVE MODE", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(err.to_string().contains("begin()"), "{err}");
    let err = conn
        .query("SELECT * FROM account FOR UPDATE", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");

    let mut tx = conn
        .begin_with(TxOptions::new().isolation(Isolation::RepeatableRead))
        .await
        .unwrap();
    tx.lock_table("account", LockMode::Exclusive).await.unwrap();
    tx.set_local("lock_timeout", "1s").await.unwrap();
    tx.advisory_xact_lock(7).await.unwrap();
    assert!(tx.try_advisory_xact_lock(8).await.unwrap());
    let locks: Vec<String> = admin
        .query(
            "SELECT locktype || ':' || mode FROM pg_locks WHERE pid = $1 AND \
             (locktype = 'advisory' OR (locktype = 'relation' AND relation = 'account'::regclass)) ORDER BY 1",
            &[&pid],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        locks,
        vec![
            "advisory:ExclusiveLock",
            "advisory:ExclusiveLock",
            "relation:ExclusiveLock"
        ]
    );
    let isolation: String = tx
        .query_one("SHOW transaction_isolation", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(isolation, "repeatable read");
    tx.commit().await.unwrap();
    let left: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE pid = $1 AND \
             (locktype = 'advisory' OR (locktype = 'relation' AND relation = 'account'::regclass))",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "locks outlived the transaction");
}

#[tokio::test]
async fn one_shot_statements_refuse_session_state_before_checking_out() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    for sql in [
        "SET work_mem = '64MB'",
        "SELECT pg_advisory_lock(1)",
        "LISTEN jobs",
        "CREATE TEMP TABLE x (a int)",
        "SELECT currval('s')",
        "LOCK TABLE t",
        "BEGIN",
    ] {
        let err = db.execute(sql, &[]).await.unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{sql}: {err}");
    }
    // Nothing was checked out or sent.
    let status = pool.status();
    assert_eq!((status.counters.acquires, status.size), (0, 0), "{status}");
    assert_eq!(
        db.query_one("SELECT 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
}

#[tokio::test]
async fn advisory_lock_guard_unlocks_on_drop() {
    let (tdb, builder) = setup().await;
    let admin = tdb.admin().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let pid = conn.backend_pid();
    let held = || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    {
        let mut lock = conn.advisory_lock(99).await.unwrap();
        lock.query("SELECT 1", &[]).await.unwrap();
        assert_eq!(held().await, 1);
    }
    assert!(
        eventually(std::time::Duration::from_secs(2), || async {
            held().await == 0
        })
        .await
    );
    let lock = conn
        .try_advisory_lock(99)
        .await
        .unwrap()
        .expect("free again");
    assert!(pool_core::AdvisoryLock::unlock(lock).await.unwrap());
    assert_eq!(held().await, 0);
}

/// A statement's classification is kept with its cached prepared statement, so SQL text
/// found in the cache is not classified again; the placement rules still apply to it
/// wherever it runs next. `FOR UPDATE` prepared (and cached) inside a transaction stays
/// refused on the same connection outside one.
#[tokio::test]
async fn a_cached_statement_keeps_its_placement_rules() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    admin
        .batch_execute(
            "CREATE TABLE cached_rule (id int PRIMARY KEY); INSERT INTO cached_rule VALUES (1)",
        )
        .await
        .unwrap();
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let pid = conn.backend_pid();
    const LOCKING: &str = "SELECT id FROM cached_rule WHERE id = 1 FOR UPDATE";
    for round in 0..2 {
        let mut tx = conn.begin().await.unwrap();
        // In a transaction: allowed, prepared once and then taken from the cache.
        let rows = tx.query(LOCKING, &[]).await.unwrap();
        assert_eq!(rows.len(), 1);
        tx.commit().await.unwrap();
        // Outside one: refused, the first time and after it is cached.
        let err = conn.query(LOCKING, &[]).await.unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "round {round}: {err}");
        assert!(err.to_string().contains("begin()"), "round {round}: {err}");
    }
    assert!(
        backend_state(&admin, pid).await.is_some(),
        "the connection is still the same backend"
    );
    // The text was prepared once: its second run used the cache (and so its kept
    // classification), not a new parse on the server.
    let mut tx = conn.begin().await.unwrap();
    let statements: i64 = tx
        .query_one(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement = $1",
            &[&LOCKING],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(statements, 1);
    tx.commit().await.unwrap();
    // The same text through Db (a one-shot) is refused before a checkout, as ever.
    drop(conn);
    let err = db.query(LOCKING, &[]).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
}
