// A COPY FROM STDIN run as an ordinary statement: `execute` has no way to send the
// data, so with tokio-postgres it fails inside the driver at run time. `sql!` makes it a
// `Stmt<CopyIn>`, which only `copy_in` takes.
use pool_core::{sql, Db, Error};

async fn load(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    conn.execute(sql!("COPY account (id, owner) FROM STDIN"), &[]).await?;
    Ok(())
}

fn main() {}
