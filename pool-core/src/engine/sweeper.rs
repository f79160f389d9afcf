//! The deadline sweeper: one task per pool that fails waiters whose `acquire_timeout`
//! passed, instead of a timer per waiter. Every waiter's deadline is its arrival plus the
//! same timeout and the queue is FIFO, so deadlines grow from front to back and the
//! sweeper only ever sleeps until the front one — it wakes about once per
//! `acquire_timeout`, however many tasks wait.

use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Shared, State};
use crate::error::Error;

/// The sweeper's part of the pool's state.
#[derive(Default)]
pub(super) struct SweeperState {
    /// The deadline sweeper task is running.
    running: bool,
    /// The deadline the sweeper sleeps until; `None` while it waits for a new waiter.
    armed: Option<Instant>,
}

/// What a new waiter's deadline needs.
pub(super) enum Sweep {
    /// The running sweeper enforces it.
    Armed,
    /// No sweeper runs: start one on this runtime, once the lock is released.
    Start(tokio::runtime::Handle),
    /// No tokio runtime here: the waiter needs a timer of its own.
    Unavailable,
}

impl Sweep {
    /// Starts the sweeper if needed (call without the lock). Whether it enforces the
    /// waiter's deadline.
    pub(super) fn start(self, shared: &Arc<Shared>) -> bool {
        match self {
            Sweep::Armed => true,
            Sweep::Start(rt) => {
                // Created before the spawn and moved into the task, so it runs even if
                // the runtime drops the task unpolled (it is shutting down).
                let running = Running(Arc::downgrade(shared));
                let (pool, notify) = (Arc::downgrade(shared), Arc::clone(&shared.sweep));
                rt.spawn(async move {
                    let _running = running;
                    sweep_deadlines(pool, notify).await;
                });
                true
            }
            Sweep::Unavailable => false,
        }
    }
}

/// Makes sure a new waiter's deadline will be enforced: wakes the pool's deadline
/// sweeper if it sleeps with nothing to watch, or says to start one if none runs (none
/// yet, or the runtime it ran on is gone). Called with the lock held, when a waiter joins
/// the queue.
#[inline]
pub(super) fn arm_sweeper(shared: &Shared, st: &mut State, deadline: Instant) -> Sweep {
    let sweeper = &mut st.sweeper;
    if sweeper.running {
        if sweeper.armed.is_none() {
            sweeper.armed = Some(deadline);
            shared.sweep.notify_one();
        }
        return Sweep::Armed;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return Sweep::Unavailable;
    };
    sweeper.running = true;
    sweeper.armed = Some(deadline);
    Sweep::Start(rt)
}

/// Marks the sweeper stopped however its task ends — also when its runtime shuts down
/// and drops it — so the next waiter starts another.
struct Running(Weak<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.lock().sweeper = SweeperState::default();
        }
    }
}

/// The deadline sweeper: fails waiters whose `acquire_timeout` passed, then sleeps until
/// the next deadline at the front of the queue, or until a waiter joins an empty queue.
/// Holds the pool weakly; ends when the pool is dropped or closed.
async fn sweep_deadlines(pool: Weak<Shared>, notify: Arc<Notify>) {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = {
            let Some(shared) = pool.upgrade() else { return };
            match expire_waiters(&shared, Instant::now()) {
                Some(next) => next,
                None => return,
            }
        };
        match next {
            Some(at) => {
                let _ = tokio::time::timeout_at(at, notified).await;
            }
            None => notified.await,
        }
    }
}

/// Fails the waiters whose deadline passed. Returns the next deadline to sleep until
/// (`None`: no waiter), or `None` if the pool is closed.
fn expire_waiters(shared: &Arc<Shared>, now: Instant) -> Option<Option<Instant>> {
    let mut st = shared.lock();
    if st.closed {
        return None;
    }
    let (expired, next) = st.queue.take_expired(now);
    st.sweeper.armed = next;
    if !expired.is_empty() {
        let mut timeout = shared.acquire_timeout_locked(&st, now);
        if let Some(status) = &mut timeout.status {
            // Not counting the waiters being failed here.
            status.waiting = status.waiting.saturating_sub(expired.len());
        }
        let failed = st
            .queue
            .fail_expired(expired, || Error::Timeout(Box::new(timeout.clone())));
        shared
            .ctx
            .counters
            .timeouts
            .fetch_add(failed, std::sync::atomic::Ordering::Relaxed);
        shared.ctx.telemetry.timed_out(failed);
    }
    Some(next)
}
