//! Checking out one connection: the fast path, the one waiting protocol, validation,
//! deadlines.
//!
//! # The state machine
//!
//! ```text
//!  Start ──idle connection, nobody waiting──────────────────────────▶ resolved (no allocation)
//!    │
//!    ├─ queued, the sweeper keeps the deadline ─▶ Wait ──handed over, usable──▶ resolved
//!    │                                              │
//!    │                                              └─ broken, or taken back ─┐
//!    └─ must validate an idle connection, or no runtime for the sweeper ──────┴▶ Slow ──▶ resolved
//! ```
//!
//! * **Start** (first poll): one lock. Refuses if the pool is closed or this task
//!   already holds a connection; takes the most recently returned idle connection when
//!   no one waits, recording the holder in the same critical section; otherwise joins
//!   the FIFO queue and arms the deadline sweeper (`sweeper.rs`).
//! * **Wait**: a oneshot receiver. The connection arrives already recorded as this
//!   task's, so the woken waiter takes no lock; the sweeper sends the timeout instead if
//!   the deadline passes first.
//! * **Slow**: a boxed future with a timer of its own, for everything rare: pinging an
//!   idle connection (`validate_after_idle`), waiting again after a hand-over found
//!   broken, waiting on a runtime where the sweeper cannot run.
//!
//! What a waiter does with what the queue sends is written once, in `received`: take
//! the connection, or — found broken — discard it and go back to the head of the queue.
//!
//! Cancellation: dropping a checkout at any point leaves the pool as if it had never
//! been asked; a connection handed over at the moment of the drop goes back.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::holders::HolderEntry;
use super::queue::{Handoff, Lease};
use super::sweeper::{Sweep, arm_sweeper};
use super::{Shared, State};
use crate::config::NestedCheckout;
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::status::{AtomicCounters, DiscardReason, Site, TaskKey};

type Slow = Pin<Box<dyn Future<Output = Result<Lease>> + Send>>;

use super::slow::{requeue, slow_path};

/// A checkout in progress (the engine's half of `Acquire`).
pub(crate) struct Acquiring {
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
    /// Validation before hand-out, waiting again after a broken hand-over, or waiting
    /// with a timer of its own.
    Slow(Slow),
    /// Resolved.
    Done,
}

/// What the first, synchronous attempt found.
pub(super) enum First {
    Ready(Lease),
    /// Handed over through the queue (recorded as held) and still to pass the
    /// `before_acquire` hook.
    Handed(Lease),
    Validate(Box<Conn>),
    /// An idle connection recently used: hand out without a ping.
    Take(Box<Conn>),
    /// Queued, and what the deadline needs.
    Wait(oneshot::Receiver<Handoff>, Sweep),
    /// Placeholder while the loop moves the previous value out.
    Empty,
}

impl Acquiring {
    pub(crate) const fn new() -> Acquiring {
        Acquiring {
            phase: Phase::Start,
        }
    }

    /// Drives the checkout for `site`; `hold` makes the borrower's handle from what is
    /// handed out (built where the result is written, so the fast path copies nothing).
    pub(crate) fn poll<T>(
        &mut self,
        shared: &Arc<Shared>,
        site: Site,
        cx: &mut Context<'_>,
        hold: impl FnOnce(Lease) -> T,
    ) -> Poll<Result<T>> {
        if let Phase::Start = self.phase {
            // Take part in tokio's cooperative budget like its own resources do, so a
            // loop of checkouts that never waits still lets other tasks run.
            let coop = ready!(tokio::task::coop::poll_proceed(cx));
            let task = TaskKey::current();
            let started = Instant::now();
            // Resolving from here leaves the phase at `Start` (nothing to clean up on
            // drop), which also spares rewriting it on the fast path.
            match try_acquire(shared, task, site, started) {
                Err(e) => {
                    coop.made_progress();
                    return Poll::Ready(Err(e));
                }
                Ok(First::Ready(lease)) => {
                    coop.made_progress();
                    return Poll::Ready(Ok(hold(lease)));
                }
                Ok(first) => self.phase = queued(shared, task, site, first, started),
            }
        }
        // Everything but the fast path, in a function of its own so that the fast path
        // stays small.
        self.poll_queued(shared, site, cx).map(|res| res.map(hold))
    }

