// The right way: unlock (or drop the guard) first, then release the connection.
#![allow(dead_code)]
use pool_core::{AdvisoryLock, Db, Error, PooledConn};

async fn job(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    let lock = conn.advisory_lock(7).await?;
    AdvisoryLock::unlock(lock).await?;
    PooledConn::release(conn);
    Ok(())
}

fn main() {}
