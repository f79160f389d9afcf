//! The connect gate: the tasks that open connections for waiters, how many run, and the
//! backoff that keeps a down server from a retry storm.
//!
//! Connections are opened by background tasks, never by the acquiring task, so an
//! acquire dropped mid-wait never abandons a half-open connection, and no more
//! connections are opened than there are waiters to serve. While the server is failing,
//! only one task at a time probes it; the others wait for the probe's outcome (or the
//! backoff to pass), so a pool of any size makes one attempt per backoff period.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::{Shared, State};
use crate::conn::{self, ConnectFailure};
use crate::error::Error;
use crate::random::jitter;
use crate::status::AtomicCounters;

/// The first retry after a failed connect waits this long; each further failure doubles
/// it, up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_millis(25);
/// The longest pause between connect attempts while the server is unreachable.
const BACKOFF_CAP: Duration = Duration::from_secs(1);

/// What the pool knows about the server's willingness to accept connections.
#[derive(Default)]
pub(super) struct Gate {
    /// The last failed attempt; kept after a success, so a waiter that timed out still
    /// learns that the server was failing during its wait.
    last_error: Option<Arc<Error>>,
    /// When an attempt last succeeded after failures.
    recovered_at: Option<Instant>,
    failures_in_row: u32,
    /// No attempt before this (backoff).
    next_at: Option<Instant>,
    /// A connect task is probing a failing server; the others wait for its outcome.
    probing: bool,
}

/// What a connect task does next.
enum Step {
    /// Try to connect now.
    Go,
    /// Wait until then (or until the probe succeeds), and ask again.
    Wait(Instant),
    /// Stop: the connection is no longer needed.
    Stop,
}

impl Gate {
    /// The error of the last failed attempt, if the server has been failing at any
    /// moment since `since` (the start of a wait that timed out).
    pub(super) fn last_error(&self, since: Instant) -> Option<Arc<Error>> {
        let failing = self.failures_in_row > 0 || self.recovered_at.is_some_and(|at| at >= since);
        failing.then(|| self.last_error.clone()).flatten()
    }

    /// Whether attempts are paused by the backoff.
    pub(super) fn backing_off(&self, now: Instant) -> bool {
        self.next_at.is_some_and(|at| at > now)
    }

    /// What a connect task may do now; `needed`: the waiters need at least as many
    /// connections as are being opened.
    fn step(&mut self, now: Instant, needed: bool) -> Step {
        if self.failures_in_row == 0 {
            Step::Go
        } else if !needed {
            Step::Stop
        } else if self.probing || self.backing_off(now) {
            Step::Wait(
                self.next_at
                    .unwrap_or(now)
                    .max(now + Duration::from_millis(5)),
            )
        } else {
            self.probing = true;
            Step::Go
        }
    }

    /// An attempt succeeded. Whether the server had been failing.
    fn succeeded(&mut self) -> bool {
        self.probing = false;
        let recovered = self.failures_in_row > 0;
        self.failures_in_row = 0;
        self.next_at = None;
        if recovered {
            self.recovered_at = Some(Instant::now());
        }
        recovered
    }

    /// An attempt failed with `error`.
    fn failed(&mut self, now: Instant, error: Error) {
        self.probing = false;
        self.failures_in_row = self.failures_in_row.saturating_add(1);
        self.next_at = Some(now + backoff(self.failures_in_row));
        self.last_error = Some(Arc::new(error));
    }
}

impl Shared {
    /// Starts the connects worth starting for waiters not yet covered by a connection
    /// being opened, within `max_size`: those that would arrive in time to be of use
    /// (`demand.rs`). If that leaves waiters without one, looks again later.
    pub(super) fn spawn_connects(self: &Arc<Self>, st: &mut State) {
        let need = st.queue.need();
        if st.closed || st.slots.connecting() >= need || !st.slots.has_room() {
            return;
        }
        let now = Instant::now();
        // `acquire_many` waiters get all they need at once: what they have gathered is
        // held until they have the rest, so nothing would come back to serve them.
        let (single, many, gathered) = st.queue.need_split();
        let in_use =
            (st.slots.size() - st.slots.connecting()).saturating_sub(st.idle.len() + gathered);
        let oldest = st
            .queue
            .oldest_deadline()
            .and_then(|deadline| deadline.checked_sub(self.acquire_timeout()));
        let wanted = many + st.demand.wanted(single, in_use, &self.hold, oldest, now);
        self.spawn_connects_up_to(st, wanted);
        if st.slots.connecting() < need && st.slots.has_room() && !st.demand.recheck_pending {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            st.demand.recheck_pending = true;
            let at = now + st.demand.recheck_after();
            let pool = Arc::downgrade(self);
            rt.spawn(async move {
                tokio::time::sleep_until(at).await;
                if let Some(shared) = pool.upgrade() {
                    let mut st = shared.lock();
                    st.demand.recheck_pending = false;
                    shared.spawn_connects(&mut st);
                }
            });
        }
    }

