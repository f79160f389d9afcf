// The right way: one `Db` per task or request, passed as `&mut db`.
#![allow(dead_code)]
use pool_core::{with_conn, Conn, Error, Pool};

#[with_conn]
async fn count(conn: &mut Conn) -> Result<i64, Error> {
    Ok(conn.query_one("SELECT count(*) FROM item", &[]).await?.get(0))
}

async fn handler(pool: &Pool) -> Result<i64, Error> {
    let mut db = pool.db();
    count(&mut db).await
}

fn main() {}
