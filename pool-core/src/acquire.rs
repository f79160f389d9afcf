//! Checking out connections: the fast path, waiting, validation, deadlines.
//!
//! An acquire that finds an idle connection takes it in its first poll, under one lock,
//! with no allocation. One that must wait joins the FIFO queue with a oneshot channel and
//! is handed a connection already recorded as its own, so it needs no second trip
//! through the lock. `acquire_timeout` for waiters is enforced by one deadline sweeper per
//! pool instead of a timer per waiter: every waiter's deadline is its arrival plus the
//! same timeout and the queue is FIFO, so deadlines grow from front to back and the
//! sweeper only ever sleeps until the front one.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::NestedCheckout;
use crate::conn::Conn;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::pool::{Handoff, HandoffMany, HolderEntry, HolderKey, Shared, State};
use crate::pooled::{ConnSet, PooledConn};
use crate::status::{AtomicCounters, DiscardReason, Site, TaskKey};
use crate::sweeper::Sweep;

type Slow = Pin<Box<dyn Future<Output = Result<(Box<Conn>, HolderKey, Instant)>> + Send>>;

/// The future returned by [`Db::acquire`]: resolves to a held connection.
///
/// An idle connection is taken in the first poll, with no allocation. Otherwise the task
/// joins a FIFO queue until a connection is returned or opened, or `acquire_timeout`
/// passes.
///
/// Cancellation: dropping it at any point leaves the pool as if it had never been called;
/// a connection handed over at the moment of the drop goes back to the pool.
#[must_use = "futures do nothing unless awaited"]
pub struct Acquire<'db> {
    db: &'db Db,
    site: Site,
    phase: Phase,
}

enum Phase {
    /// Not polled yet.
    Start,
    /// In the queue; the deadline sweeper enforces the deadline.
    Wait {
        rx: oneshot::Receiver<Handoff>,
        started: Instant,
        task: TaskKey,
    },
    /// Validation before hand-out, a retry after a broken hand-over, or waiting with a
    /// timer of its own.
    Slow(Slow),
    /// Resolved.
    Done,
}

impl std::fmt::Debug for Acquire<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquire")
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

