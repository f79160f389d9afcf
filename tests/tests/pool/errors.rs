//! Errors say what happened and what to do, and never repeat their source's text.

use std::time::Duration;

use pool_core::tokio_postgres::error::SqlState;
use pool_core::{Error, Pool, TimeoutKind};

use crate::common::*;

/// Walks the chain: no message may contain the text of the error below it.
fn assert_no_repeated_source(err: &(dyn std::error::Error + 'static)) {
    let mut current = err;
    while let Some(source) = current.source() {
        let (outer, inner) = (current.to_string(), source.to_string());
        assert!(
            !outer.contains(&inner),
            "message repeats its source:\n  {outer}\n  source: {inner}"
        );
        current = source;
    }
    let top = err.to_string();
    assert!(
        top.chars().next().is_some_and(|c| !c.is_uppercase()),
        "not lowercase: {top}"
    );
    assert!(!top.ends_with('.'), "trailing period: {top}");
}

#[tokio::test]
async fn real_errors_follow_the_message_rules() {
    let (tdb, builder) = setup().await;
    let pool = builder
        .max_size(1)
        .statement_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut db = pool.db();
    let mut errors: Vec<Error> = Vec::new();
    {
        let mut conn = db.acquire().await.unwrap();
        errors.push(conn.query("SELEC 1", &[]).await.unwrap_err()); // Db
        errors.push(conn.query("SELECT $1::int", &[&"text"]).await.unwrap_err()); // Client
        errors.push(
            conn.query_one("SELECT 1 WHERE false", &[])
                .await
                .unwrap_err(),
        ); // RowCount
        errors.push(conn.query("SELECT pg_sleep(5)", &[]).await.unwrap_err()); // statement Timeout
        errors.push(conn.execute("LOCK TABLE x", &[]).await.unwrap_err()); // Refused
        errors.push(conn.batch_execute("BEGIN").await.unwrap_err()); // Refused (control)
    }
    let admin = tdb.admin().await;
    {
        let mut conn = db.acquire().await.unwrap();
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&conn.backend_pid()])
            .await
            .unwrap();
        errors.push(conn.query("SELECT 1", &[]).await.unwrap_err()); // Broken
    }
    // Connect failures: unknown database, unreachable server.
    let mut bad = tdb.config();
    bad.dbname("no_such_database");
    errors.push(Pool::connect(bad).await.unwrap_err());
    let unreachable = Pool::builder("postgres://postgres@127.0.0.1:1/x")
        .acquire_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    errors.push(unreachable.db().acquire().await.unwrap_err()); // Timeout with a last connect error
    errors.push(
        Pool::builder("postgres://postgres@127.0.0.1/x")
            .max_size(0)
            .build()
            .unwrap_err(),
    ); // Config

    let kinds: Vec<&str> = errors
        .iter()
        .map(|e| match e {
            Error::Db(_) => "db",
            Error::Client(_) => "client",
            Error::RowCount { .. } => "rowcount",
            Error::Timeout(_) => "timeout",
            Error::Refused { .. } => "refused",
            Error::Broken { .. } => "broken",
            Error::Connect { .. } => "connect",
            Error::Config { .. } => "config",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "db", "client", "rowcount", "timeout", "refused", "refused", "broken", "connect",
            "timeout", "config"
        ]
    );
    for e in &errors {
        assert_no_repeated_source(e);
    }
    // The server's words are in the Db message, and its code is inspectable.
    assert!(
        errors[0].to_string().contains("syntax error"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[0].code(), Some(&SqlState::SYNTAX_ERROR));
    assert_eq!(errors[7].code(), Some(&SqlState::INVALID_CATALOG_NAME));
    // An unreachable server is never reported as a bare timeout.
    let t = errors[8].as_timeout().unwrap();
    assert_eq!(t.kind(), TimeoutKind::Acquire);
    assert!(
        t.last_connect_error().is_some(),
        "the connect error is lost"
    );
    assert!(
        errors[8]
            .to_string()
            .contains("an attempt to open a connection failed during the wait")
    );
    assert!(errors[3].is_timeout() && errors[6].is_closed());
}

/// A connect failure says what the server said, not only its SQLSTATE.
#[tokio::test]
async fn a_connect_error_shows_the_servers_message() {
    let (tdb, _) = setup().await;
    let mut bad = tdb.config();
    bad.dbname("no_such_database");
    let err = Pool::connect(bad).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("3D000"), "{text}");
    assert!(
        text.contains("database \"no_such_database\" does not exist"),
        "{text}"
    );
    assert_no_repeated_source(&err);
}

/// A driver error that did not come through the pool's own calls converts with `?`.
async fn text_of_int(conn: &mut pool_core::Conn) -> pool_core::Result<String> {
    let row = conn.query_one("SELECT 1", &[]).await?;
    let text: String = row.try_get(0)?;
    Ok(text)
}

#[tokio::test]
async fn driver_errors_convert_into_the_pools_error() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let err = text_of_int(&mut conn).await.unwrap_err();
    assert!(matches!(err, Error::Client(_)), "{err}");
    // Not a connection problem: the connection is still good.
    assert!(!conn.is_broken());
}
