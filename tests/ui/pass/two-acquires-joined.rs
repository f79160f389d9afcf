// The right way: check out both at once, all or nothing, with acquire_many.
#![allow(dead_code)]
use pool_core::{Db, Error};

async fn compare(db: &mut Db) -> Result<(), Error> {
    let mut set = db.acquire_many(2).await?;
    if let Some([a, b]) = set.array_mut::<2>() {
        let (x, y) = tokio::join!(a.query("SELECT 1", &[]), b.query("SELECT 2", &[]));
        let (_x, _y) = (x?, y?);
    }
    Ok(())
}

fn main() {}
