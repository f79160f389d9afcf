// The right way: one connection for the loop (or one per iteration, returned at its end).
#![allow(dead_code)]
use pool_core::{Db, Error};

async fn export(db: &mut Db, ids: &[i64]) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    for id in ids {
        conn.query("SELECT * FROM item WHERE id = $1", &[id]).await?;
    }
    Ok(())
}

fn main() {}
