// Annotated functions that nothing calls are dead code like any other function: the
// macros keep rustc's `dead_code` warning (denied here).
#![deny(dead_code)]
use pool_core::{transactional, with_conn, Conn, Error, Tx};

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

fn main() {}
