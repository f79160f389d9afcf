// The right way: everything inside the transaction, then commit.
#![allow(dead_code)]
use pool_core::{Db, Error};

async fn work(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    let mut tx = conn.begin().await?;
    tx.execute("INSERT INTO audit VALUES (1)", &[]).await?;
    tx.execute("INSERT INTO audit VALUES (2)", &[]).await?;
    tx.commit().await?;
    Ok(())
}

fn main() {}
