// Two connection parameters: one would be checked out while the other is held.
use pool_core::{with_conn, Conn, Error};

#[with_conn]
async fn copy(from: &mut Conn, to: &mut Conn) -> Result<(), Error> {
    let _ = (from, to);
    Ok(())
}

fn main() {}
