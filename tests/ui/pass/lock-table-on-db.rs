// The right way: lock and insert in one transaction.
#![allow(dead_code)]
use pool_core::{sql, transactional, Error, LockMode, Tx};

#[transactional]
async fn insert(tx: &mut Tx, a: i32, b: i32) -> Result<(), Error> {
    tx.lock_table("table1", LockMode::Exclusive).await?;
    tx.execute(sql!("INSERT INTO table1 VALUES ($1, $2)"), &[&a, &b]).await?;
    Ok(())
}

fn main() {}
