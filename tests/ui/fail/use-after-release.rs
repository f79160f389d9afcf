// Seed 002: a connection used after it was given back to the pool.
use pool_core::{Db, Error, PooledConn};

async fn work(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    conn.query("SELECT 1", &[]).await?;
    PooledConn::release(conn);
    conn.query("SELECT 2", &[]).await?;
    Ok(())
}

fn main() {}
