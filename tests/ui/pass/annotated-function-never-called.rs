// The right way: call them (or remove them).
#![deny(dead_code)]
use pool_core::{transactional, with_conn, Conn, Db, Error, Tx};

#[with_conn]
async fn forgotten(conn: &mut Conn) -> Result<u64, Error> {
    conn.execute("SELECT 1", &[]).await
}

#[transactional]
async fn forgotten_too(tx: &mut Tx) -> Result<u64, Error> {
    tx.execute("SELECT 1", &[]).await
}

#[transactional(retry = 3)]
async fn forgotten_retrying(tx: &mut Tx) -> Result<u64, Error> {
    tx.execute("SELECT 1", &[]).await
}

pub async fn all(db: &mut Db) -> Result<u64, Error> {
    Ok(forgotten(db).await? + forgotten_too(db).await? + forgotten_retrying(db).await?)
}

fn main() {
    let _ = all;
}
