//! The macros expand to code that must compile in user crates of every edition this
//! library supports. This crate is edition 2021 (the rest of the workspace is 2024) and
//! uses each macro in each shape; building it is the test.

use pool_core::{sql, transactional, with_conn, Conn, Error, LockMode, Tx};

/// A plain helper.
#[with_conn]
pub async fn count(conn: &mut Conn, table: &str) -> Result<i64, Error> {
    let sql = format!("SELECT count(*) FROM {table}");
    Ok(conn.query_one(sql.as_str(), &[]).await?.get(0))
}

/// A transaction calling a helper with its transaction.
#[transactional(isolation = serializable, retry = 3, backoff_ms = 5)]
pub async fn move_cents(tx: &mut Tx, from: i64, to: i64, cents: i64) -> Result<i64, Error> {
    tx.lock_table("account", LockMode::RowExclusive).await?;
    tx.execute(
        sql!("UPDATE account SET cents = cents - $2 WHERE id = $1"),
        &[&from, &cents],
    )
    .await?;
    tx.execute(
        sql!("UPDATE account SET cents = cents + $2 WHERE id = $1"),
        &[&to, &cents],
    )
    .await?;
    nested(tx).await?;
    count(tx, "account").await
}

/// Nested as a savepoint.
#[transactional(read_only)]
pub async fn nested(tx: &mut Tx) -> Result<(), Error> {
    tx.query("SELECT 1", &[]).await?;
    Ok(())
}

/// Methods with `&self` and `&mut self`.
pub struct Repo {
    /// Rows seen so far.
    pub seen: i64,
}

impl Repo {
    /// `&mut self` and a transaction.
    #[transactional]
    pub async fn refresh(&mut self, tx: &mut Tx) -> Result<(), Error> {
        self.seen = tx
            .query_one("SELECT count(*) FROM account", &[])
            .await?
            .get(0);
        Ok(())
    }

    /// `&self` and a connection.
    #[with_conn]
    pub async fn seen(&self, conn: &mut Conn) -> Result<i64, Error> {
        let _ = conn;
        Ok(self.seen)
    }
}