impl<'db> Acquire<'db> {
    pub(crate) fn new(db: &'db Db, site: &'static Location<'static>) -> Acquire<'db> {
        Acquire {
            db,
            site: Site(site),
            phase: Phase::Start,
        }
    }
}

/// What the first, synchronous attempt found.
enum First {
    Ready(Box<Conn>, HolderKey, Instant),
    Validate(Box<Conn>),
    /// An idle connection recently used: hand out without a ping.
    Take(Box<Conn>),
    /// Queued, and what the deadline needs.
    Wait(oneshot::Receiver<Handoff>, Sweep),
    /// Placeholder while the loop moves the previous value out.
    Empty,
}

impl<'db> Future for Acquire<'db> {
    type Output = Result<PooledConn<'db>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let shared = &this.db.pool.shared;
        loop {
            match &mut this.phase {
                Phase::Start => {
                    // Take part in tokio's cooperative budget like its own resources do,
                    // so a loop of checkouts that never waits still lets other tasks run.
                    let coop = ready!(tokio::task::coop::poll_proceed(cx));
                    let task = TaskKey::current();
                    let started = Instant::now();
                    // Resolving from here leaves the phase at `Start` (nothing to clean
                    // up on drop), which also spares rewriting it on the fast path.
                    match try_acquire(shared, task, this.site, started) {
                        Err(e) => {
                            coop.made_progress();
                            return Poll::Ready(Err(e));
                        }
                        Ok(First::Ready(conn, key, since)) => {
                            coop.made_progress();
                            return Poll::Ready(Ok(PooledConn::new(
                                this.db, conn, key, this.site, since,
                            )));
                        }
                        Ok(First::Wait(rx, sweep)) => {
                            this.phase = if sweep.start(shared) {
                                Phase::Wait { rx, started, task }
                            } else {
                                // No runtime for the sweeper: a timer of its own.
                                Phase::Slow(Box::pin(slow_path(
                                    Arc::clone(shared),
                                    task,
                                    this.site,
                                    First::Wait(rx, Sweep::Unavailable),
                                    started,
                                    false,
                                )))
                            };
                        }
                        Ok(first) => {
                            this.phase = Phase::Slow(Box::pin(slow_path(
                                Arc::clone(shared),
                                task,
                                this.site,
                                first,
                                started,
                                false,
                            )));
                        }
                    }
                }
                Phase::Wait { rx, .. } => {
                    let res = ready!(Pin::new(rx).poll(cx));
                    let Phase::Wait { started, task, .. } =
                        std::mem::replace(&mut this.phase, Phase::Done)
                    else {
                        return Poll::Pending;
                    };
                    let (conn, key, since) = match res {
                        Ok(Ok(handed)) => handed,
                        Ok(Err(e)) => {
                            record_wait(shared, started, Instant::now());
                            return Poll::Ready(Err(e));
                        }
                        // The sender is only dropped with the pool's state.
                        Err(_) => return Poll::Ready(Err(Error::Closed)),
                    };
                    match take_handed(shared, conn, key) {
                        Err(e) => {
                            record_wait(shared, started, since);
                            return Poll::Ready(Err(e));
                        }
                        Ok(Some((conn, key))) => {
                            record_wait(shared, started, since);
                            return Poll::Ready(Ok(PooledConn::new(
                                this.db, conn, key, this.site, since,
                            )));
                        }
                        Ok(None) => {}
                    }
                    let deadline = started + shared.acquire_timeout();
                    match requeue(shared, task, this.site, deadline) {
                        Err(e) => {
                            record_wait(shared, started, Instant::now());
                            return Poll::Ready(Err(e));
                        }
                        Ok(first) => {
                            this.phase = Phase::Slow(Box::pin(slow_path(
                                Arc::clone(shared),
                                task,
                                this.site,
                                first,
                                started,
                                true,
                            )));
                        }
                    }
                }
                Phase::Slow(slow) => {
                    let res = ready!(slow.as_mut().poll(cx));
                    this.phase = Phase::Done;
                    return Poll::Ready(res.map(|(conn, key, since)| {
                        PooledConn::new(this.db, conn, key, this.site, since)
                    }));
                }
                Phase::Done => return Poll::Pending,
            }
        }
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        if let Phase::Wait { rx, .. } = &mut self.phase {
            leave_queue(&self.db.pool.shared, rx);
        }
    }
}

/// Counts an acquire that had to wait, and for how long.
fn record_wait(shared: &Shared, started: Instant, until: Instant) {
    let counters = &shared.ctx.counters;
    AtomicCounters::bump(&counters.waits);
    let nanos =
        u64::try_from(until.saturating_duration_since(started).as_nanos()).unwrap_or(u64::MAX);
    counters.wait_nanos.fetch_add(nanos, Ordering::Relaxed);
}

/// Refuses a checkout by a task that already holds one (per policy).
fn nested_check(shared: &Shared, st: &State, task: TaskKey, site: Site) -> Result<()> {
    let policy = shared.config().nested_checkout;
    if policy == NestedCheckout::Allow || !shared.config().bookkeeping {
        return Ok(());
    }
    let Some(first) = Shared::held_by(st, task) else {
        return Ok(());
    };
    AtomicCounters::bump(&shared.ctx.counters.nested_checkouts);
    match policy {
        NestedCheckout::Error => Err(Error::NestedCheckout {
            first,
            second: site,
        }),
        _ => {
            tracing::warn!(
                target: "pool_core",
                %first, second = %site, %task,
                "nested checkout: this task already holds a connection from this pool and asked for another; \
                 under load this deadlocks the pool"
            );
            Ok(())
        }
    }
}

