// The right way: the writing transaction gets `Db`; a read-only one may get the read side.
#![allow(dead_code)]
use pool_core::{transactional, Error, Pool, Tx};

#[transactional]
async fn bump(tx: &mut Tx, id: i64) -> Result<u64, Error> {
    tx.execute("UPDATE counter SET n = n + 1 WHERE id = $1", &[&id]).await
}

#[transactional(isolation = repeatable_read, read_only)]
async fn report(tx: &mut Tx) -> Result<(i64, i64), Error> {
    let a: i64 = tx.query_one("SELECT count(*) FROM counter", &[]).await?.get(0);
    let b: i64 = tx.query_one("SELECT coalesce(sum(n), 0)::int8 FROM counter", &[]).await?.get(0);
    Ok((a, b))
}

#[transactional(read_only, retry = 2)]
async fn report_retrying(tx: &mut Tx) -> Result<i64, Error> {
    Ok(tx.query_one("SELECT count(*) FROM counter", &[]).await?.get(0))
}

async fn handler(pool: Pool) -> Result<(), Error> {
    let mut db = pool.db();
    bump(&mut db, 1).await?;
    let mut read = pool.read_db();
    report(&mut read).await?;
    report_retrying(&mut read).await?;
    report(&mut db).await?;
    Ok(())
}

fn main() {}
