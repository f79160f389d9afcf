// The right way: rows out of a query come from `copy_out` of a `COPY (query) TO STDOUT`
// (or from `query_stream`).
#![allow(dead_code)]
use futures::TryStreamExt;
use pool_core::{sql, Db, Error};

async fn dump(db: &mut Db) -> Result<usize, Error> {
    let mut conn = db.acquire().await?;
    let data = conn
        .copy_out(sql!("COPY (SELECT id, owner FROM account) TO STDOUT"))
        .await?;
    let chunks: Vec<_> = data.try_collect().await?;
    Ok(chunks.iter().map(|c| c.len()).sum())
}

fn main() {}
