// The right way: the pipeline in a transaction, where the lock holds until COMMIT.
#![allow(dead_code)]
use pool_core::{sql, Conn, Error};

async fn insert(conn: &mut Conn) -> Result<(), Error> {
    let mut tx = conn.begin().await?;
    tx.pipeline()
        .execute(sql!("LOCK TABLE t IN EXCLUSIVE MODE"), &[])
        .execute(sql!("INSERT INTO t VALUES (1)"), &[])
        .run()
        .await?;
    tx.commit().await
}

fn main() {}
