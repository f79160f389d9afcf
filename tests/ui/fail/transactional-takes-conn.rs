// #[transactional] given a `&mut Conn` instead of a `&mut Tx`.
use pool_core::{transactional, Conn, Error};

#[transactional]
async fn archive(conn: &mut Conn, id: i64) -> Result<(), Error> {
    let _ = (conn, id);
    Ok(())
}

fn main() {}
