// The right way: the error type converts from pool_core::Error.
#![allow(dead_code)]
use pool_core::{with_conn, Conn};

#[derive(Debug)]
enum AppError {
    Db(pool_core::Error),
}

impl From<pool_core::Error> for AppError {
    fn from(e: pool_core::Error) -> Self {
        AppError::Db(e)
    }
}

#[with_conn]
async fn count(conn: &mut Conn) -> Result<i64, AppError> {
    Ok(conn.query_one("SELECT count(*) FROM item", &[]).await?.get(0))
}

fn main() {}
