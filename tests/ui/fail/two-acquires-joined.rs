// Two checkouts awaited together: the task would hold one while waiting for the other.
use pool_core::{Db, Error};

async fn compare(db: &mut Db) -> Result<(), Error> {
    let (a, b) = tokio::join!(db.acquire(), db.acquire());
    let (_a, _b) = (a?, b?);
    Ok(())
}

fn main() {}
