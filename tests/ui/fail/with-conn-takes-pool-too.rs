// A #[with_conn] function that also takes the `Pool`.
use pool_core::{with_conn, Conn, Error, Pool};

#[with_conn]
async fn count(conn: &mut Conn, pool: &Pool) -> Result<i64, Error> {
    let _ = pool;
    Ok(conn.query_one("SELECT count(*) FROM item", &[]).await?.get(0))
}

fn main() {}
