// A `#[transactional]` helper called from a transaction with `&mut tx`: `tx` is
// already a `&mut Tx`, so this is a `&mut &mut Tx`.
use pool_core::{transactional, Error, Tx};

#[transactional]
async fn balance(tx: &mut Tx, id: i32) -> Result<i64, Error> {
    let row = tx.query_one("SELECT balance FROM account WHERE id = $1", &[&id]).await?;
    Ok(row.get(0))
}

#[transactional]
async fn total(tx: &mut Tx, a: i32, b: i32) -> Result<i64, Error> {
    Ok(balance(&mut tx, a).await? + balance(&mut tx, b).await?)
}

fn main() {}
