// The right way: reads on the read side, the write through `Db` (the primary).
#![allow(dead_code)]
use pool_core::{sql, Db, Error, ReadDb};

async fn record_visit(db: &mut Db, read: &mut ReadDb, page: i64) -> Result<i64, Error> {
    db.execute(sql!("INSERT INTO visit (page) VALUES ($1)"), &[&page]).await?;
    let row = read
        .query_one(sql!("SELECT count(*) FROM visit WHERE page = $1"), &[&page])
        .await?;
    Ok(row.get(0))
}

fn main() {}
