// Two transaction parameters.
use pool_core::{transactional, Error, Tx};

#[transactional]
async fn archive(a: &mut Tx, b: &mut Tx) -> Result<(), Error> {
    let _ = (a, b);
    Ok(())
}

fn main() {}
