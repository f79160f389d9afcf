// A #[with_conn] function that also takes the `Db`: the body could check out again
// while the connection is held (the nested checkout of seed 000).
use pool_core::{with_conn, Conn, Db, Error};

#[with_conn]
async fn count(conn: &mut Conn, db: &mut Db) -> Result<i64, Error> {
    let _ = db;
    Ok(conn.query_one("SELECT count(*) FROM item", &[]).await?.get(0))
}

fn main() {}
