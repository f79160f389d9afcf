//! The engine: the pool's shared, locked state and the workers that change it.
//!
//! One mutex guards [`State`], which is made of parts that own their data and the
//! methods on it: the waiter queue (`queue.rs`), the holders record (`holders.rs`), the
//! idle list (`idle.rs`), the connection count (`slots.rs`), the connect gate and its
//! tasks (`connect.rs`) and the deadline sweeper (`sweeper.rs`). The workers — checkout
//! (`acquire.rs`, its slow path `slow.rs`, `acquire_many.rs`), check-in (`checkin.rs`) and the maintenance pass
//! (`maintain.rs`) — call those methods; no module outside the engine sees the state.
//! The engine hands out and takes back boxed [`Conn`]s: it runs no SQL itself except
//! through the connection layer, and knows nothing of the user-facing handles (`Db`,
//! `PooledConn`), which are built on top of it.

mod acquire;
mod acquire_many;
mod checkin;
mod connect;
mod demand;
mod holders;
mod idle;
mod maintain;
mod queue;
mod slots;
mod slow;
mod sweeper;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{PoolConfig, default_name};
use crate::conn::{self, ConnConfig, Ctx};
use crate::error::{Error, Result, Timeout, TimeoutKind};
use crate::status::{AtomicCounters, DiscardReason, Holder, Status};
use crate::telemetry::Telemetry;
pub(crate) use acquire::Acquiring;
pub(crate) use acquire_many::acquire_many;
pub(crate) use holders::HolderKey;
pub(crate) use queue::Lease;

/// The pool itself, shared by every `Pool` clone and `Db`.
pub(crate) struct Shared {
    /// What connections share: their settings and the pool's counters.
    pub(crate) ctx: Arc<Ctx>,
    config: PoolConfig,
    state: Mutex<State>,
    maintenance_started: AtomicBool,
    /// Signalled whenever the pool shrinks after `close()`.
    shrunk: Notify,
    /// Signalled once, when `close()` begins: listeners close their connections.
    closing: Notify,
    /// Signalled when a connect succeeds after failures, waking tasks in backoff.
    connect_gate: Notify,
    /// Wakes the deadline sweeper (see `sweeper::arm_sweeper`).
    sweep: Arc<Notify>,
    /// Mean hold time, for growth that follows demand (updated without the lock).
    hold: demand::HoldTime,
    /// Mirrors `State::closed`, for a waiter that received a connection to check without
    /// taking the lock.
    closed: AtomicBool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The deadline sweeper holds the pool weakly: let it see that it is gone.
        self.sweep.notify_one();
    }
}

/// The pool's name in metrics when the builder gives none: the first host and port.
/// The locked state, in parts.
struct State {
    idle: idle::IdleList,
    queue: queue::Queue,
    holders: holders::Holders,
    slots: slots::Slots,
    gate: connect::Gate,
    /// Connect time, for growth that follows demand.
    demand: demand::Demand,
    sweeper: sweeper::SweeperState,
    /// Connections with a smaller id are retired (`drain`): closed instead of reused.
    retire_below: u64,
    closed: bool,
}

