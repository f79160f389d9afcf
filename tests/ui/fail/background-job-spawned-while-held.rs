// A background job started while the request holds a connection: the job needs the
// pool, but `db` is mutably borrowed by the held connection.
use pool_core::{Db, Error};

async fn handle(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    conn.execute("INSERT INTO job (kind) VALUES ('mail')", &[]).await?;
    let pool = db.pool().clone();
    tokio::spawn(async move {
        let mut db = pool.db();
        let _ = db.execute("UPDATE job SET started = now()", &[]).await;
    });
    conn.execute("UPDATE request SET queued = true", &[]).await?;
    Ok(())
}

fn main() {}
