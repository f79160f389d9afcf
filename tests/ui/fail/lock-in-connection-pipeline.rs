// A LOCK TABLE in a pipeline on a connection outside a transaction: each pipelined
// statement is its own implicit transaction there, so the lock is gone before the next.
use pool_core::{sql, Conn, Error};

async fn insert(conn: &mut Conn) -> Result<(), Error> {
    conn.pipeline()
        .execute(sql!("LOCK TABLE t IN EXCLUSIVE MODE"), &[])
        .execute(sql!("INSERT INTO t VALUES (1)"), &[])
        .run()
        .await?;
    Ok(())
}

fn main() {}
