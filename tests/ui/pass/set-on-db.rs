// The right way: set it on a held connection and run the query there (the pool resets
// the setting before the connection is reused).
#![allow(dead_code)]
use pool_core::{sql, Db, Error};

async fn report(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    conn.execute(sql!("SET work_mem = '256MB'"), &[]).await?;
    conn.query(sql!("SELECT * FROM big ORDER BY x"), &[]).await?;
    Ok(())
}

fn main() {}
