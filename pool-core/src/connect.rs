//! Opening connections: the deadline over the whole handshake, the connect task that
//! serves waiters, and the backoff that keeps a down server from a retry storm.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::AsyncMessage;
use tracing::Instrument;

use crate::conn::{Conn, ConnMeta};
use crate::error::{Error, Timeout, TimeoutKind};
use crate::pool::{Ctx, Shared, State};
use crate::status::AtomicCounters;

/// The first retry after a failed connect waits this long; each further failure doubles
/// it, up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_millis(25);
/// The longest pause between connect attempts while the server is unreachable.
const BACKOFF_CAP: Duration = Duration::from_secs(1);

/// A failed connection attempt, and whether trying again could help.
pub(crate) struct ConnectFailure {
    pub(crate) error: Error,
    /// Retrying will not help (bad password, unknown database): report it at once.
    pub(crate) permanent: bool,
}

/// Opens one connection: TCP, TLS, startup and authentication under `connect_timeout`,
/// then the `after_connect` hook.
pub(crate) async fn open(ctx: &Arc<Ctx>, id: u64) -> Result<Box<Conn>, ConnectFailure> {
    let cfg = &ctx.config;
    let started = Instant::now();
    let handshake = async {
        let (client, mut messages) = cfg.connector.connect(cfg.pg.clone()).await?;
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
        Ok::<_, tokio_postgres::Error>((client, rx, pid, closed_by, closed_at))
    };
    let (client, rx, backend_pid, closed_by, closed_at) =
        match tokio::time::timeout(cfg.connect_timeout, handshake).await {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => {
                let permanent = is_permanent(&e);
                return Err(ConnectFailure {
                    error: Error::Connect {
                        source: Arc::new(e),
                    },
                    permanent,
                });
            }
            Err(_) => {
                let error = Error::Timeout(Box::new(Timeout {
                    kind: TimeoutKind::Connect,
                    after: started.elapsed(),
                    status: None,
                    holders: Vec::new(),
                    last_connect_error: None,
                    statement: None,
                    unsent: false,
                }));
                return Err(ConnectFailure {
                    error,
                    permanent: false,
                });
            }
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
        if let Err(error) = hook(&mut conn).await {
            return Err(ConnectFailure {
                error,
                permanent: false,
            });
        }
        conn.state.touches = pool_sql::Touches::empty();
    }
    Ok(conn)
}

/// Errors that retrying cannot fix: the server answered and said no.
fn is_permanent(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 28xxx invalid authorization, 3D000 unknown database, 42704 unknown role.
        return code.starts_with("28") || code == "3D000" || code == "42704";
    }
    let text = e.to_string();
    text.starts_with("authentication error") || text.starts_with("invalid configuration")
}

/// Opens one connection for the pool, retrying with backoff while waiters still need it.
/// The caller reserved a slot (`size` and `connecting` were incremented).
///
/// While the server is failing, only one task at a time probes it; the others wait for
/// the probe's outcome (or the backoff to pass), so a pool of any size makes one attempt
/// per backoff period, not one per waiter.
pub(crate) async fn connect_task(shared: Arc<Shared>) {
    loop {
        let wait = {
            let now = Instant::now();
            let mut st = shared.lock();
            if st.closed {
                give_up(&shared, &mut st);
                return;
            }
            if st.connect_failures_in_row == 0 {
                None
            } else if st.need < st.connecting {
                // Nobody needs this connection any more; stop trying.
                give_up(&shared, &mut st);
                return;
            } else if st.probing || st.next_connect_at.is_some_and(|at| at > now) {
                Some(
                    st.next_connect_at
                        .unwrap_or(now)
                        .max(now + Duration::from_millis(5)),
                )
            } else {
                st.probing = true;
                None
            }
        };
        if let Some(at) = wait {
            let woken = shared.connect_gate.notified();
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = woken => {}
            }
            continue;
        }
        let id = shared.next_conn_id();
        let span = tracing::debug_span!(target: "pool_core", "connect", conn = id);
        let outcome = open(&shared.ctx, id).instrument(span).await;
        let now = Instant::now();
        let mut st = shared.lock();
        st.probing = false;
        match outcome {
            Ok(conn) => {
                AtomicCounters::bump(&shared.ctx.counters.created);
                tracing::debug!(target: "pool_core", conn = id, backend_pid = conn.meta.backend_pid, "connection opened");
                st.connecting -= 1;
                let recovered = st.connect_failures_in_row > 0;
                st.connect_failures_in_row = 0;
                st.next_connect_at = None;
                st.last_connect_error = None;
                shared.put_back(st, conn, now);
                if recovered {
                    // The server is back: the tasks waiting out the backoff go now.
                    shared.connect_gate.notify_waiters();
                }
                return;
            }
            Err(failure) => {
                AtomicCounters::bump(&shared.ctx.counters.connect_failures);
                tracing::debug!(target: "pool_core", error = %failure.error, permanent = failure.permanent, "connection attempt failed");
                st.connect_failures_in_row = st.connect_failures_in_row.saturating_add(1);
                st.next_connect_at = Some(now + backoff(st.connect_failures_in_row));
                let nothing_else_to_wait_for = st.size - st.connecting == 0;
                if failure.permanent && nothing_else_to_wait_for {
                    // No connection exists that could come back: tell the waiters now
                    // rather than at their deadline.
                    if let Error::Connect { source } = &failure.error {
                        let source = Arc::clone(source);
                        let gathered = shared.fail_all_waiters(&mut st, || Error::Connect {
                            source: Arc::clone(&source),
                        });
                        for conn in gathered {
                            shared.hand_off(&mut st, conn, now);
                        }
                    }
                }
                st.last_connect_error = Some(Arc::new(failure.error));
                let still_needed = !st.closed && !failure.permanent && st.need >= st.connecting;
                if !still_needed {
                    give_up(&shared, &mut st);
                    return;
                }
            }
        }
    }
}

/// Gives back the slot a connect task reserved.
fn give_up(shared: &Arc<Shared>, st: &mut State) {
    st.connecting -= 1;
    st.size -= 1;
    shared.after_shrink(st);
}

/// Capped exponential backoff with ±25 % jitter, so many pools restarting together do
/// not reconnect in lock step.
fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let d = exp.min(BACKOFF_CAP);
    d - d / 4 + jitter(d / 2)
}

/// A random duration in `[0, max]`.
pub(crate) fn jitter(max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(random_u64() % (nanos + 1))
}

/// A cheap pseudo-random number (splitmix64 over a randomly seeded counter).
pub(crate) fn random_u64() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut z = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    if z == 0 {
        let seed = RandomState::new().hash_one(std::time::SystemTime::now());
        let _ = STATE.compare_exchange(0, seed | 1, Ordering::Relaxed, Ordering::Relaxed);
        z = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    }
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
