// Seed 002: `defer rows.Close()` inside a loop kept every iteration's connection open
// until the function returned: "Too Many Connections".
use pool_core::{Db, Error, PooledConn};

async fn export(db: &mut Db, ids: &[i64]) -> Result<(), Error> {
    let mut open: Vec<PooledConn<'_>> = Vec::new();
    for id in ids {
        let mut conn = db.acquire().await?;
        conn.query("SELECT * FROM item WHERE id = $1", &[id]).await?;
        open.push(conn);
    }
    Ok(())
}

fn main() {}
