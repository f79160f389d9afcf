// A held connection returned past the `Db` it was checked out from.
use pool_core::{Pool, PooledConn};

async fn connection(pool: &Pool) -> PooledConn<'_> {
    let mut db = pool.db();
    db.acquire().await.expect("connection")
}

fn main() {}