    /// Starts a connect for every waiter not yet covered, within `max_size` (after a
    /// loss, a resize or a drain: capacity the pool had or was just given).
    pub(super) fn spawn_connects_now(self: &Arc<Self>, st: &mut State) {
        let need = st.queue.need();
        self.spawn_connects_up_to(st, need);
    }

    fn spawn_connects_up_to(self: &Arc<Self>, st: &mut State, wanted: usize) {
        while !st.closed && st.slots.connecting() < wanted && st.slots.has_room() {
            if !self.spawn_one_connect(st) {
                break;
            }
        }
    }

    /// Reserves a slot and starts a task that fills it. `false` without a runtime.
    pub(super) fn spawn_one_connect(self: &Arc<Self>, st: &mut State) -> bool {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        st.slots.reserve_connect();
        rt.spawn(connect_task(Arc::clone(self)));
        true
    }
}

/// Opens one connection for the pool, retrying with backoff while waiters still need it.
/// The caller reserved a slot.
async fn connect_task(shared: Arc<Shared>) {
    // A task makes its first attempt even while the server is failing (it waits its
    // turn behind the probe), so the maintenance pass's connects for `min_idle` probe
    // the server after an outage instead of giving up untried.
    let mut tried = false;
    loop {
        let step = {
            let now = Instant::now();
            let mut st = shared.lock();
            let needed = !tried || st.queue.need() >= st.slots.connecting();
            let step = if st.closed {
                Step::Stop
            } else {
                st.gate.step(now, needed)
            };
            if let Step::Stop = step {
                give_up(&shared, &mut st);
                return;
            }
            step
        };
        if let Step::Wait(at) = step {
            let woken = shared.connect_gate.notified();
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = woken => {}
            }
            continue;
        }
        tried = true;
        let id = shared.ctx.next_conn_id();
        let span = tracing::debug_span!(target: "pool_core", "connect", conn = id);
        let started = Instant::now();
        let outcome = conn::open(&shared.ctx, id).instrument(span).await;
        let now = Instant::now();
        let mut st = shared.lock();
        match outcome {
            Ok(conn) => {
                st.demand.connected(now - started);
                shared.ctx.telemetry.created(now - started);
                AtomicCounters::bump(&shared.ctx.counters.created);
                tracing::debug!(target: "pool_core", conn = id, backend_pid = conn.backend_pid(), "connection opened");
                st.slots.connected();
                let recovered = st.gate.succeeded();
                shared.put_back(st, conn, now);
                if recovered {
                    // The server is back: the tasks waiting out the backoff go now.
                    shared.connect_gate.notify_waiters();
                }
                return;
            }
            Err(ConnectFailure { error, permanent }) => {
                AtomicCounters::bump(&shared.ctx.counters.connect_failures);
                tracing::debug!(target: "pool_core", %error, permanent, "connection attempt failed");
                let nothing_else_to_wait_for = st.slots.size() - st.slots.connecting() == 0;
                if permanent
                    && nothing_else_to_wait_for
                    && let Error::Connect { source } = &error
                {
                    // No connection exists that could come back: tell the waiters now
                    // rather than at their deadline.
                    let source = Arc::clone(source);
                    let gathered = st.queue.fail_all(|| Error::Connect {
                        source: Arc::clone(&source),
                    });
                    for conn in gathered {
                        st.hand_off(conn, now);
                    }
                }
                st.gate.failed(now, error);
                // Only waiters keep a failing task going: `min_idle` is retried by the
                // maintenance pass (which ends with the pool), not by a task that would
                // keep a dropped pool alive through an outage.
                let still_needed =
                    !st.closed && !permanent && st.queue.need() >= st.slots.connecting();
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
    st.slots.abandon_connect();
    shared.after_shrink(st);
}

/// Capped exponential backoff with ±25 % jitter, so many pools restarting together do
/// not reconnect in lock step.
fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let d = exp.min(BACKOFF_CAP);
    d - d / 4 + jitter(d / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_during_a_wait_is_reported_after_a_later_success() {
        let mut gate = Gate::default();
        let t0 = Instant::now();
        assert!(gate.last_error(t0).is_none());
        gate.failed(t0, Error::Closed);
        // Still failing: reported whenever the wait started.
        assert!(gate.last_error(t0 + Duration::from_secs(60)).is_some());
        let before = Instant::now();
        assert!(gate.succeeded());
        let after = Instant::now();
        // Recovered: reported to a wait that saw the server failing, not to one that
        // began after.
        assert!(gate.last_error(t0).is_some());
        assert!(gate.last_error(before).is_some());
        assert!(gate.last_error(after + Duration::from_millis(1)).is_none());
    }
}
