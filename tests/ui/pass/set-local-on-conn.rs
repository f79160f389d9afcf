// The right way: SET LOCAL inside the transaction it is meant for.
#![allow(dead_code)]
use pool_core::{sql, transactional, Error, Tx};

#[transactional]
async fn careful_update(tx: &mut Tx) -> Result<(), Error> {
    tx.set_local("lock_timeout", "1s").await?;
    tx.execute(sql!("UPDATE account SET cents = 0"), &[]).await?;
    Ok(())
}

fn main() {}
