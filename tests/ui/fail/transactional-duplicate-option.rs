// The same option twice.
use pool_core::{transactional, Error, Tx};

#[transactional(retry = 3, isolation = serializable, retry = 5)]
async fn archive(tx: &mut Tx, id: i64) -> Result<u64, Error> {
    tx.execute("DELETE FROM item WHERE id = $1", &[&id]).await
}

fn main() {}
