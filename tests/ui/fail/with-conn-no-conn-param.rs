// #[with_conn] on a function with no `&mut Conn` parameter to provide.
use pool_core::{with_conn, Error};

#[with_conn]
async fn count(table: &str) -> Result<i64, Error> {
    let _ = table;
    Ok(0)
}

fn main() {}
