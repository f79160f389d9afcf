// DEFERRABLE only means something for SERIALIZABLE READ ONLY transactions.
use pool_core::{transactional, Error, Tx};

#[transactional(isolation = repeatable_read, deferrable)]
async fn report(tx: &mut Tx) -> Result<i64, Error> {
    Ok(tx.query_one("SELECT count(*) FROM item", &[]).await?.get(0))
}

fn main() {}
