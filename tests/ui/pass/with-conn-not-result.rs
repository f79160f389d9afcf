// The right way: return a Result whose error converts from pool_core::Error.
#![allow(dead_code)]
use pool_core::{with_conn, Conn, Error};

#[with_conn]
async fn count(conn: &mut Conn) -> Result<i64, Error> {
    Ok(conn.query_one("SELECT count(*) FROM item", &[]).await?.get(0))
}

fn main() {}