fn try_acquire(shared: &Arc<Shared>, task: TaskKey, site: Site, now: Instant) -> Result<First> {
    shared.ensure_maintenance();
    let mut trash = Vec::new();
    let first = {
        let mut st = shared.lock();
        if st.closed {
            return Err(Error::Closed);
        }
        nested_check(shared, &st, task, site)?;
        let found = if st.waiting == 0 {
            if let Some((conn, since)) = shared.pop_idle(&mut st, now, &mut trash) {
                if shared.needs_validation(since, now) {
                    Some(First::Validate(conn))
                } else {
                    let key =
                        shared.record_holder(&mut st, HolderEntry::new(site, task, now, &conn));
                    AtomicCounters::bump(&shared.ctx.counters.acquires);
                    Some(First::Ready(conn, key, now))
                }
            } else {
                None
            }
        } else {
            None
        };
        match found {
            Some(first) => first,
            None => {
                if let Some(max) = shared.config().max_waiting
                    && st.waiting >= max
                {
                    return Err(Error::TooManyWaiters {
                        waiting: st.waiting,
                        max_waiting: max,
                    });
                }
                if !trash.is_empty() {
                    shared.spawn_connects(&mut st);
                }
                let deadline = now + shared.acquire_timeout();
                let (rx, sweep) = shared.enqueue_one(&mut st, false, site, task, deadline);
                First::Wait(rx, sweep)
            }
        }
    };
    drop(trash);
    Ok(first)
}

/// Holds a connection on its way to a borrower; gives it back to the pool if the
/// acquire is abandoned.
struct Candidate {
    shared: Arc<Shared>,
    conn: Option<Box<Conn>>,
}

impl Drop for Candidate {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.shared.checkin(conn, None);
        }
    }
}

/// Waits in the queue; leaves it cleanly if abandoned.
struct Waiting {
    shared: Arc<Shared>,
    rx: oneshot::Receiver<Handoff>,
    done: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.done {
            leave_queue(&self.shared, &mut self.rx);
        }
    }
}

/// A single waiter gives up: a connection handed over at that moment goes back to the
/// pool; otherwise the queue is told one waiter fewer.
fn leave_queue(shared: &Arc<Shared>, rx: &mut oneshot::Receiver<Handoff>) {
    rx.close();
    match rx.try_recv() {
        Ok(Ok((conn, key, _))) => shared.checkin(conn, Some(key)),
        Ok(Err(_)) => {}
        Err(_) => shared.leave_one(),
    }
}

/// Takes a connection handed over from the queue (already recorded as this task's):
/// `Some` if it can be used, `None` if it was found broken and discarded (wait again),
/// `Closed` if the pool closed meanwhile (the connection goes back).
fn take_handed(
    shared: &Arc<Shared>,
    conn: Box<Conn>,
    key: HolderKey,
) -> Result<Option<(Box<Conn>, HolderKey)>> {
    if shared.closed.load(Ordering::Acquire) {
        shared.checkin(conn, Some(key));
        return Err(Error::Closed);
    }
    if conn.is_broken() {
        shared.discard_held(conn, key, DiscardReason::Broken);
        return Ok(None);
    }
    AtomicCounters::bump(&shared.ctx.counters.acquires);
    Ok(Some((conn, key)))
}

impl Waiting {
    async fn recv(&mut self) -> Result<(Box<Conn>, HolderKey, Instant)> {
        let res = (&mut self.rx).await;
        self.done = true;
        match res {
            Ok(handoff) => handoff,
            // The sender is only dropped with the pool's state, i.e. never while we wait.
            Err(_) => Err(Error::Closed),
        }
    }
}

async fn slow_path(
    shared: Arc<Shared>,
    task: TaskKey,
    site: Site,
    first: First,
    started: Instant,
    waited: bool,
) -> Result<(Box<Conn>, HolderKey, Instant)> {
    let deadline = started + shared.acquire_timeout();
    let waited = waited || matches!(first, First::Wait(..));
    let res =
        tokio::time::timeout_at(deadline, acquire_loop(&shared, task, site, first, deadline)).await;
    if waited {
        record_wait(&shared, started, Instant::now());
    }
    match res {
        Ok(res) => res,
        Err(_) => {
            AtomicCounters::bump(&shared.ctx.counters.timeouts);
            Err(acquire_timeout_error(&shared))
        }
    }
}

