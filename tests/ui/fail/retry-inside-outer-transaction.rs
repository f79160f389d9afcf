// A retrying transaction called with a transaction: a serialization failure aborts the
// outer transaction, which re-running a savepoint cannot repair.
use pool_core::{transactional, Error, Tx};

#[transactional(isolation = serializable, retry = 3)]
async fn debit(tx: &mut Tx, id: i64) -> Result<u64, Error> {
    tx.execute("UPDATE account SET cents = cents - 1 WHERE id = $1", &[&id]).await
}

#[transactional]
async fn month_end(tx: &mut Tx) -> Result<(), Error> {
    debit(tx, 1).await?;
    Ok(())
}

fn main() {}
