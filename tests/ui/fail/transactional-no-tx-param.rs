// #[transactional] with no `&mut Tx` parameter to provide.
use pool_core::{transactional, Error};

#[transactional]
async fn archive(id: i64) -> Result<(), Error> {
    let _ = id;
    Ok(())
}

fn main() {}
