// SELECT … FOR UPDATE on the read side: a standby cannot lock rows, and the lock would
// protect nothing on a connection that only reads.
use pool_core::{sql, Error, ReadConn};

async fn reserve(conn: &mut ReadConn<'_>, seat: i64) -> Result<(), Error> {
    conn.query(sql!("SELECT * FROM seat WHERE id = $1 FOR UPDATE"), &[&seat]).await?;
    Ok(())
}

fn main() {}
