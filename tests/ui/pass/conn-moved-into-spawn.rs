// The right way: give the background task the pool; it checks out its own connection.
#![allow(dead_code)]
use pool_core::{Error, Pool};

async fn handle(pool: &Pool) -> Result<(), Error> {
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut db = pool.db();
        let _ = db.execute("INSERT INTO outbox VALUES ('mail')", &[]).await;
    });
    Ok(())
}

fn main() {}
