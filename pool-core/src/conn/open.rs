//! Opening one connection: TCP, TLS, startup and authentication under
//! `connect_timeout`, the task that reads the connection's messages, then the
//! `after_connect` hook.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::AsyncMessage;

use super::settings::PasswordProvider;
use super::{Conn, ConnMeta, Ctx};
use crate::error::{Error, Timeout, TimeoutKind};
use crate::random::jitter;

/// A failed connection attempt, and whether trying again could help.
pub(crate) struct ConnectFailure {
    pub(crate) error: Error,
    /// Retrying will not help (bad password, unknown database): report it at once.
    pub(crate) permanent: bool,
}

/// What a successful handshake yields.
type Handshake = (
    tokio_postgres::Client,
    mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    i32,
    Arc<std::sync::Mutex<Option<tokio_postgres::Error>>>,
    Arc<std::sync::OnceLock<Instant>>,
);

/// Opens one connection: TCP, TLS, startup and authentication under `connect_timeout`
/// for each host in turn (as libpq does: every host of `host=a,b` gets the whole budget,
/// so a first host that drops packets or never answers does not use up the second's),
/// then the `after_connect` hook.
pub(crate) async fn open(ctx: &Arc<Ctx>, id: u64) -> Result<Box<Conn>, ConnectFailure> {
    let cfg = &ctx.config;
    let started = Instant::now();
    let pg = match &cfg.password_provider {
        None => cfg.pg.clone(),
        Some(provider) => {
            let mut pg = cfg.pg.clone();
            pg.password(ask_password(provider, cfg.connect_timeout).await?);
            pg
        }
    };
    let mut failure: Option<ConnectFailure> = None;
    let mut found = None;
    for (i, pg) in super::hosts::one_per_host(pg).into_iter().enumerate() {
        let host_started = Instant::now();
        // The first host shares `connect_timeout` with the password provider, as a
        // single host always did; each further host gets a budget of its own.
        let budget_end = if i == 0 { started } else { host_started } + cfg.connect_timeout;
        let attempt = async {
            let parts = handshake(cfg, pg).await?;
            let standby = if cfg.standby_only {
                Some(in_recovery(&parts.0).await?)
            } else {
                None
            };
            Ok::<_, tokio_postgres::Error>((parts, standby))
        };
        match tokio::time::timeout_at(budget_end, attempt).await {
            Ok(Ok((_, Some(false)))) => {
                // A replica's host that is a primary (or was promoted): try the next.
                failure = Some(ConnectFailure {
                    error: Error::config(
                        "replica",
                        format!(
                            "host {} is not a standby (pg_is_in_recovery() is false): a replica must be a \
                             streaming replica; list a promoted one as the primary",
                            i + 1
                        ),
                    ),
                    permanent: false,
                });
            }
            Ok(Ok((parts, _))) => {
                found = Some(parts);
                break;
            }
            Ok(Err(e)) => {
                // Permanent only if every host said no for good.
                let permanent = is_permanent(&e) && failure.as_ref().is_none_or(|f| f.permanent);
                failure = Some(ConnectFailure {
                    error: Error::Connect {
                        source: Arc::new(e),
                    },
                    permanent,
                });
            }
            Err(_) => {
                let error = Error::Timeout(Box::new(Timeout {
                    kind: TimeoutKind::Connect,
                    after: host_started.elapsed(),
                    status: None,
                    holders: Vec::new(),
                    last_connect_error: None,
                    statement: None,
                    unsent: false,
                    shared: false,
                }));
                failure = Some(ConnectFailure {
                    error,
                    permanent: false,
                });
            }
        }
    }
    let Some((client, rx, backend_pid, closed_by, closed_at)) = found else {
        return Err(failure.unwrap_or_else(|| ConnectFailure {
            error: Error::config("host", "no host to connect to"),
            permanent: true,
        }));
    };
    let expires = cfg
        .max_lifetime
        .map(|life| started + life - jitter(life / 8));
    let meta = ConnMeta {
        id,
        backend_pid,
        expires,
    };
    let mut conn = Box::new(Conn::new(Arc::new(client), Arc::clone(ctx), meta, rx));
    conn.state.closed_by = closed_by;
    conn.state.closed_at = closed_at;
    if let Some(hook) = cfg.after_connect.clone() {
        let checked = match hook(&mut conn).await {
            Ok(()) => conn.after_hook("after_connect"),
            Err(error) => Err(error),
        };
        if let Err(error) = checked {
            return Err(ConnectFailure {
                error,
                permanent: false,
            });
        }
    }
    Ok(conn)
}

/// Whether the server is in recovery (a standby).
async fn in_recovery(client: &tokio_postgres::Client) -> Result<bool, tokio_postgres::Error> {
    let messages = client.simple_query("SELECT pg_is_in_recovery()").await?;
    Ok(messages.iter().any(
        |m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("t")),
    ))
}

/// The handshake with one host, and the task that reads the connection's messages.
async fn handshake(
    cfg: &super::settings::ConnConfig,
    pg: tokio_postgres::Config,
) -> Result<Handshake, tokio_postgres::Error> {
    let (client, mut messages) = cfg.connector.connect(pg).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let closed_by: Arc<std::sync::Mutex<Option<tokio_postgres::Error>>> = Arc::default();
    let slot = Arc::clone(&closed_by);
    let closed_at: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let ended = Arc::clone(&closed_at);
    tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n);
                }
                Ok(AsyncMessage::Notice(notice)) => {
                    tracing::debug!(target: "pool_core", code = notice.code().code(), "server notice: {}", notice.message());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(target: "pool_core", error = %e, "connection closed");
                    // Kept for the error that reports the connection lost.
                    *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(e);
                    break;
                }
            }
        }
        // However it ended: an error, or the stream closed.
        let _ = ended.set(Instant::now());
    });
    let rows = client.simple_query("SELECT pg_backend_pid()").await?;
    let pid = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                r.get(0).and_then(|v| v.parse::<i32>().ok())
            }
            _ => None,
        })
        .unwrap_or(0);
    Ok((client, rx, pid, closed_by, closed_at))
}

/// Asks the password provider, within half of `connect_timeout` (the rest is left for the
/// handshake), so that a provider that fails or hangs is reported as such — never as a
/// bare connect timeout.
async fn ask_password(
    provider: &PasswordProvider,
    connect_timeout: std::time::Duration,
) -> Result<String, ConnectFailure> {
    let limit = connect_timeout / 2;
    let failure = |error| ConnectFailure {
        error,
        permanent: false,
    };
    match tokio::time::timeout(limit, provider()).await {
        Ok(Ok(password)) => Ok(password),
        Ok(Err(source)) => Err(failure(Error::Credentials {
            what: "failed".to_owned(),
            source: Some(Arc::from(source)),
        })),
        Err(_) => Err(failure(Error::Credentials {
            what: format!(
                "did not answer within {} (half of connect_timeout)",
                crate::status::DisplayDuration(limit)
            ),
            source: None,
        })),
    }
}

/// Errors that retrying cannot fix: the server answered and said no.
fn is_permanent(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 28xxx invalid authorization, 3D000 unknown database, 42704 unknown role.
        return code.starts_with("28") || code == "3D000" || code == "42704";
    }
    #[cfg(feature = "rustls")]
    if crate::error::certificate_refusal(e).is_some() {
        return true;
    }
    let text = e.to_string();
    text.starts_with("authentication error") || text.starts_with("invalid configuration")
}
