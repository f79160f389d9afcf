// The right way: borrow what the body uses (clone where ownership is really needed).
#![allow(dead_code)]
use pool_core::{transactional, Error, Tx};

#[transactional(isolation = serializable, retry = 3)]
async fn annotate(tx: &mut Tx, id: i64, note: String) -> Result<u64, Error> {
    tx.execute("UPDATE item SET note = $2 WHERE id = $1", &[&id, &note]).await
}

fn main() {}