impl Shared {
    /// A new pool's state; its maintenance task starts now if a runtime is at hand, or
    /// with the first acquire.
    pub(crate) fn new(config: PoolConfig, conn: ConnConfig) -> Arc<Shared> {
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| default_name(&conn.pg));
        let telemetry = Telemetry::new(name, config.max_size, config.min_idle);
        let state = State {
            idle: idle::IdleList::default(),
            queue: queue::Queue::default(),
            holders: holders::Holders::new(config.bookkeeping),
            slots: slots::Slots::new(config.max_size),
            gate: connect::Gate::default(),
            demand: demand::Demand::default(),
            sweeper: sweeper::SweeperState::default(),
            retire_below: 0,
            closed: false,
        };
        Arc::new(Shared {
            ctx: Arc::new(Ctx::new(conn, telemetry)),
            config,
            state: Mutex::new(state),
            maintenance_started: AtomicBool::new(false),
            shrunk: Notify::new(),
            closing: Notify::new(),
            connect_gate: Notify::new(),
            sweep: Arc::new(Notify::new()),
            hold: demand::HoldTime::default(),
            closed: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way
        // that matters more than refusing all further work; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes the connection and waiter counts and what the local histograms
    /// gathered since the last time (every maintenance pass, at least once a second).
    #[cfg(feature = "metrics")]
    pub(super) fn publish_metrics(&self) {
        let (idle, used, pending) = {
            let st = self.lock();
            let (size, idle, connecting) = (st.slots.size(), st.idle.len(), st.slots.connecting());
            (idle, size - idle - connecting, st.queue.waiting())
        };
        self.ctx.telemetry.publish(idle, used, pending);
    }

    /// Starts the maintenance task and fills `min_idle`, once, if a runtime is at hand
    /// (else at the first acquire).
    pub(crate) fn ensure_maintenance(self: &Arc<Self>) {
        if self.maintenance_started.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current()
            && !self.maintenance_started.swap(true, Ordering::AcqRel)
        {
            rt.spawn(maintain::run(Arc::downgrade(self)));
            // `min_idle` is filled as the pool opens, not at the first periodic pass.
            self.fill_min_idle(&mut self.lock(), Instant::now());
        }
    }

    /// Whether `close()` was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// How many connections exist and what they are doing, with the counters.
    pub(crate) fn status(&self) -> Status {
        self.status_locked(&self.lock())
    }

    /// The counters now; with metrics, `use_time` is the sites' hold totals, which the
    /// metrics keep anyway.
    fn counters(&self) -> crate::status::Counters {
        let mut counters = self.ctx.counters.snapshot();
        if let Some(nanos) = self.ctx.telemetry.use_nanos() {
            counters.use_time = Duration::from_nanos(nanos);
        }
        counters
    }

    fn status_locked(&self, st: &State) -> Status {
        let (size, idle, connecting) = (st.slots.size(), st.idle.len(), st.slots.connecting());
        Status {
            size,
            idle,
            in_use: size - idle - connecting,
            connecting,
            waiting: st.queue.waiting(),
            max_size: st.slots.max(),
            closed: st.closed,
            counters: self.counters(),
            lane: None,
        }
    }

    /// The details of an acquire timeout, all from one look at the state.
    fn acquire_timeout_locked(&self, st: &State, now: Instant) -> Timeout {
        Timeout {
            kind: TimeoutKind::Acquire,
            after: self.acquire_timeout(),
            status: Some(self.status_locked(st)),
            holders: st.holders.snapshot(now),
            last_connect_error: st
                .gate
                .last_error(now.checked_sub(self.acquire_timeout()).unwrap_or(now)),
            statement: None,
            unsent: false,
            shared: false,
        }
    }

    /// The error a checkout gets when `acquire_timeout` passes (the shared lane's waiters
    /// get the same).
    pub(crate) fn acquire_timeout_error(&self) -> Error {
        let st = self.lock();
        Error::Timeout(Box::new(self.acquire_timeout_locked(&st, Instant::now())))
    }

    /// The checkout recorded under `key` is meant to be held long (a shared lane
    /// connection): no leak warning for it.
    pub(crate) fn expect_long_hold(&self, key: HolderKey) {
        self.lock().holders.expect_long(key);
    }

    /// How many checkouts are waiting for a connection.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().queue.waiting()
    }

    /// The error of the last failed connect, if connects have been failing since `since`.
    pub(crate) fn last_connect_error(&self, since: Instant) -> Option<Arc<Error>> {
        self.lock().gate.last_error(since)
    }

    /// Who holds connections now, longest-held first.
    pub(crate) fn holders(&self) -> Vec<Holder> {
        let now = Instant::now();
        self.lock().holders.snapshot(now)
    }

    /// Closes the pool: fails the waiters, closes the idle connections, then waits up
    /// to `close_timeout` for those in use (closed as they come back).
    pub(crate) async fn close(&self) {
        let trash = {
            let mut st = self.lock();
            st.closed = true;
            self.closed.store(true, Ordering::Release);
            self.closing.notify_waiters();
            let mut trash = st.queue.fail_all(|| Error::Closed);
            trash.extend(st.idle.drain());
            st.slots.lost(trash.len());
            for _ in 0..trash.len() {
                self.ctx.discard(DiscardReason::Closed);
            }
            trash
        };
        drop(trash);
        self.wait_closed().await;
        // The maintenance pass has stopped: the last figures are published here.
        #[cfg(feature = "metrics")]
        self.publish_metrics();
    }

    /// Waits up to `close_timeout` for the connections in use to come back. Listeners'
    /// connections are not waited for: a listener closes its own when it sees the pool
    /// closing (in `next`), or when it is dropped.
    async fn wait_closed(&self) {
        let deadline = Instant::now() + self.config.close_timeout;
        loop {
            let notified = self.shrunk.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().slots.pooled() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let holders = self.holders();
                tracing::warn!(
                    target: "pool_core",
                    still_held = holders.len(),
                    holders = %holders.iter().map(|h| h.to_string()).collect::<Vec<_>>().join("; "),
                    "pool closed with connections still in use after close_timeout; they are closed when returned"
                );
                return;
            }
        }
    }

    /// Changes `max_size`. Growing serves waiters at once; shrinking closes idle
    /// connections beyond the new size now and retires connections in use as they come
    /// back, so the pool never holds more than `max` once they are.
    pub(crate) fn resize(self: &Arc<Self>, max: usize) -> Result<()> {
        if max == 0 {
            return Err(Error::config(
                "max_size",
                "is 0 in resize(0); a pool needs at least 1 connection (close() it to stop using it)",
            ));
        }
        if max < self.config.min_idle {
            return Err(Error::config(
                "max_size",
                format!(
                    "would be {max} after resize, below min_idle ({}); resize to at least min_idle",
                    self.config.min_idle
                ),
            ));
        }
        let trash = {
            let mut st = self.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            st.slots.set_max(max);
            self.ctx.telemetry.resized(max);
            let mut trash = Vec::new();
            while st.slots.over()
                && let Some(conn) = st.idle.pop_oldest()
            {
                self.retire(&mut st, 1);
                trash.push(conn);
            }
            self.spawn_connects_now(&mut st);
            trash
        };
        drop(trash);
        Ok(())
    }

