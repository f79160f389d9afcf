// Seed 000: a function iterates rows on a held connection and calls a helper that checks
// out a second one. With MaxConns = 4 and 4 concurrent requests, the server froze.
use pool_core::{with_conn, Conn, Db, Error};

#[with_conn]
async fn person(conn: &mut Conn, id: i64) -> Result<String, Error> {
    Ok(conn.query_one("SELECT name FROM person WHERE id = $1", &[&id]).await?.get(0))
}

async fn persons_in_group(db: &mut Db, group: i32) -> Result<Vec<String>, Error> {
    let mut conn = db.acquire().await?;
    let rows = conn.query("SELECT id FROM person WHERE group_id = $1", &[&group]).await?;
    let mut out = Vec::new();
    for row in rows {
        out.push(person(db, row.get(0)).await?);
    }
    conn.query("SELECT 1", &[]).await?;
    Ok(out)
}

fn main() {}
