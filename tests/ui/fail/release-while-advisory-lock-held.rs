// Returning a connection while a session advisory lock guard still borrows it.
use pool_core::{Db, Error, PooledConn};

async fn job(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    let lock = conn.advisory_lock(7).await?;
    PooledConn::release(conn);
    drop(lock);
    Ok(())
}

fn main() {}