pub(crate) fn acquire_timeout_error(shared: &Shared) -> Error {
    let timeout = shared.acquire_timeout_locked(&shared.lock(), Instant::now());
    Error::Timeout(Box::new(timeout))
}

async fn acquire_loop(
    shared: &Arc<Shared>,
    task: TaskKey,
    site: Site,
    mut next: First,
    deadline: Instant,
) -> Result<(Box<Conn>, HolderKey, Instant)> {
    loop {
        let (conn, validate) = match std::mem::replace(&mut next, First::Empty) {
            First::Ready(conn, key, since) => return Ok((conn, key, since)),
            First::Validate(conn) => (conn, true),
            First::Take(conn) => (conn, false),
            First::Empty => return Err(Error::Closed),
            First::Wait(rx, sweep) => {
                // This path has a timer of its own; the sweeper serves the others.
                sweep.start(shared);
                let mut waiting = Waiting {
                    shared: Arc::clone(shared),
                    rx,
                    done: false,
                };
                // Handed over already recorded as this task's.
                let (conn, key, since) = waiting.recv().await?;
                if let Some((conn, key)) = take_handed(shared, conn, key)? {
                    return Ok((conn, key, since));
                }
                next = requeue(shared, task, site, deadline)?;
                continue;
            }
        };
        let mut candidate = Candidate {
            shared: Arc::clone(shared),
            conn: Some(conn),
        };
        let usable = match candidate.conn.as_mut() {
            None => false,
            Some(conn) if conn.is_broken() => false,
            Some(conn) if validate => {
                let limit = shared.config().connect_timeout;
                conn.ping(limit).await
            }
            Some(_) => true,
        };
        if !usable {
            if let Some(conn) = candidate.conn.take() {
                let reason = if validate {
                    DiscardReason::FailedValidation
                } else {
                    DiscardReason::Broken
                };
                shared.discard(conn, reason);
            }
            next = requeue(shared, task, site, deadline)?;
            continue;
        }
        let now = Instant::now();
        let mut st = shared.lock();
        if st.closed {
            drop(st);
            return Err(Error::Closed);
        }
        let Some(conn) = candidate.conn.take() else {
            continue;
        };
        let key = shared.record_holder(&mut st, HolderEntry::new(site, task, now, &conn));
        AtomicCounters::bump(&shared.ctx.counters.acquires);
        return Ok((conn, key, now));
    }
}

/// After a connection turned out unusable: take another idle one, or wait.
fn requeue(shared: &Arc<Shared>, task: TaskKey, site: Site, deadline: Instant) -> Result<First> {
    let now = Instant::now();
    let mut trash = Vec::new();
    let next = {
        let mut st = shared.lock();
        if st.closed {
            return Err(Error::Closed);
        }
        match shared.pop_idle(&mut st, now, &mut trash) {
            Some((conn, since)) if shared.needs_validation(since, now) => First::Validate(conn),
            Some((conn, _)) => First::Take(conn),
            // Back to the head of the queue: this task was already served once.
            None => {
                let (rx, sweep) = shared.enqueue_one(&mut st, true, site, task, deadline);
                First::Wait(rx, sweep)
            }
        }
    };
    drop(trash);
    Ok(next)
}

/// Waits for a set of connections; leaves the queue cleanly if abandoned.
struct WaitingMany {
    shared: Arc<Shared>,
    id: u64,
    rx: oneshot::Receiver<HandoffMany>,
    done: bool,
}

impl Drop for WaitingMany {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.rx.close();
        match self.rx.try_recv() {
            Ok(Ok(conns)) => {
                for conn in conns {
                    self.shared.checkin(conn, None);
                }
            }
            Ok(Err(_)) => {}
            Err(_) => self.shared.leave_many(self.id),
        }
    }
}

