// SET LOCAL outside a transaction does nothing (PostgreSQL only warns).
use pool_core::{sql, Conn, Error};

async fn careful_update(conn: &mut Conn) -> Result<(), Error> {
    conn.execute(sql!("SET LOCAL lock_timeout = '1s'"), &[]).await?;
    conn.execute(sql!("UPDATE account SET cents = 0"), &[]).await?;
    Ok(())
}

fn main() {}
