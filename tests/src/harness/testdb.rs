//! Per-test databases.

use std::sync::mpsc;
use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::Config;
use tokio_postgres::error::SqlState;

use super::server::{Server, connect, server};
use super::{HarnessError, error_chain, unique_suffix};

/// How long dropping a [`TestDb`] may block.
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh database on [`server`], dropped (`WITH (FORCE)`) when this value
/// is dropped, including while a panicking test unwinds.
///
/// Named `pct_<pid>_<counter>_<random>`; databases of killed test processes
/// are dropped the next time a test process resolves the server.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    config: Config,
    server: &'static Server,
}

/// Creates a fresh database on [`server`].
///
/// # Panics
///
/// Panics with the [`HarnessError`] message if no server is available or
/// the database cannot be created; see [`try_test_db`].
pub async fn test_db() -> TestDb {
    match try_test_db().await {
        Ok(db) => db,
        Err(e) => panic!("{e}"),
    }
}

/// Creates a fresh database on [`server`].
pub async fn try_test_db() -> Result<TestDb, HarnessError> {
    let server = server().await?;
    let name = format!("pct_{}_{}", std::process::id(), unique_suffix());
    let admin = server.connect_admin().await?;
    let sql = format!("CREATE DATABASE \"{name}\"");
    let mut attempts = 0;
    loop {
        match admin.batch_execute(&sql).await {
            Ok(()) => break,
            // "source database template1 is being accessed by other users"
            Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(HarnessError::Server {
                    url: server.url().to_owned(),
                    context: format!("creating database {name}"),
                    message: error_chain(&e),
                });
            }
        }
    }
    let mut config = server.config();
    config.dbname(&name);
    Ok(TestDb {
        url: server.url_for(&name),
        name,
        config,
        server,
    })
}

impl TestDb {
    /// The URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A connection config for this database.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server this database lives on.
    pub fn server(&self) -> &'static Server {
        self.server
    }

    /// A plain client connected to this database; its connection task is
    /// spawned on the current runtime.
    ///
    /// # Panics
    ///
    /// Panics if the connection fails.
    pub async fn connect(&self) -> Client {
        match connect(&self.config).await {
            Ok(client) => client,
            Err(e) => panic!("connecting to {}: {}", self.url, error_chain(&e)),
        }
    }

    /// Runs `sql` (one or more statements) on a fresh plain client connected
    /// to this database, e.g. to create a test's tables.
    ///
    /// # Panics
    ///
    /// Panics if the connection or a statement fails.
    pub async fn batch_execute(&self, sql: &str) {
        if let Err(e) = self.connect().await.batch_execute(sql).await {
            panic!("running {sql:?} on {}: {}", self.url, error_chain(&e));
        }
    }

    /// A plain client connected to the server's admin database (`postgres`
    /// by default), e.g. to inspect `pg_stat_activity` or `pg_database`.
    ///
    /// # Panics
    ///
    /// Panics if the connection fails.
    pub async fn admin(&self) -> Client {
        match self.server.connect_admin().await {
            Ok(client) => client,
            Err(e) => panic!("{e}"),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop is synchronous and may run inside (or while unwinding out
        // of) a runtime: use a private runtime on a fresh thread.
        let config = self.server.config();
        let url = self.server.url().to_owned();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let (done_tx, done_rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("harness-drop-db".to_owned())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
                    .and_then(|runtime| {
                        runtime.block_on(async {
                            let client = connect(&config).await.map_err(|e| error_chain(&e))?;
                            client
                                .batch_execute(&sql)
                                .await
                                .map_err(|e| error_chain(&e))
                        })
                    });
                let _ = done_tx.send(result);
            });
        let outcome = match spawned {
            Ok(handle) => match done_rx.recv_timeout(DROP_TIMEOUT) {
                Ok(result) => {
                    let _ = handle.join();
                    result
                }
                Err(_) => Err(format!("no answer within {DROP_TIMEOUT:?}")),
            },
            Err(e) => Err(format!("spawning a thread: {e}")),
        };
        if let Err(e) = outcome {
            eprintln!(
                "harness: dropping test database {} on {url}: {e}",
                self.name
            );
        }
    }
}
