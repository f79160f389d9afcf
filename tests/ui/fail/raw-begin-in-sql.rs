// Raw transaction control: the pool would not know the connection is in a transaction.
use pool_core::{sql, Conn, Error};

async fn transfer(conn: &mut Conn) -> Result<(), Error> {
    conn.batch_execute(sql!("BEGIN")).await?;
    conn.execute(sql!("UPDATE account SET cents = cents - 1 WHERE id = 1"), &[]).await?;
    conn.batch_execute(sql!("COMMIT")).await?;
    Ok(())
}

fn main() {}
