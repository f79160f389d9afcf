// The right way: a plain read on the read side; the locking read in a transaction on the
// primary.
#![allow(dead_code)]
use pool_core::{sql, transactional, Error, ReadConn, Tx};

async fn seat_free(conn: &mut ReadConn<'_>, seat: i64) -> Result<bool, Error> {
    let row = conn.query_opt(sql!("SELECT id FROM seat WHERE id = $1 AND holder IS NULL"), &[&seat]).await?;
    Ok(row.is_some())
}

#[transactional]
async fn reserve(tx: &mut Tx, seat: i64) -> Result<(), Error> {
    tx.query(sql!("SELECT * FROM seat WHERE id = $1 FOR UPDATE"), &[&seat]).await?;
    Ok(())
}

fn main() {}
