// A COPY through the client batched with other statements: the copy protocol runs one
// statement, so sql! refuses the text.
use pool_core::{sql, Db, Error};

async fn load(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    let _sink = conn.copy_in(sql!("TRUNCATE account; COPY account FROM STDIN")).await?;
    Ok(())
}

fn main() {}
