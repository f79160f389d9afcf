// A transaction that writes, given the read side: it would run on a replica (or a
// read-only session) and fail there. Only `#[transactional(read_only)]` takes `ReadDb`.
use pool_core::{transactional, Error, Pool, Tx};

#[transactional]
async fn bump(tx: &mut Tx, id: i64) -> Result<u64, Error> {
    tx.execute("UPDATE counter SET n = n + 1 WHERE id = $1", &[&id]).await
}

async fn handler(pool: Pool) -> Result<(), Error> {
    let mut read = pool.read_db();
    bump(&mut read, 1).await?;
    Ok(())
}

fn main() {}
