// The right way: take the lock on a held connection; the guard unlocks on drop.
#![allow(dead_code)]
use pool_core::{sql, Db, Error};

async fn singleton_job(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    let mut lock = conn.advisory_lock(42).await?;
    lock.execute(sql!("UPDATE jobs SET state = 'running'"), &[]).await?;
    Ok(())
}

fn main() {}