/// Checks out `n` connections at once, all or none: the task never holds some while
/// waiting for the rest, so two tasks that each need two cannot deadlock each other.
pub(crate) async fn acquire_many(db: &Db, n: usize, site: Site) -> Result<ConnSet<'_>> {
    let shared = &db.pool.shared;
    let max = shared.config().max_size;
    if n > max {
        return Err(Error::config(
            "max_size",
            format!(
                "is {max}, but acquire_many asked for {n} connections at once; raise max_size or ask for fewer"
            ),
        ));
    }
    let task = TaskKey::current();
    let started = Instant::now();
    let mut trash = Vec::new();
    let waiting = {
        let mut st = shared.lock();
        if st.closed {
            return Err(Error::Closed);
        }
        nested_check(shared, &st, task, site)?;
        let mut got = Vec::with_capacity(n);
        if st.waiting == 0 {
            while got.len() < n {
                match shared.pop_idle(&mut st, started, &mut trash) {
                    Some((conn, _)) => got.push(conn),
                    None => break,
                }
            }
        }
        if got.len() == n {
            let set = register_all(shared, &mut st, got, task, site, started);
            drop(st);
            drop(trash);
            return Ok(ConnSet::new(db, set, site, started));
        }
        if let Some(max) = shared.config().max_waiting
            && st.waiting >= max
        {
            for conn in got {
                shared.hand_off(&mut st, conn, started);
            }
            return Err(Error::TooManyWaiters {
                waiting: st.waiting,
                max_waiting: max,
            });
        }
        let (id, rx) = shared.enqueue_many(&mut st, n, false);
        for conn in got {
            shared.hand_off(&mut st, conn, started);
        }
        WaitingMany {
            shared: Arc::clone(shared),
            id,
            rx,
            done: false,
        }
    };
    drop(trash);
    let mut waiting = waiting;
    let deadline = started + shared.acquire_timeout();
    AtomicCounters::bump(&shared.ctx.counters.waits);
    let conns = loop {
        let res = tokio::time::timeout_at(deadline, &mut waiting.rx).await;
        let conns = match res {
            Ok(Ok(handoff)) => {
                waiting.done = true;
                handoff?
            }
            Ok(Err(_)) => {
                waiting.done = true;
                return Err(Error::Closed);
            }
            Err(_) => {
                drop(waiting);
                AtomicCounters::bump(&shared.ctx.counters.timeouts);
                return Err(acquire_timeout_error(shared));
            }
        };
        if conns.iter().all(|c| !c.is_broken()) {
            break conns;
        }
        // Some died while the set was gathered. Never hold the rest while waiting for
        // replacements: close the dead ones, then, under one lock, go back to the head
        // of the queue and give the living ones back — straight into this task's own
        // entry — and wait for the set again.
        let (alive, dead): (Vec<_>, Vec<_>) = conns.into_iter().partition(|c| !c.is_broken());
        for conn in dead {
            shared.discard(conn, DiscardReason::Broken);
        }
        let now = Instant::now();
        let mut st = shared.lock();
        if st.closed {
            st.size -= alive.len();
            for _ in &alive {
                shared.ctx.counters.discard(DiscardReason::Closed);
            }
            shared.after_shrink(&mut st);
            return Err(Error::Closed);
        }
        let (id, rx) = shared.enqueue_many(&mut st, n, true);
        for conn in alive {
            shared.hand_off(&mut st, conn, now);
        }
        drop(st);
        waiting = WaitingMany {
            shared: Arc::clone(shared),
            id,
            rx,
            done: false,
        };
    };
    let now = Instant::now();
    let mut st = shared.lock();
    let set = register_all(shared, &mut st, conns, task, site, now);
    drop(st);
    Ok(ConnSet::new(db, set, site, now))
}

fn register_all(
    shared: &Shared,
    st: &mut State,
    conns: Vec<Box<Conn>>,
    task: TaskKey,
    site: Site,
    now: Instant,
) -> Vec<(Box<Conn>, HolderKey)> {
    conns
        .into_iter()
        .map(|conn| {
            let key = shared.record_holder(st, HolderEntry::new(site, task, now, &conn));
            AtomicCounters::bump(&shared.ctx.counters.acquires);
            (conn, key)
        })
        .collect()
}
