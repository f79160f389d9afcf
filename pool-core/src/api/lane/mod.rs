//! The shared lane: `Db`'s one-shot statements pipelined on shared connections.
//!
//! A one-shot on `Db` takes only statements that need no session (`OneShotSql`), and
//! each runs as its own implicit transaction with its own `Sync`: nothing it does
//! outlives it on the connection. So one connection can carry the one-shots of many
//! tasks at once, pipelined by the driver, without a checkout each.
//!
//! The lane's connections are ordinary checkouts, each held by a *keeper* task for as
//! long as it is shared, so shared and checked-out connections together never exceed
//! `max_size` (a keeper's checkout is exempt from leak warnings). A keeper opens its
//! connection when every shared one is busy, sets the session's `statement_timeout` to
//! just under the pool's (the server enforces the deadline; the client's is the pool's,
//! a backstop: a connection silent at it is retired), and gives it back — quiet, to the
//! idle list or a waiting checkout, through the normal check-in and reset — when it has
//! been idle a while, when a checkout waits (the lane keeps one while others remain),
//! when the connection dies or answers 25006, or when the pool closes. A deadline
//! shorter than the pool's abandons the response (the driver discards it when it
//! comes). A cancel request would cancel whatever that backend runs, so one is sent only
//! for an abandoned statement alone on its connection, which takes no new statement
//! until the cancel has landed and been absorbed. Behind a transaction-mode pooler
//! statements go unnamed, with parameter types learned from a checkout (`typed`).
//!
//! Capacity is a fair semaphore: `shared_in_flight` permits per shared connection, so
//! with every connection at its limit a one-shot waits first come first served, up to
//! `acquire_timeout`, and fails as a checkout would. A statement takes the least-loaded
//! connection.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::config::LanePlan;
use crate::conn::{
    Ctx, Pipelined, Place, Step, TextMap, cancel_and_drain, paired, placement, send, send_typed,
};
use crate::engine::Shared;
use crate::error::{Error, Result, Timeout, TimeoutKind, from_statement, is_fatal, preview};
use crate::status::{AtomicCounters, LaneStatus};
use crate::stmt::SqlParts;
use pool_sql::Classification;

use super::pool::Pool;

mod keeper;
mod typed;
use keeper::keeper;
pub(crate) use typed::How;
use typed::Learned;

/// How often a keeper looks at its connection and the pool.
const KEEPER_EVERY: Duration = Duration::from_millis(50);
/// How much sooner than the pool's `statement_timeout` the server ends a statement on a
/// shared connection (at most; a tenth of the timeout when that is less): its error then
/// arrives before the client's own deadline, which is the pool's, so the server is what
/// ends a slow statement and the ones queued behind it still finish in time.
const SERVER_MARGIN: Duration = Duration::from_millis(250);

/// The session `statement_timeout` of a shared connection for a pool's `d`.
fn server_deadline(d: Duration) -> Duration {
    d.saturating_sub(SERVER_MARGIN.min(d / 10))
}
/// A shared connection idle this long goes back to the pool.
const IDLE_BACK: Duration = Duration::from_secs(5);

/// One shared connection.
struct SharedConn {
    client: Arc<Client>,
    in_flight: AtomicUsize,
    /// Prepared statements of this connection, by text, with their classification (so a
    /// statement run again is not classified again).
    prepared: Mutex<TextMap<(Statement, Classification)>>,
    /// No new statements: going back to the pool once the last in flight is done.
    draining: AtomicBool,
    /// No new statements for now: an abandoned statement, alone on the connection, is
    /// being cancelled on the server.
    paused: AtomicBool,
    /// A statement was refused with 25006: the server may have turned read-only.
    refused_read_only: AtomicBool,
    /// A statement on it was abandoned after it may have been sent: the keeper makes the
    /// connection quiet (`cancel_and_drain`) before giving it back. Otherwise it is quiet
    /// already, and no cancel request is sent for nothing (each costs the server a
    /// process, and behind PgBouncer a server connection).
    abandoned: AtomicBool,
    /// Where the connection's reader records why it closed.
    closed_by: Arc<Mutex<Option<tokio_postgres::Error>>>,
    /// That cause once taken, for every statement in flight to report.
    cause: Mutex<Option<Arc<tokio_postgres::Error>>>,
    /// The keeper's wake-up.
    wake: Notify,
    /// When its last statement in flight ended.
    last_used: Mutex<Instant>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A pool's shared lane.
pub(crate) struct Lane {
    plan: LanePlan,
    conns: Mutex<Vec<Arc<SharedConn>>>,
    permits: Arc<Semaphore>,
    /// A keeper is opening a connection.
    growing: AtomicBool,
    statements: AtomicU64,
    waits: AtomicU64,
    lost: AtomicU64,
    waiting: AtomicUsize,
    /// Behind a pooler: what each statement's first run learned (see `typed`).
    learned: Mutex<TextMap<Arc<Learned>>>,
}

/// Gives the permit back and counts the statement out, however it ends.
struct InFlight<'a> {
    conn: &'a SharedConn,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Idle now: when it became so is what the keeper reads.
            *locked(&self.conn.last_used) = Instant::now();
        }
        if self.conn.draining.load(Ordering::Acquire) {
            self.conn.wake.notify_one();
        }
    }
}

