//! The main example: a pool against a real server, some work, the pool's status.
//!
//! Uses `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`); if no
//! server answers there, it starts a private throwaway cluster from the local PostgreSQL
//! binaries, exactly like the tests do.

use std::time::Duration;

use pool_core::{Error, Pool};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = tests::harness::server().await?;
    println!(
        "server: {}{}",
        server.url(),
        if server.is_private() {
            " (private cluster)"
        } else {
            ""
        }
    );

    let pool = Pool::builder(server.config())
        .max_size(4)
        .acquire_timeout(Duration::from_secs(2))
        .build()?;

    // Sixteen concurrent requests share four connections.
    let requests: Vec<_> = (0..16)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut db = pool.db();
                let mut conn = db.acquire().await?;
                let row = conn
                    .query_one("SELECT $1::int * 2, pg_backend_pid()", &[&i])
                    .await?;
                Ok::<(i32, i32), Error>((row.get(0), row.get(1)))
            })
        })
        .collect();
    let mut pids = Vec::new();
    for r in requests {
        let (_, pid) = r.await??;
        pids.push(pid);
    }
    pids.sort_unstable();
    pids.dedup();
    println!(
        "16 requests served by {} connections (backend pids {:?})",
        pids.len(),
        pids
    );
    println!("{}", pool.status());
    pool.close().await;
    Ok(())
}
