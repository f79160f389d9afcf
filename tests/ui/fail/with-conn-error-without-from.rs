// The function's error type cannot carry the pool's errors.
use pool_core::{with_conn, Conn};

#[derive(Debug)]
struct AppError;

#[with_conn]
async fn count(conn: &mut Conn) -> Result<i64, AppError> {
    let _ = conn;
    Ok(0)
}

fn main() {}
