// The right way: the retrying transaction is the outermost one; helpers it calls nest.
#![allow(dead_code)]
use pool_core::{transactional, Error, Tx};

#[transactional]
async fn debit(tx: &mut Tx, id: i64) -> Result<u64, Error> {
    tx.execute("UPDATE account SET cents = cents - 1 WHERE id = $1", &[&id]).await
}

#[transactional(isolation = serializable, retry = 3)]
async fn month_end(tx: &mut Tx) -> Result<(), Error> {
    debit(tx, 1).await?;
    Ok(())
}

fn main() {}