    /// Replaces every connection: idle ones now (new ones are opened in their place),
    /// those in use when they come back. Acquires go on being served meanwhile.
    pub(crate) fn drain(self: &Arc<Self>) -> Result<()> {
        let trash = {
            let mut st = self.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            st.retire_below = self.ctx.peek_conn_id();
            let trash = st.idle.drain();
            self.retire(&mut st, trash.len());
            for _ in 0..trash.len() {
                if !st.slots.has_room() || !self.spawn_one_connect(&mut st) {
                    break;
                }
            }
            self.spawn_connects_now(&mut st);
            self.fill_min_idle(&mut st, Instant::now());
            trash
        };
        drop(trash);
        Ok(())
    }

    /// Reserves a slot for a connection of its own outside the idle list (the listener),
    /// counted against `max_size` until [`Shared::release_dedicated`]. An idle
    /// connection is closed to make room if the pool is full.
    pub(crate) fn reserve_dedicated(self: &Arc<Self>) -> Result<()> {
        let trash = {
            let mut st = self.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            let mut trash = None;
            if !st.slots.has_room() {
                match st.idle.pop_oldest() {
                    Some(conn) => {
                        self.retire(&mut st, 1);
                        trash = Some(conn);
                    }
                    None => {
                        return Err(Error::config(
                            "max_size",
                            format!(
                                "({}) is reached with every connection in use: a listener needs a connection of its own, counted against max_size; raise max_size",
                                st.slots.max()
                            ),
                        ));
                    }
                }
            }
            st.slots.reserve_dedicated();
            trash
        };
        drop(trash);
        Ok(())
    }

    /// Opens a connection for a reserved dedicated slot.
    pub(crate) async fn open_dedicated(&self) -> Result<Box<crate::conn::Conn>> {
        match conn::open(&self.ctx, self.ctx.next_conn_id()).await {
            Ok(conn) => {
                AtomicCounters::bump(&self.ctx.counters.created);
                Ok(conn)
            }
            Err(failure) => {
                AtomicCounters::bump(&self.ctx.counters.connect_failures);
                Err(failure.error)
            }
        }
    }

    /// Gives back a dedicated slot (its connection is dropped by the caller).
    pub(crate) fn release_dedicated(self: &Arc<Self>) {
        let mut st = self.lock();
        st.slots.release_dedicated();
        self.after_shrink(&mut st);
    }

    /// Resolves once the pool is closing (at once if it is closed already): a listener
    /// then closes its connection.
    pub(crate) async fn closing(&self) {
        let notified = self.closing.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_closed() {
            return;
        }
        notified.await;
    }

    /// Accounts for `n` connections retired (closed by resize or drain; drop them after
    /// the lock is released).
    fn retire(&self, st: &mut State, n: usize) {
        st.slots.lost(n);
        for _ in 0..n {
            self.ctx.discard(DiscardReason::Retired);
        }
    }

    /// Opens one connection directly — reporting the real failure at once, not at an
    /// acquire deadline — and adds it to the pool.
    pub(crate) async fn warm_up(self: &Arc<Self>) -> Result<()> {
        {
            let mut st = self.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            if !st.slots.has_room() {
                return Ok(());
            }
            st.slots.reserve();
        }
        /// Gives the reserved slot back unless a connection filled it.
        struct Slot<'a>(&'a Arc<Shared>, bool);
        impl Drop for Slot<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    let mut st = self.0.lock();
                    st.slots.lost(1);
                    self.0.after_shrink(&mut st);
                }
            }
        }
        let mut slot = Slot(self, false);
        let started = Instant::now();
        match conn::open(&self.ctx, self.ctx.next_conn_id()).await {
            Ok(conn) => {
                slot.1 = true;
                AtomicCounters::bump(&self.ctx.counters.created);
                self.ctx.telemetry.created(started.elapsed());
                let mut st = self.lock();
                st.demand.connected(started.elapsed());
                self.put_back(st, conn, Instant::now());
                Ok(())
            }
            Err(failure) => {
                AtomicCounters::bump(&self.ctx.counters.connect_failures);
                Err(failure.error)
            }
        }
    }

    /// Whether a connection idle since `since` must be pinged before hand-out.
    fn needs_validation(&self, since: Instant, now: Instant) -> bool {
        self.config
            .validate_after_idle
            .is_some_and(|d| now.duration_since(since) >= d)
    }

    /// `acquire_timeout` (the shared lane's waiters keep it too).
    pub(crate) fn acquire_timeout(&self) -> Duration {
        self.config.acquire_timeout
    }
}
