// Calls that change the session from inside a plain-looking SELECT: on a one-shot (which
// may share its connection with other tasks' one-shots) the change would outlive the
// statement and reach whoever runs there next.
use pool_core::{sql, Db, Error};

async fn tweak(db: &mut Db) -> Result<(), Error> {
    db.query(sql!("SELECT set_config('search_path', 'tenant_7', false)"), &[]).await?;
    db.query(sql!("SELECT pg_advisory_lock(42)"), &[]).await?;
    db.query(sql!("SELECT pg_try_advisory_lock(42)"), &[]).await?;
    db.query(sql!("SELECT setseed(0.5)"), &[]).await?;
    db.query(sql!("SELECT lastval()"), &[]).await?;
    db.query(sql!("SELECT dblink_connect('peer', 'dbname=other')"), &[]).await?;
    Ok(())
}

fn main() {}
