// Seed 002: a held connection handed to a background task that may outlive the request
// (the mailer goroutine that used a closed connection).
use pool_core::{Db, Error};

async fn handle(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    tokio::spawn(async move {
        let _ = conn.execute("INSERT INTO outbox VALUES ('mail')", &[]).await;
    });
    Ok(())
}

fn main() {}
