// The right way: deferrable with serializable, read_only.
#![allow(dead_code)]
use pool_core::{transactional, Error, Tx};

#[transactional(isolation = serializable, read_only, deferrable)]
async fn report(tx: &mut Tx) -> Result<i64, Error> {
    Ok(tx.query_one("SELECT count(*) FROM item", &[]).await?.get(0))
}

fn main() {}
