// Every macro shape with a one-line body, in a crate that denies warnings: the
// generated code adds none.
#![deny(warnings)]

use pool_core::{Conn, Db, Error, Tx, transactional, with_conn};

#[with_conn]
pub async fn count(conn: &mut Conn) -> Result<u64, Error> {
    conn.execute("SELECT 1", &[]).await
}

#[transactional]
pub async fn touch(tx: &mut Tx) -> Result<u64, Error> {
    tx.execute("SELECT 1", &[]).await
}

#[transactional(isolation = serializable, retry = 3)]
pub async fn touch_retrying(tx: &mut Tx) -> Result<u64, Error> {
    tx.execute("SELECT 1", &[]).await
}

pub async fn all(db: &mut Db) -> Result<u64, Error> {
    Ok(count(db).await? + touch(db).await? + touch_retrying(db).await?)
}

fn main() {}
