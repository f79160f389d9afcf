// The right way: finish with the connection, then release it (or let it drop).
#![allow(dead_code)]
use pool_core::{Db, Error, PooledConn};

async fn work(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    conn.query("SELECT 1", &[]).await?;
    conn.query("SELECT 2", &[]).await?;
    PooledConn::release(conn);
    Ok(())
}

fn main() {}
