// The right way: each option once.
#![allow(dead_code)]
use pool_core::{transactional, Error, Tx};

#[transactional(retry = 5, isolation = serializable)]
async fn archive(tx: &mut Tx, id: i64) -> Result<u64, Error> {
    tx.execute("INSERT INTO archive SELECT * FROM item WHERE id = $1", &[&id]).await?;
    tx.execute("DELETE FROM item WHERE id = $1", &[&id]).await
}

fn main() {}
