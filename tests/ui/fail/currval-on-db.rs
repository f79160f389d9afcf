// currval() reads the session's last nextval(): on a one-shot it runs on some other
// connection than the INSERT that called nextval().
use pool_core::{sql, Db, Error};

async fn insert(db: &mut Db) -> Result<i64, Error> {
    db.execute(sql!("INSERT INTO item (name) VALUES ('x')"), &[]).await?;
    let row = db.query_one(sql!("SELECT currval('item_id_seq')"), &[]).await?;
    Ok(row.get(0))
}

fn main() {}
