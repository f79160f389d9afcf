// A #[transactional] function that cannot report a failed commit.
use pool_core::{transactional, Tx};

#[transactional]
async fn archive(tx: &mut Tx, id: i64) {
    let _ = (tx, id);
}

fn main() {}
