// A retried body must be safe to run again: this one gives away `note` the first time.
use pool_core::{transactional, Error, Tx};

fn record(note: String) -> String {
    note
}

#[transactional(isolation = serializable, retry = 3)]
async fn annotate(tx: &mut Tx, id: i64, note: String) -> Result<u64, Error> {
    let owned = record(note);
    tx.execute("UPDATE item SET note = $2 WHERE id = $1", &[&id, &owned]).await
}

fn main() {}
