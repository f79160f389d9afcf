//! The deadline sweeper: one task per pool that fails waiters whose `acquire_timeout`
//! passed, instead of a timer per waiter. Every waiter's deadline is its arrival plus the
//! same timeout and the queue is FIFO, so deadlines grow from front to back and the
//! sweeper only ever sleeps until the front one — it wakes about once per
//! `acquire_timeout`, however many tasks wait.

use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::Error;
use crate::pool::{Shared, State, Waiter};
use crate::status::AtomicCounters;

/// What a new waiter's deadline needs.
pub(crate) enum Sweep {
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
    pub(crate) fn start(self, shared: &Arc<Shared>) -> bool {
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
pub(crate) fn arm_sweeper(shared: &Arc<Shared>, st: &mut State, deadline: Instant) -> Sweep {
    if st.sweeper_running {
        if st.sweeper_armed.is_none() {
            st.sweeper_armed = Some(deadline);
            shared.sweep.notify_one();
        }
        return Sweep::Armed;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return Sweep::Unavailable;
    };
    st.sweeper_running = true;
    st.sweeper_armed = Some(deadline);
    Sweep::Start(rt)
}

/// Marks the sweeper stopped however its task ends — also when its runtime shuts down
/// and drops it — so the next waiter starts another.
struct Running(Weak<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            let mut st = shared.lock();
            st.sweeper_running = false;
            st.sweeper_armed = None;
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
/// (`None`: no waiter), or `None` if the pool is closed. Expired waiters are normally at
/// the front; the whole queue is scanned all the same (the sweeper wakes about once per
/// `acquire_timeout`), so a waiter put back at the front after a broken hand-over cannot
/// hide the deadlines behind it.
fn expire_waiters(shared: &Arc<Shared>, now: Instant) -> Option<Option<Instant>> {
    let mut st = shared.lock();
    if st.closed {
        return None;
    }
    let mut expired = Vec::new();
    let mut next: Option<Instant> = None;
    let mut i = 0;
    while i < st.waiters.len() {
        match &st.waiters[i] {
            Waiter::One(w) if !w.tx.is_closed() && w.deadline <= now => {
                if let Some(Waiter::One(w)) = st.waiters.remove(i) {
                    expired.push(w.tx);
                }
            }
            Waiter::One(w) if !w.tx.is_closed() => {
                next = Some(next.map_or(w.deadline, |n| n.min(w.deadline)));
                i += 1;
            }
            // Leaving (`leave_one` accounts for it), or an `acquire_many`, which keeps a
            // deadline of its own.
            _ => i += 1,
        }
    }
    st.sweeper_armed = next;
    if !expired.is_empty() {
        let mut timeout = shared.acquire_timeout_locked(&st, now);
        if let Some(status) = &mut timeout.status {
            // Not counting the waiters being failed here.
            status.waiting = status.waiting.saturating_sub(expired.len());
        }
        for tx in expired {
            // If the send fails the waiter is leaving and `leave_one` accounts.
            if tx
                .send(Err(Error::Timeout(Box::new(timeout.clone()))))
                .is_ok()
            {
                st.waiting -= 1;
                st.need -= 1;
                AtomicCounters::bump(&shared.ctx.counters.timeouts);
            }
        }
    }
    Some(next)
}
