// The right way: begin() (or #[transactional]); the pool tracks the transaction.
#![allow(dead_code)]
use pool_core::{sql, Conn, Error};

async fn transfer(conn: &mut Conn) -> Result<(), Error> {
    let mut tx = conn.begin().await?;
    tx.execute(sql!("UPDATE account SET cents = cents - 1 WHERE id = 1"), &[]).await?;
    tx.commit().await
}

fn main() {}
