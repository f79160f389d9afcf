// The right way: RETURNING, on the same statement.
#![allow(dead_code)]
use pool_core::{sql, Db, Error};

async fn insert(db: &mut Db) -> Result<i64, Error> {
    let row = db.query_one(sql!("INSERT INTO item (name) VALUES ('x') RETURNING id"), &[]).await?;
    Ok(row.get(0))
}

fn main() {}
