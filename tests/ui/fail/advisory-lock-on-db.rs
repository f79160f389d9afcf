// A session advisory lock taken by a one-shot statement: it stays held by whatever
// connection ran it, now back in the pool, and the caller can never release it.
use pool_core::{sql, Db, Error};

async fn singleton_job(db: &mut Db) -> Result<(), Error> {
    db.query(sql!("SELECT pg_advisory_lock(42)"), &[]).await?;
    db.execute(sql!("UPDATE jobs SET state = 'running'"), &[]).await?;
    Ok(())
}

fn main() {}
