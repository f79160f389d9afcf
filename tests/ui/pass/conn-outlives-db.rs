// The right way: the caller owns the `Db`; the connection borrows it.
#![allow(dead_code)]
use pool_core::{Db, Error, PooledConn};

async fn connection(db: &mut Db) -> Result<PooledConn<'_>, Error> {
    db.acquire().await
}

fn main() {}
