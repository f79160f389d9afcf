// Seed 004: LOCK TABLE on one pooled connection, the INSERT on another: the lock protects
// nothing (and outside a transaction LOCK TABLE fails anyway).
use pool_core::{sql, Db, Error};

async fn insert(db: &mut Db, a: i32, b: i32) -> Result<(), Error> {
    db.execute(sql!("LOCK TABLE table1 IN EXCLUSIVE MODE"), &[]).await?;
    db.execute(sql!("INSERT INTO table1 VALUES ($1, $2)"), &[&a, &b]).await?;
    Ok(())
}

fn main() {}
