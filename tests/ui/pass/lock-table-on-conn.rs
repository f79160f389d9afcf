// The right way: begin a transaction on the connection and lock in it.
#![allow(dead_code)]
use pool_core::{sql, Conn, Error};

async fn insert(conn: &mut Conn, a: i32) -> Result<(), Error> {
    let mut tx = conn.begin().await?;
    tx.execute(sql!("LOCK TABLE table1 IN EXCLUSIVE MODE"), &[]).await?;
    tx.execute(sql!("INSERT INTO table1 VALUES ($1)"), &[&a]).await?;
    tx.commit().await
}

fn main() {}
