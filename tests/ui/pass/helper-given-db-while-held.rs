// The right way: the helper takes the connection the caller already holds.
#![allow(dead_code)]
use pool_core::{with_conn, Conn, Error};

#[with_conn]
async fn person(conn: &mut Conn, id: i64) -> Result<String, Error> {
    Ok(conn.query_one("SELECT name FROM person WHERE id = $1", &[&id]).await?.get(0))
}

#[with_conn]
async fn persons_in_group(conn: &mut Conn, group: i32) -> Result<Vec<String>, Error> {
    let rows = conn.query("SELECT id FROM person WHERE group_id = $1", &[&group]).await?;
    let mut out = Vec::new();
    for row in rows {
        out.push(person(conn, row.get(0)).await?);
    }
    Ok(out)
}

fn main() {}
