// A transaction used after it was committed: the statement would run outside it.
use pool_core::{Db, Error};

async fn work(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    let mut tx = conn.begin().await?;
    tx.execute("INSERT INTO audit VALUES (1)", &[]).await?;
    tx.commit().await?;
    tx.execute("INSERT INTO audit VALUES (2)", &[]).await?;
    Ok(())
}

fn main() {}
