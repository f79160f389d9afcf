//! Names given to `lock_table` and `listen` stay names: whatever the input, nothing but
//! the intended statement runs on the server, and a name the server cannot take is a
//! clear error with nothing sent.

use pool_core::{Error, LockMode};
use tokio_postgres::Client;

use crate::common::setup;

/// Inputs that try to end the identifier, or that the server would mangle.
fn hostile() -> Vec<String> {
    vec![
        "\"t\" IN ACCESS SHARE MODE; DROP TABLE victim; --\"".to_owned(),
        "t; DROP TABLE victim".to_owned(),
        "t\"; DROP TABLE victim; --".to_owned(),
        "\"t\"; DROP TABLE victim; --\"".to_owned(),
        "\"unterminated".to_owned(),
        "\"a\"\"b\" \"c\"".to_owned(),
        "t /* comment */".to_owned(),
        "t -- comment".to_owned(),
        "a.b.c.d".to_owned(),
        "..".to_owned(),
        String::new(),
        "t\0; DROP TABLE victim".to_owned(),
        "x".repeat(10 * 1024),
    ]
}

async fn victim_exists(admin: &Client) -> bool {
    admin
        .query_one("SELECT to_regclass('public.victim') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0)
}

/// The relations a backend holds locks on, by name.
async fn locked_by(admin: &Client, pid: i32) -> Vec<String> {
    admin
        .query(
            "SELECT c.relname::text FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE l.pid = $1 AND c.relkind = 'r' ORDER BY 1",
            &[&pid],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn lock_table_never_runs_more_than_the_lock() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    admin
        .batch_execute(
            "CREATE TABLE victim (x int); CREATE TABLE t (x int); \
             CREATE TABLE \"we\"\"ird\" (x int); CREATE TABLE \"a\"\"b\" (x int); \
             CREATE TABLE \"Mixed.Case\" (x int)",
        )
        .await
        .unwrap();
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let pid = conn.backend_pid();
    for name in hostile() {
        let mut tx = conn.begin().await.unwrap();
        let res = tx.lock_table(&name, LockMode::AccessShare).await;
        let locked = locked_by(&admin, pid).await;
        tx.rollback().await.unwrap();
        assert!(res.is_err(), "{:.60?} was accepted", name);
        assert!(locked.is_empty(), "{:.60?} locked {locked:?}", name);
        assert!(
            victim_exists(&admin).await,
            "{:.60?} dropped the victim",
            name
        );
    }
    // Names that are odd but real lock exactly that table.
    for (name, relname) in [
        ("we\"ird", "we\"ird"),
        ("\"a\"\"b\"", "a\"b"),
        ("public.t", "t"),
        ("\"Mixed.Case\"", "Mixed.Case"),
    ] {
        let mut tx = conn.begin().await.unwrap();
        tx.lock_table(name, LockMode::AccessShare).await.unwrap();
        assert_eq!(
            locked_by(&admin, pid).await,
            vec![relname.to_owned()],
            "{name}"
        );
        tx.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn names_the_server_cannot_take_are_refused_before_sending() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    for name in [
        "t\0x".to_owned(),
        "x".repeat(64),
        String::new(),
        "\"open".to_owned(),
    ] {
        let mut tx = conn.begin().await.unwrap();
        let err = tx
            .lock_table(&name, LockMode::AccessShare)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err}");
        // Nothing reached the server, so the transaction is not aborted.
        tx.execute("SELECT 1", &[]).await.unwrap();
        tx.rollback().await.unwrap();
    }
    for name in ["c\0x".to_owned(), "x".repeat(64), String::new()] {
        let err = conn.listen(&name).await.unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err}");
    }
}

#[tokio::test]
async fn listen_listens_to_exactly_the_channel_named() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    admin
        .batch_execute("CREATE TABLE victim (x int)")
        .await
        .unwrap();
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let mut names = hostile();
    names.retain(|n| !n.is_empty() && !n.contains('\0') && n.len() < 64);
    names.push("Events.Mixed".to_owned());
    for name in names {
        conn.listen(&name).await.unwrap();
        let channels: Vec<String> = conn
            .query("SELECT pg_listening_channels()", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(channels, vec![name.clone()], "{name:?}");
        assert!(victim_exists(&admin).await, "{name:?} dropped the victim");
        // A notification sent to that exact name arrives.
        admin
            .execute("SELECT pg_notify($1, 'hi')", &[&name])
            .await
            .unwrap();
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), conn.notification())
            .await
            .expect("no notification")
            .unwrap();
        assert_eq!(n.channel(), name);
        conn.batch_execute("UNLISTEN *").await.unwrap();
    }
}
