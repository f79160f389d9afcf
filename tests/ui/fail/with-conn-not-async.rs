// #[with_conn] on a function that is not async.
use pool_core::{with_conn, Conn, Error};

#[with_conn]
fn count(conn: &mut Conn) -> Result<i64, Error> {
    let _ = conn;
    Ok(0)
}

fn main() {}
