// The right way: `crate = "path"` first, naming where pool-core is re-exported, then a
// comma and the statement; the statement's kind is still checked through the re-export.
#![allow(dead_code)]

// pool-core re-exported as `crate::pg`, and used only through it.
mod pg {
    pub use pool_core::*;
}

async fn touch(db: &mut pg::Db, id: i64) -> Result<(), pg::Error> {
    let read: pg::Stmt<pg::ReadOnly> = pg::sql!(crate = "crate::pg", "SELECT 1");
    db.execute(read, &[]).await?;
    let plain: pg::Stmt<pg::Plain> = pg::sql!(crate = "crate::pg", "DELETE FROM item WHERE id = $1");
    db.execute(plain, &[&id]).await?;
    // A read is also a plain statement where one is expected.
    let widened: pg::Stmt<pg::Plain> = read.into();
    db.execute(widened, &[]).await?;
    let mut conn = db.acquire().await?;
    let session: pg::Stmt<pg::SessionState> =
        pg::sql!(crate = "crate::pg", "SET search_path TO app");
    conn.execute(session, &[]).await?;
    let mut tx = conn.begin().await?;
    let locking: pg::Stmt<pg::TransactionOnly> = pg::sql!(
        crate = "self::pg",
        "SELECT 1 FROM item WHERE id = $1 FOR UPDATE"
    );
    tx.execute(locking, &[&id]).await?;
    tx.commit().await
}

fn main() {}
