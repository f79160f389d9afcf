// The right way: run the other statement first, then the COPY alone, in one
// transaction so that nobody sees the table empty.
#![allow(dead_code)]
use futures::SinkExt;
use pool_core::bytes::Bytes;
use pool_core::{sql, Db, Error};

async fn load(db: &mut Db) -> Result<u64, Error> {
    let mut conn = db.acquire().await?;
    let mut tx = conn.begin().await?;
    tx.execute(sql!("TRUNCATE account"), &[]).await?;
    let mut sink = tx.copy_in(sql!("COPY account FROM STDIN")).await?;
    sink.send(Bytes::from_static(b"1\talice\n")).await?;
    let rows = sink.finish().await?;
    drop(sink);
    tx.commit().await?;
    Ok(rows)
}

fn main() {}
