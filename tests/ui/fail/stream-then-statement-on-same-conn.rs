// Seed 000 on one connection: a helper runs a statement on the connection whose row
// stream is still being read. With tokio-postgres the helper waits behind the unread
// stream and the task stalls; here the stream borrows the connection.
use futures::StreamExt;
use pool_core::{Conn, Db, Error};

async fn owner_of(conn: &mut Conn, id: i32) -> Result<String, Error> {
    let row = conn.query_one("SELECT owner FROM account WHERE id = $1", &[&id]).await?;
    Ok(row.get(0))
}

async fn report(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    let mut rows = conn.query_stream("SELECT id FROM account", &[]).await?;
    while let Some(row) = rows.next().await {
        let id: i32 = row?.get(0);
        owner_of(&mut conn, id).await?;
    }
    Ok(())
}

fn main() {}