impl SharedConn {
    /// Why the connection was lost, shared by every statement that was in flight: what
    /// one of the statements got from the server (a FATAL), else what its reader
    /// recorded, else the first statement's error. A bare "connection closed" waits a
    /// moment (up to 100 ms) for the real cause: the statement that got the server's
    /// FATAL, or the reader, may be a few polls behind.
    async fn cause_of_loss(&self, e: tokio_postgres::Error) -> Arc<tokio_postgres::Error> {
        let bare = e.as_db_error().is_none();
        if bare {
            for _ in 0..50 {
                // Only the server's word ends the wait early: the reader's socket error
                // may be recorded before the statement that got the FATAL has run.
                let known = locked(&self.cause)
                    .as_ref()
                    .is_some_and(|c| c.as_db_error().is_some())
                    || locked(&self.closed_by)
                        .as_ref()
                        .is_some_and(|c| c.as_db_error().is_some());
                if known {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let mut cause = locked(&self.cause);
        if let Some(c) = cause.as_ref()
            && (bare || c.as_db_error().is_some())
        {
            return Arc::clone(c);
        }
        // The server's own word (a FATAL) beats the reader's account of the socket
        // closing after it, which may have been recorded first.
        let c = if bare {
            Arc::new(locked(&self.closed_by).take().unwrap_or(e))
        } else {
            Arc::new(e)
        };
        *cause = Some(Arc::clone(&c));
        c
    }
}

/// Arms the cancel of an abandoned statement (see `Lane::abandoned`).
struct Abandon<'a> {
    lane: &'a Arc<Lane>,
    conn: &'a Arc<SharedConn>,
    ctx: &'a Arc<Ctx>,
    armed: bool,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.conn.abandoned.store(true, Ordering::Release);
            self.lane.abandoned(self.conn, self.ctx);
        }
    }
}

/// Cancels what `conn` runs and waits until it is quiet, then puts it back in service
/// (or out, if it did not answer).
async fn cancelled(lane: &Lane, conn: &Arc<SharedConn>, ctx: &Ctx) {
    if !cancel_and_drain(&conn.client, ctx).await {
        lane.lost.fetch_add(1, Ordering::Relaxed);
        lane.retire(conn);
    }
    conn.paused.store(false, Ordering::Release);
    // A keeper waiting to give the connection back may go on.
    conn.wake.notify_one();
}

