// The right way: retry = N with N >= 1.
#![allow(dead_code)]
use pool_core::{transactional, Error, Tx};

#[transactional(isolation = serializable, retry = 3)]
async fn archive(tx: &mut Tx, id: i64) -> Result<u64, Error> {
    tx.execute("INSERT INTO archive SELECT * FROM item WHERE id = $1", &[&id]).await?;
    tx.execute("DELETE FROM item WHERE id = $1", &[&id]).await
}

fn main() {}
