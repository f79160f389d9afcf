// The right way: declare the connection parameter.
#![allow(dead_code)]
use pool_core::{with_conn, Conn, Error};

#[with_conn]
async fn count(conn: &mut Conn) -> Result<i64, Error> {
    Ok(conn.query_one("SELECT count(*) FROM item", &[]).await?.get(0))
}

fn main() {}