    fn poll_queued(
        &mut self,
        shared: &Arc<Shared>,
        site: Site,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Lease>> {
        loop {
            match &mut self.phase {
                Phase::Wait { rx, .. } => {
                    let res = ready!(Pin::new(rx).poll(cx));
                    let Phase::Wait { started, task, .. } =
                        std::mem::replace(&mut self.phase, Phase::Done)
                    else {
                        return Poll::Pending;
                    };
                    match received(shared, res, task, site, started) {
                        Ok(Ok(lease)) if shared.ctx.config.before_acquire.is_some() => {
                            let next = First::Handed(lease);
                            self.phase = slow(shared, task, site, next, started, true);
                        }
                        Ok(Ok(lease)) => {
                            record_wait(shared, started, lease.since);
                            return Poll::Ready(Ok(lease));
                        }
                        Ok(Err(next)) => {
                            self.phase = slow(shared, task, site, next, started, true);
                        }
                        Err(e) => {
                            record_wait(shared, started, Instant::now());
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                Phase::Slow(slow) => {
                    let res = ready!(slow.as_mut().poll(cx));
                    self.phase = Phase::Done;
                    return Poll::Ready(res);
                }
                // `Start` is left by `poll` before it gets here; `Done` is resolved.
                Phase::Start | Phase::Done => return Poll::Pending,
            }
        }
    }

    /// The checkout is dropped: leave the queue (a connection handed over at this moment
    /// goes back). The slow path's own guards do the same when it is dropped.
    pub(crate) fn abandon(&mut self, shared: &Arc<Shared>) {
        if let Phase::Wait { rx, .. } = &mut self.phase {
            leave_queue(shared, rx);
        }
    }
}

/// Where a checkout that could not be served at once goes: the queue, with the
/// sweeper keeping its deadline, or the slow path.
fn queued(
    shared: &Arc<Shared>,
    task: TaskKey,
    site: Site,
    first: First,
    started: Instant,
) -> Phase {
    match first {
        First::Wait(rx, sweep) => {
            if sweep.start(shared) {
                Phase::Wait { rx, started, task }
            } else {
                // No runtime for the sweeper: a timer of its own.
                let first = First::Wait(rx, Sweep::Unavailable);
                slow(shared, task, site, first, started, false)
            }
        }
        first => slow(shared, task, site, first, started, false),
    }
}

/// The slow path, boxed.
fn slow(
    shared: &Arc<Shared>,
    task: TaskKey,
    site: Site,
    first: First,
    started: Instant,
    waited: bool,
) -> Phase {
    Phase::Slow(Box::pin(slow_path(
        Arc::clone(shared),
        task,
        site,
        first,
        started,
        waited,
    )))
}

/// Counts an acquire that had to wait, and for how long.
pub(super) fn record_wait(shared: &Shared, started: Instant, until: Instant) {
    let counters = &shared.ctx.counters;
    AtomicCounters::bump(&counters.waits);
    let waited = until.saturating_duration_since(started);
    shared.ctx.telemetry.waited(waited);
    let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
    counters.wait_nanos.fetch_add(nanos, Ordering::Relaxed);
}

/// Refuses a checkout from a closed pool, or by a task that already holds a
/// connection (per the nested-checkout policy).
pub(super) fn may_check_out(shared: &Shared, st: &State, task: TaskKey, site: Site) -> Result<()> {
    if st.closed {
        return Err(Error::Closed);
    }
    let policy = shared.config.nested_checkout;
    if policy == NestedCheckout::Allow || !shared.config.bookkeeping {
        return Ok(());
    }
    match st.holders.held_by(task) {
        None => Ok(()),
        Some(first) => nested(shared, task, first, site),
    }
}

/// A task that holds `first` asks for another connection at `site`: refused or warned
/// about, per the policy. Out of line, so the checkout path keeps its registers.
#[cold]
#[inline(never)]
fn nested(shared: &Shared, task: TaskKey, first: Site, site: Site) -> Result<()> {
    let policy = shared.config.nested_checkout;
    AtomicCounters::bump(&shared.ctx.counters.nested_checkouts);
    shared.ctx.telemetry.nested_refused();
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

/// Refuses a new waiter beyond `max_waiting`.
pub(super) fn check_room_to_wait(shared: &Shared, st: &State) -> Result<()> {
    match shared.config.max_waiting {
        Some(max) if st.queue.waiting() >= max => {
            AtomicCounters::bump(&shared.ctx.counters.waiting_refused);
            Err(Error::TooManyWaiters {
                waiting: st.queue.waiting(),
                max_waiting: max,
            })
        }
        _ => Ok(()),
    }
}

fn try_acquire(shared: &Arc<Shared>, task: TaskKey, site: Site, now: Instant) -> Result<First> {
    shared.ensure_maintenance();
    let mut trash = Vec::new();
    let first = {
        let mut st = shared.lock();
        may_check_out(shared, &st, task, site)?;
        let found = if st.queue.waiting() == 0 {
            if let Some((conn, since)) = st.pop_idle(now, &shared.ctx, &mut trash) {
                if shared.needs_validation(since, now) {
                    Some(First::Validate(conn))
                } else if shared.ctx.config.before_acquire.is_some() {
                    // The hook runs on the slow path, within the acquire deadline.
                    Some(First::Take(conn))
                } else {
                    let key = st.holders.record(HolderEntry::new(site, task, now, &conn));
                    AtomicCounters::bump(&shared.ctx.counters.acquires);
                    Some(First::Ready(Lease {
                        conn,
                        key,
                        since: now,
                    }))
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
                check_room_to_wait(shared, &st)?;
                if !trash.is_empty() {
                    shared.spawn_connects(&mut st);
                }
                let deadline = now + shared.acquire_timeout();
                let (rx, sweep) = enqueue(shared, &mut st, site, task, deadline, false);
                First::Wait(rx, sweep)
            }
        }
    };
    drop(trash);
    Ok(first)
}

/// Joins the queue for one connection, starts the connects it needs, and says what its
/// deadline needs.
pub(super) fn enqueue(
    shared: &Arc<Shared>,
    st: &mut State,
    site: Site,
    task: TaskKey,
    deadline: Instant,
    front: bool,
) -> (oneshot::Receiver<Handoff>, Sweep) {
    let rx = st.queue.push_one(site, task, deadline, front);
    shared.spawn_connects(st);
    let sweep = arm_sweeper(shared, st, deadline);
    (rx, sweep)
}

/// A single waiter gives up: a connection handed over at that moment goes back to the
/// pool; otherwise the queue is told one waiter fewer.
pub(super) fn leave_queue(shared: &Arc<Shared>, rx: &mut oneshot::Receiver<Handoff>) {
    rx.close();
    match rx.try_recv() {
        Ok(Ok(lease)) => shared.checkin(lease.conn, Some(lease.key)),
        Ok(Err(_)) => {}
        Err(_) => shared.lock().queue.leave_one(),
    }
}

/// What a waiter does with what the queue sent (the one place for it, whoever enforces
/// the deadline): a usable connection is taken; one found broken is discarded and the
/// task looks again — another idle connection, or the head of the queue, since it was
/// already served once; `Closed` if the pool closed meanwhile (the connection goes back).
/// `Ok(Err(next))`: what to try next.
#[inline]
pub(super) fn received(
    shared: &Arc<Shared>,
    res: std::result::Result<Handoff, oneshot::error::RecvError>,
    task: TaskKey,
    site: Site,
    started: Instant,
) -> Result<std::result::Result<Lease, First>> {
    // The sender is only dropped with the pool's state, i.e. never while we wait.
    let lease = res.map_err(|_| Error::Closed)??;
    if shared.closed.load(Ordering::Acquire) {
        shared.checkin(lease.conn, Some(lease.key));
        return Err(Error::Closed);
    }
    if lease.conn.is_broken() {
        return broken_handoff(shared, lease, task, site, started).map(Err);
    }
    // With a `before_acquire` hook the checkout counts once the hook has passed it (a
    // refused hand-over, then another connection, is one checkout).
    if shared.ctx.config.before_acquire.is_none() {
        AtomicCounters::bump(&shared.ctx.counters.acquires);
    }
    Ok(Ok(lease))
}

/// A connection handed over broken: discard it and look again.
#[cold]
fn broken_handoff(
    shared: &Arc<Shared>,
    lease: Lease,
    task: TaskKey,
    site: Site,
    started: Instant,
) -> Result<First> {
    shared.discard_held(lease.conn, lease.key, DiscardReason::Broken);
    let deadline = started + shared.acquire_timeout();
    requeue(shared, task, site, deadline)
}

/// An acquire whose deadline passed: counted (and in the metrics), and its error.
pub(super) fn acquire_timed_out(shared: &Shared) -> Error {
    AtomicCounters::bump(&shared.ctx.counters.timeouts);
    shared.ctx.telemetry.timed_out(1);
    shared.acquire_timeout_error()
}
