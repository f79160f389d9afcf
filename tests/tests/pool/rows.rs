//! Typed rows: pool-core's rows are tokio-postgres rows, so the ecosystem's row-mapping
//! derive (`postgres-from-row`) works on them as it does on a plain client, from
//! `query`, `query_one` and row streams, and its errors convert into the pool's.

use futures::TryStreamExt;
use pool_core::Conn;
use pool_core::{Error, with_conn};
use postgres_from_row::FromRow;

use crate::common::setup;

#[derive(Debug, PartialEq, FromRow)]
struct Account {
    id: i32,
    owner: String,
    cents: i64,
    #[from_row(flatten)]
    limits: Limits,
}

#[derive(Debug, PartialEq, FromRow)]
struct Limits {
    daily: Option<i64>,
}

/// A helper that maps rows with the derive and returns the pool's error.
#[with_conn]
async fn accounts(conn: &mut Conn, min: i64) -> Result<Vec<Account>, Error> {
    let rows = conn
        .query(
            "SELECT id, owner, cents, daily FROM account WHERE cents >= $1 ORDER BY id",
            &[&min],
        )
        .await?;
    // `try_from_row` fails with a tokio-postgres error; `?` turns it into the pool's.
    Ok(rows
        .iter()
        .map(Account::try_from_row)
        .collect::<Result<_, _>>()?)
}

#[tokio::test]
async fn the_row_mapping_derive_works_on_pool_rows() {
    let (tdb, builder) = setup().await;
    tdb.connect()
        .await
        .batch_execute(
            "CREATE TABLE account (id int4 PRIMARY KEY, owner text NOT NULL, cents int8 NOT NULL, daily int8);
             INSERT INTO account VALUES (1, 'alice', 500, NULL), (2, 'bob', 50, 1000), (3, 'carol', 900, 20)",
        )
        .await
        .unwrap();
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let rich = accounts(&mut db, 100).await.unwrap();
    assert_eq!(
        rich,
        vec![
            Account {
                id: 1,
                owner: "alice".into(),
                cents: 500,
                limits: Limits { daily: None }
            },
            Account {
                id: 3,
                owner: "carol".into(),
                cents: 900,
                limits: Limits { daily: Some(20) }
            },
        ]
    );

    let mut conn = db.acquire().await.unwrap();
    let bob = Account::from_row(
        &conn
            .query_one(
                "SELECT id, owner, cents, daily FROM account WHERE id = 2",
                &[],
            )
            .await
            .unwrap(),
    );
    assert_eq!(bob.limits.daily, Some(1000));
    // From a row stream, row by row.
    let ids: Vec<i32> = conn
        .query_stream(
            "SELECT id, owner, cents, daily FROM account ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .map_ok(|row| Account::from_row(&row).id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids, [1, 2, 3]);
    // A column the struct needs but the query lacks: a clear error through `?`.
    let row = conn
        .query_one("SELECT id, owner FROM account WHERE id = 1", &[])
        .await
        .unwrap();
    let err: Error = Account::try_from_row(&row).unwrap_err().into();
    assert!(matches!(err, Error::Client(_)), "{err:?}");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("cents"), "{chain}");
}
