// The right way: one checkout, used for everything.
#![allow(dead_code)]
use pool_core::{Db, Error};

async fn handler(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    conn.query("SELECT 1", &[]).await?;
    conn.query("SELECT 2", &[]).await?;
    Ok(())
}

fn main() {}
