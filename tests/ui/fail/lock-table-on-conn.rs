// Seed 004 on a held connection: outside a transaction the lock ends with the statement.
use pool_core::{sql, Conn, Error};

async fn insert(conn: &mut Conn, a: i32) -> Result<(), Error> {
    conn.execute(sql!("LOCK TABLE table1 IN EXCLUSIVE MODE"), &[]).await?;
    conn.execute(sql!("INSERT INTO table1 VALUES ($1)"), &[&a]).await?;
    Ok(())
}

fn main() {}
