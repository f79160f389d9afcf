// The right way: one connection parameter (use db.acquire_many(2) where two are really needed).
#![allow(dead_code)]
use pool_core::{with_conn, Conn, Error};

#[with_conn]
async fn count(conn: &mut Conn) -> Result<i64, Error> {
    Ok(conn.query_one("SELECT count(*) FROM item", &[]).await?.get(0))
}

fn main() {}
