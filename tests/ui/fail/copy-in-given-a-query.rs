// A query given to copy_in: it takes only a COPY ... FROM STDIN.
use pool_core::{sql, Db, Error};

async fn load(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    let _sink = conn.copy_in(sql!("SELECT id, owner FROM account")).await?;
    Ok(())
}

fn main() {}
