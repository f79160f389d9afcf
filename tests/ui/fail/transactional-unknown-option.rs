// An option #[transactional] does not have.
use pool_core::{transactional, Error, Tx};

#[transactional(isolation = serializable, timeout = 5)]
async fn archive(tx: &mut Tx, id: i64) -> Result<u64, Error> {
    tx.execute("DELETE FROM item WHERE id = $1", &[&id]).await
}

fn main() {}
