// The right way: pass `tx` as it is; the helper runs in a savepoint of the caller's
// transaction.
#![allow(dead_code)]
use pool_core::{transactional, Error, Tx};

#[transactional]
async fn balance(tx: &mut Tx, id: i32) -> Result<i64, Error> {
    let row = tx.query_one("SELECT balance FROM account WHERE id = $1", &[&id]).await?;
    Ok(row.get(0))
}

#[transactional]
async fn total(tx: &mut Tx, a: i32, b: i32) -> Result<i64, Error> {
    Ok(balance(tx, a).await? + balance(tx, b).await?)
}

fn main() {}
