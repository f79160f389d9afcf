// An INSERT sent to the read side: a replica refuses it, and on the primary it would
// slip past the routing. `sql!` proves it may write, so it does not compile.
use pool_core::{sql, Error, ReadDb};

async fn record_visit(read: &mut ReadDb, page: i64) -> Result<(), Error> {
    read.query(sql!("INSERT INTO visit (page) VALUES ($1)"), &[&page]).await?;
    Ok(())
}

fn main() {}
