// The right way: session changes on a held connection (the pool resets them on return),
// and one-shots that leave nothing behind — `pg_notify` is one.
#![allow(dead_code)]
use pool_core::{sql, Db, Error};

async fn tweak(db: &mut Db) -> Result<(), Error> {
    db.query(sql!("SELECT pg_notify('jobs', 'new')"), &[]).await?;
    db.query(sql!("SELECT nextval('item_id_seq')"), &[]).await?;
    let mut conn = db.acquire().await?;
    conn.query(sql!("SELECT set_config('search_path', 'tenant_7', false)"), &[]).await?;
    conn.query(sql!("SELECT pg_advisory_lock(42)"), &[]).await?;
    conn.query(sql!("SELECT setseed(0.5)"), &[]).await?;
    conn.query(sql!("SELECT lastval()"), &[]).await?;
    Ok(())
}

fn main() {}
