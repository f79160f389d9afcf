// The right way: take the pool before the checkout (or from the application state),
// and let the job check out its own connection with `pool.db()`.
#![allow(dead_code)]
use pool_core::{Db, Error};

async fn handle(db: &mut Db) -> Result<(), Error> {
    let pool = db.pool().clone();
    let mut conn = db.acquire().await?;
    conn.execute("INSERT INTO job (kind) VALUES ('mail')", &[]).await?;
    tokio::spawn(async move {
        let mut db = pool.db();
        let _ = db.execute("UPDATE job SET started = now()", &[]).await;
    });
    conn.execute("UPDATE request SET queued = true", &[]).await?;
    Ok(())
}

fn main() {}
