// A second checkout on the same `Db` while the first connection is held.
use pool_core::{Db, Error};

async fn handler(db: &mut Db) -> Result<(), Error> {
    let mut first = db.acquire().await?;
    let mut second = db.acquire().await?;
    first.query("SELECT 1", &[]).await?;
    second.query("SELECT 1", &[]).await?;
    Ok(())
}

fn main() {}
