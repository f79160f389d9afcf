// A shared reference to the pool passed where a connection source is wanted.
use pool_core::{with_conn, Conn, Error, Pool};

#[with_conn]
async fn count(conn: &mut Conn) -> Result<i64, Error> {
    Ok(conn.query_one("SELECT count(*) FROM item", &[]).await?.get(0))
}

async fn handler(pool: &Pool) -> Result<i64, Error> {
    count(pool).await
}

fn main() {}
