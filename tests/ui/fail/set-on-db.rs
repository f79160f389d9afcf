// A session setting made through a one-shot statement: its connection goes straight
// back to the pool, so the next statement (on any connection) does not see it.
use pool_core::{sql, Db, Error};

async fn report(db: &mut Db) -> Result<(), Error> {
    db.execute(sql!("SET work_mem = '256MB'"), &[]).await?;
    db.query(sql!("SELECT * FROM big ORDER BY x"), &[]).await?;
    Ok(())
}

fn main() {}
