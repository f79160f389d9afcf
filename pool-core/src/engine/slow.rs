//! The slow path of a checkout, for everything rare: pinging an idle connection before
//! hand-out (`validate_after_idle`), the `before_acquire` hook, waiting again after a
//! hand-over found broken, and waiting with a timer of its own where the deadline
//! sweeper cannot run. One boxed future with the acquire deadline over all of it.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Shared;
use super::acquire::{First, acquire_timed_out, enqueue, leave_queue, received, record_wait};
use super::holders::HolderEntry;
use super::queue::{Handoff, Lease};
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::status::{AtomicCounters, DiscardReason, Site, TaskKey};

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

/// A connection handed over (recorded as held) while the `before_acquire` hook looks at
/// it; given back to the pool if the acquire is abandoned meanwhile.
struct Held {
    shared: Arc<Shared>,
    lease: Option<Lease>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.shared.checkin(lease.conn, Some(lease.key));
        }
    }
}

/// Whether `conn` passes the `before_acquire` hook (true when there is none). A
/// rejected or failed connection's discard is counted already.
pub(super) async fn before_acquire(shared: &Shared, conn: &mut Conn) -> bool {
    match shared.ctx.config.before_acquire.clone() {
        None => true,
        Some(hook) => conn.passes(&hook, "before_acquire").await,
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

impl Waiting {
    async fn recv(&mut self) -> std::result::Result<Handoff, oneshot::error::RecvError> {
        let res = (&mut self.rx).await;
        self.done = true;
        res
    }
}

pub(super) async fn slow_path(
    shared: Arc<Shared>,
    task: TaskKey,
    site: Site,
    first: First,
    started: Instant,
    waited: bool,
) -> Result<Lease> {
    let deadline = started + shared.acquire_timeout();
    let waited = waited || matches!(first, First::Wait(..));
    let res =
        tokio::time::timeout_at(deadline, acquire_loop(&shared, task, site, first, started)).await;
    if waited {
        record_wait(&shared, started, Instant::now());
    }
    match res {
        Ok(res) => res,
        Err(_) => Err(acquire_timed_out(&shared)),
    }
}

async fn acquire_loop(
    shared: &Arc<Shared>,
    task: TaskKey,
    site: Site,
    mut next: First,
    started: Instant,
) -> Result<Lease> {
    let deadline = started + shared.acquire_timeout();
    loop {
        let (conn, validate) = match std::mem::replace(&mut next, First::Empty) {
            First::Ready(lease) => return Ok(lease),
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
                let res = waiting.recv().await;
                match received(shared, res, task, site, started)? {
                    Ok(lease) if shared.ctx.config.before_acquire.is_some() => {
                        next = First::Handed(lease);
                    }
                    Ok(lease) => return Ok(lease),
                    Err(again) => next = again,
                }
                continue;
            }
            First::Handed(lease) => {
                let mut held = Held {
                    shared: Arc::clone(shared),
                    lease: Some(lease),
                };
                if let Some(lease) = held.lease.as_mut()
                    && before_acquire(shared, &mut lease.conn).await
                {
                    // Counted here, not when handed over (see `received`).
                    AtomicCounters::bump(&shared.ctx.counters.acquires);
                    return held.lease.take().ok_or(Error::Closed);
                }
                if let Some(lease) = held.lease.take() {
                    shared.discard_held_counted(lease.conn, lease.key);
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
                let limit = shared.ctx.config.connect_timeout;
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
        if let Some(conn) = candidate.conn.as_mut()
            && !before_acquire(shared, conn).await
        {
            if let Some(conn) = candidate.conn.take() {
                shared.discard_counted(conn);
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
        let key = st.holders.record(HolderEntry::new(site, task, now, &conn));
        AtomicCounters::bump(&shared.ctx.counters.acquires);
        return Ok(Lease {
            conn,
            key,
            since: now,
        });
    }
}

/// After a connection turned out unusable: take another idle one, or wait.
pub(super) fn requeue(
    shared: &Arc<Shared>,
    task: TaskKey,
    site: Site,
    deadline: Instant,
) -> Result<First> {
    let now = Instant::now();
    let mut trash = Vec::new();
    let next = {
        let mut st = shared.lock();
        if st.closed {
            return Err(Error::Closed);
        }
        match st.pop_idle(now, &shared.ctx, &mut trash) {
            Some((conn, since)) if shared.needs_validation(since, now) => First::Validate(conn),
            Some((conn, _)) => First::Take(conn),
            // Back to the head of the queue: this task was already served once.
            None => {
                let (rx, sweep) = enqueue(shared, &mut st, site, task, deadline, true);
                First::Wait(rx, sweep)
            }
        }
    };
    drop(trash);
    Ok(next)
}
