// The right way: `copy_in` returns a sink for the data; `finish` gives the row count.
#![allow(dead_code)]
use futures::SinkExt;
use pool_core::bytes::Bytes;
use pool_core::{sql, Db, Error};

async fn load(db: &mut Db) -> Result<u64, Error> {
    let mut conn = db.acquire().await?;
    let mut sink = conn.copy_in(sql!("COPY account (id, owner) FROM STDIN")).await?;
    sink.send(Bytes::from_static(b"1\talice\n2\tbob\n")).await?;
    sink.finish().await
}

fn main() {}