impl Lane {
    pub(crate) fn new(plan: LanePlan) -> Lane {
        Lane {
            plan,
            conns: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(0)),
            growing: AtomicBool::new(false),
            statements: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            learned: Mutex::new(TextMap::default()),
        }
    }

    pub(crate) fn status(&self) -> LaneStatus {
        let conns = locked(&self.conns);
        LaneStatus {
            connections: conns.len(),
            in_flight: conns
                .iter()
                .map(|c| c.in_flight.load(Ordering::Relaxed))
                .sum(),
            waiting: self.waiting.load(Ordering::Relaxed),
            statements: self.statements.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }

    /// Opens one more shared connection (in a keeper task) if there is room and none is
    /// being opened.
    fn grow(self: &Arc<Self>, shared: &Arc<Shared>) {
        if locked(&self.conns).len() >= self.plan.connections
            || self.growing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.growing.store(false, Ordering::Release);
            return;
        };
        rt.spawn(keeper(
            Pool::single(Arc::clone(shared)),
            Arc::downgrade(self),
        ));
    }

    /// Takes `conn` out of service: no new statements; its keeper returns it once the
    /// ones in flight are done. Its capacity is withdrawn as permits come back.
    fn retire(&self, conn: &Arc<SharedConn>) {
        let removed = {
            let mut conns = locked(&self.conns);
            let before = conns.len();
            conns.retain(|c| !Arc::ptr_eq(c, conn));
            before != conns.len()
        };
        conn.draining.store(true, Ordering::Release);
        conn.wake.notify_one();
        if removed {
            let permits = Arc::clone(&self.permits);
            let n = u32::try_from(self.plan.in_flight).unwrap_or(u32::MAX);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Ok(p) = permits.acquire_many_owned(n).await {
                        p.forget();
                    }
                });
            }
        }
    }

    /// The least-loaded shared connection that is not closed or paused, if any, counted
    /// in (under the lock, so that `abandoned` sees every statement assigned to it).
    fn pick(&self) -> Option<Arc<SharedConn>> {
        let conns = locked(&self.conns);
        let conn = conns
            .iter()
            .filter(|c| !c.client.is_closed() && !c.paused.load(Ordering::Acquire))
            .min_by_key(|c| c.in_flight.load(Ordering::Relaxed))?;
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(Arc::clone(conn))
    }

    /// A statement on `conn` was abandoned after it may have been sent (its deadline
    /// passed, or its future was dropped). Alone on the connection, it is cancelled on
    /// the server: the connection takes no new statement until the cancel has landed
    /// and been absorbed (`cancel_and_drain`), so the cancel can hit nothing else. With
    /// others in flight it is left to the server's `statement_timeout`.
    fn abandoned(self: &Arc<Self>, conn: &Arc<SharedConn>, ctx: &Arc<Ctx>) {
        {
            let _conns = locked(&self.conns);
            if conn.in_flight.load(Ordering::Acquire) != 1
                || conn.paused.swap(true, Ordering::AcqRel)
            {
                return;
            }
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            conn.paused.store(false, Ordering::Release);
            return;
        };
        let (lane, conn, ctx) = (Arc::clone(self), Arc::clone(conn), Arc::clone(ctx));
        rt.spawn(async move {
            self::cancelled(&lane, &conn, &ctx).await;
        });
    }

    /// Runs a one-shot on the lane, `how` [`Lane::how`] said. `deadline` is the
    /// statement's own (the pool's `statement_timeout`, or a shorter per-call one).
    pub(crate) async fn run(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        parts: &SqlParts<'_>,
        params: &[&(dyn ToSql + Sync)],
        step: Step,
        deadline: Option<Duration>,
        how: How,
    ) -> Result<Pipelined> {
        #[cfg(feature = "spans")]
        {
            use tracing::Instrument;
            let span = crate::conn::statement_span(&shared.ctx, parts.text);
            self.run_in(shared, parts, params, step, deadline, how)
                .instrument(span)
                .await
        }
        #[cfg(not(feature = "spans"))]
        self.run_in(shared, parts, params, step, deadline, how)
            .await
    }

    /// [`Lane::run`], in the statement's span.
    async fn run_in(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        parts: &SqlParts<'_>,
        params: &[&(dyn ToSql + Sync)],
        step: Step,
        deadline: Option<Duration>,
        how: How,
    ) -> Result<Pipelined> {
        let until = Instant::now() + shared.acquire_timeout();
        let (permit, conn) = loop {
            let permit = match self.permits.try_acquire() {
                Ok(p) => p,
                Err(_) => {
                    // About to wait: a statement that cannot run here is refused first.
                    placement(parts, Place::Db, false)?;
                    self.grow(shared);
                    self.waits.fetch_add(1, Ordering::Relaxed);
                    self.waiting.fetch_add(1, Ordering::Relaxed);
                    let waited = self.wait_for_permit(shared, until).await;
                    self.waiting.fetch_sub(1, Ordering::Relaxed);
                    waited?
                }
            };
            match self.pick_live() {
                Some(conn) => break (permit, conn),
                None => {
                    // The permit is a retired connection's, not withdrawn yet: wait for
                    // a connection of the lane's own.
                    drop(permit);
                    self.grow(shared);
                    if Instant::now() >= until {
                        return Err(shared.acquire_timeout_error());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        if conn.in_flight.load(Ordering::Relaxed) > 1 {
            // Busy: more capacity if there is room.
            self.grow(shared);
        }
        let _in_flight = InFlight {
            conn: &conn,
            _permit: permit,
        };
        // A statement this connection prepared, or one learned from a checkout, was
        // admitted then; another is checked now, before anything is sent.
        let (cached, class, typed) = match &how {
            How::Typed(learned) => (
                None,
                learned.class,
                Some(paired(parts.text, &learned.types, params)?),
            ),
            How::Named => match locked(&conn.prepared).get(parts.text).cloned() {
                Some((st, class)) => (Some(st), class, None),
                None => (None, placement(parts, Place::Db, false)?, None),
            },
        };
        // Dropped first: sees this statement still counted in.
        let mut abandon = Abandon {
            lane: self,
            conn: &conn,
            ctx: &shared.ctx,
            armed: true,
        };
        let started = Instant::now();
        let work = async {
            if let Some(typed) = &typed {
                return send_typed(&conn.client, parts.text, typed, step).await;
            }
            let statement = match cached {
                Some(st) => st,
                None => self.prepare(&conn, parts.text, class).await?,
            };
            send(&conn.client, &statement, params, step).await
        };
        let outcome = match deadline {
            Some(d) => match tokio::time::timeout(d, work).await {
                Ok(res) => {
                    abandon.armed = false;
                    res
                }
                Err(_) => {
                    if Some(d) == shared.ctx.config.statement_timeout {
                        // The server ends every statement here just before this deadline:
                        // a connection that has not answered by now is not answering
                        // (a dead network, a hung server). Out of service; the keeper
                        // gives it back once it is quiet, or discards it.
                        self.retire(&conn);
                    }
                    AtomicCounters::bump(&shared.ctx.counters.statement_timeouts);
                    shared.ctx.telemetry.statement_timed_out();
                    return Err(Error::Timeout(Box::new(Timeout {
                        kind: TimeoutKind::Statement,
                        after: started.elapsed(),
                        status: None,
                        holders: Vec::new(),
                        last_connect_error: None,
                        statement: Some(preview(parts.text)),
                        unsent: false,
                        shared: true,
                    })));
                }
            },
            None => {
                let res = work.await;
                abandon.armed = false;
                res
            }
        };
        self.statements.fetch_add(1, Ordering::Relaxed);
        // Read-your-writes: a statement that may write has run (or may have).
        if !class.read_only
            && let Some(log) = &shared.ctx.config.writes
        {
            log.wrote();
        }
        match outcome {
            Ok(got) => Ok(got),
            Err(e) => {
                let code = e.as_db_error().map(|db| db.code().code());
                if conn.client.is_closed() || is_fatal(&e) {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                    self.retire(&conn);
                    return Err(Error::broken_by(
                        "while running a one-shot on a shared connection: it was sent and may have run",
                        conn.cause_of_loss(e).await,
                    ));
                } else if code == Some("25006") {
                    // A demoted primary: the keeper has the server asked on return.
                    conn.refused_read_only.store(true, Ordering::Release);
                    self.retire(&conn);
                } else if matches!(code, Some("0A000" | "26000")) {
                    // A cached plan invalidated by a schema change: prepare afresh.
                    locked(&conn.prepared).remove(parts.text);
                } else if typed.is_some() && code.is_some_and(|c| c.starts_with("42")) {
                    // Learned types may be stale after a schema change: ask again.
                    self.forget(parts.text);
                }
                Err(from_statement(e))
            }
        }
    }

    /// Waits, in line, for capacity until `until`; meanwhile asks for another shared
    /// connection now and then (a keeper that failed to get one does not leave the
    /// waiters stranded until their deadline).
    async fn wait_for_permit(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        until: Instant,
    ) -> Result<tokio::sync::SemaphorePermit<'_>> {
        let acquire = self.permits.acquire();
        tokio::pin!(acquire);
        loop {
            let nudge = (Instant::now() + KEEPER_EVERY).min(until);
            tokio::select! {
                got = &mut acquire => return got.map_err(|_| Error::Closed),
                () = tokio::time::sleep_until(nudge) => {
                    if Instant::now() >= until {
                        return Err(shared.acquire_timeout_error());
                    }
                    self.grow(shared);
                }
            }
        }
    }

    /// A live connection to send on; closed ones found on the way are retired (a
    /// statement not sent yet goes to another).
    fn pick_live(&self) -> Option<Arc<SharedConn>> {
        loop {
            let conn = self.pick()?;
            if !conn.client.is_closed() {
                return Some(conn);
            }
            conn.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.lost.fetch_add(1, Ordering::Relaxed);
            self.retire(&conn);
        }
    }

    /// Prepares `text` on `conn` and keeps it, with its classification.
    async fn prepare(
        &self,
        conn: &SharedConn,
        text: &str,
        class: Classification,
    ) -> std::result::Result<Statement, tokio_postgres::Error> {
        let st = conn.client.prepare(text).await?;
        let mut cache = locked(&conn.prepared);
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(text.into(), (st.clone(), class));
        Ok(st)
    }

    /// Gives every shared connection back (the pool is closing).
    pub(crate) fn close(&self) {
        let conns: Vec<_> = locked(&self.conns).drain(..).collect();
        for c in conns {
            c.draining.store(true, Ordering::Release);
            c.wake.notify_one();
        }
        self.permits.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_ends_a_shared_statement_just_before_the_client_would() {
        assert_eq!(
            server_deadline(Duration::from_secs(60)),
            Duration::from_millis(59_750)
        );
        assert_eq!(
            server_deadline(Duration::from_secs(2)),
            Duration::from_millis(1_800)
        );
        assert_eq!(
            server_deadline(Duration::from_millis(100)),
            Duration::from_millis(90)
        );
    }
}
