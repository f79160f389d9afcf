//! The process-wide server: `DATABASE_URL`, or a private fallback cluster.

use std::time::Duration;

use tokio::sync::OnceCell;
use tokio_postgres::{Client, Config, NoTls};

use super::cluster::PrivateCluster;
use super::{HarnessError, binaries, database_url, error_chain, replace_dbname};

/// How long connecting to `DATABASE_URL` may take before the server is
/// considered absent.
const CONNECT_DEADLINE: Duration = Duration::from_secs(3);

/// The PostgreSQL server the tests of this process run against.
///
/// Obtained from [`server`]. Holds only URLs, configs and (for a private
/// cluster) process handles, never a client, so it works from every tokio
/// runtime.
#[derive(Debug)]
pub struct Server {
    url: String,
    config: Config,
    private: Option<PrivateCluster>,
}

impl Server {
    /// The admin URL: `DATABASE_URL` as given (database `postgres` by
    /// default), or the private cluster's `postgres` database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A connection config for [`url`](Self::url).
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// Whether this is a private cluster started because no server answered
    /// at [`database_url`].
    pub fn is_private(&self) -> bool {
        self.private.is_some()
    }

    /// The private fallback cluster, if [`is_private`](Self::is_private).
    /// Do not stop it: every test of the process shares it.
    pub fn private_cluster(&self) -> Option<&PrivateCluster> {
        self.private.as_ref()
    }

    /// A URL for database `dbname` on this server.
    pub fn url_for(&self, dbname: &str) -> String {
        replace_dbname(&self.url, dbname)
    }

    /// Connects to [`url`](Self::url), spawning the connection task on the
    /// current runtime.
    pub(crate) async fn connect_admin(&self) -> Result<Client, HarnessError> {
        connect(&self.config)
            .await
            .map_err(|e| HarnessError::Server {
                url: self.url.clone(),
                context: "connecting".to_owned(),
                message: error_chain(&e),
            })
    }
}

/// Returns the server for this process, resolving it on first use.
///
/// Connects to [`database_url`] (3 s deadline). If nothing answers there
/// (connection refused, timeout, other I/O error) a single private cluster
/// is started for the whole process and used instead. A server that answers
/// but rejects us (authentication, missing database, ...) is an error. On
/// first resolution, databases `pct_<pid>_...` left behind by test
/// processes that no longer exist are dropped.
pub async fn server() -> Result<&'static Server, HarnessError> {
    static SERVER: OnceCell<Server> = OnceCell::const_new();
    SERVER.get_or_try_init(resolve).await
}

async fn resolve() -> Result<Server, HarnessError> {
    let url = database_url();
    let mut config: Config = url.parse().map_err(|e| HarnessError::InvalidUrl {
        url: url.clone(),
        message: error_chain(&e),
    })?;
    config.connect_timeout(CONNECT_DEADLINE);
    let attempt = tokio::time::timeout(CONNECT_DEADLINE, connect(&config)).await;
    let connect_error = match attempt {
        Ok(Ok(client)) => {
            drop_stale_databases(&client).await;
            return Ok(Server {
                url,
                config,
                private: None,
            });
        }
        Ok(Err(e)) if !is_unreachable(&e) => {
            return Err(HarnessError::Server {
                url,
                context: "connecting".to_owned(),
                message: error_chain(&e),
            });
        }
        Ok(Err(e)) => error_chain(&e),
        Err(_) => format!("no answer within {CONNECT_DEADLINE:?}"),
    };
    if let Err(searched) = binaries::find() {
        return Err(HarnessError::NoServer {
            url,
            connect_error,
            searched,
        });
    }
    let cluster =
        PrivateCluster::start_default()
            .await
            .map_err(|cause| HarnessError::Fallback {
                url: url.clone(),
                connect_error,
                cause: Box::new(cause),
            })?;
    Ok(Server {
        url: cluster.url().to_owned(),
        config: cluster.config(),
        private: Some(cluster),
    })
}

/// Whether a connect error means "no server there" rather than "a server
/// rejected us": no database error, and an I/O error in the chain.
fn is_unreachable(error: &tokio_postgres::Error) -> bool {
    if error.as_db_error().is_some() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Connects with `config`, spawning the connection task on the current
/// runtime.
pub(crate) async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    // Its errors (e.g. the database being force-dropped) surface through
    // the client.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Best effort: drops `pct_<pid>_...` databases whose process is gone.
async fn drop_stale_databases(client: &Client) {
    let Ok(rows) = client
        .query(
            "SELECT datname FROM pg_database WHERE datname ~ '^pct_[0-9]+_'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let Some(pid) = name.split('_').nth(1).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        if let Err(e) = client.batch_execute(&sql).await {
            eprintln!(
                "harness: dropping stale database {name}: {}",
                error_chain(&e)
            );
        }
    }
}
