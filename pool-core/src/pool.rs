//! The pool: shared state, hand-off, check-in, status and close.
//!
//! One mutex guards the pool's state. An acquire that finds an idle connection and no
//! one waiting takes it in one critical section with no allocation; otherwise it joins a
//! FIFO queue. A returned connection goes straight to the oldest waiter (direct hand-off),
//! recorded as held by the waiter's task in the same critical section, so a task that
//! returns and immediately asks again cannot barge ahead of those already waiting, and the
//! woken waiter does not take the lock again. The waiters' `acquire_timeout` is enforced
//! by one deadline sweeper task per pool rather than a timer per waiter (`sweeper.rs`).
//! Connections are opened by background tasks, never by the acquiring task, so an acquire
//! dropped mid-wait never abandons a half-open connection, and no more connections are
//! opened than there are waiters to serve.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::config::{Builder, ConfigSource, PoolConfig};
use crate::conn::Conn;
use crate::db::Db;
use crate::error::{Error, Result, Timeout, TimeoutKind};
use crate::status::{AtomicCounters, DiscardReason, Holder, Site, Status, TaskKey};

/// A pool of PostgreSQL connections. Cheap to clone; all clones share one pool.
///
/// The pool runs no SQL and hands out no connection itself: its one door is
/// [`Pool::db`], which gives each task the capability to check out one connection at a
/// time.
///
/// ```no_run
/// # async fn f() -> Result<(), pool_core::Error> {
/// use std::time::Duration;
/// let pool = pool_core::Pool::builder("postgres://postgres@127.0.0.1/app")
///     .max_size(4)
///     .acquire_timeout(Duration::from_secs(2))
///     .build()?;
/// let mut db = pool.db();
/// let mut conn = db.acquire().await?;
/// let one: i32 = conn.query_one("SELECT 1", &[]).await?.get(0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pool {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("status", &self.status())
            .finish()
    }
}

/// What connections need from the pool: settings and counters. Kept apart from
/// [`Shared`] so that connections (which live inside the pool's state) do not keep the
/// pool itself alive.
pub(crate) struct Ctx {
    pub(crate) config: PoolConfig,
    pub(crate) counters: AtomicCounters,
    pub(crate) next_conn_id: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) ctx: Arc<Ctx>,
    state: Mutex<State>,
    maintenance_started: AtomicBool,
    /// Signalled whenever the pool shrinks after `close()`.
    shrunk: Notify,
    /// Signalled when a connect succeeds after failures, waking tasks in backoff.
    pub(crate) connect_gate: Notify,
    /// Wakes the deadline sweeper (see `sweeper::arm_sweeper`).
    pub(crate) sweep: Arc<Notify>,
    /// Mirrors `State::closed`, for a waiter that received a connection to check without
    /// taking the lock.
    pub(crate) closed: AtomicBool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The deadline sweeper holds the pool weakly: let it see that it is gone.
        self.sweep.notify_one();
    }
}

/// A connection handed to a single waiter: already recorded as held by the waiter's
/// task (holder key, and the time of the hand-over).
pub(crate) type Handoff = Result<(Box<Conn>, HolderKey, Instant)>;
pub(crate) type HandoffMany = Result<Vec<Box<Conn>>>;

/// A task waiting for one connection.
pub(crate) struct OneWaiter {
    pub(crate) tx: oneshot::Sender<Handoff>,
    /// Who waits: recorded as the holder when a connection is handed over, so the waiter
    /// needs no second trip through the lock.
    pub(crate) site: Site,
    pub(crate) task: TaskKey,
    /// When the acquire gives up. One `acquire_timeout` for all and a FIFO queue make
    /// deadlines grow from front to back, which is what lets one sweeper serve them all.
    pub(crate) deadline: Instant,
}

pub(crate) enum Waiter {
    One(OneWaiter),
    Many {
        id: u64,
        need: usize,
        got: Vec<Box<Conn>>,
        tx: oneshot::Sender<HandoffMany>,
    },
}

struct IdleConn {
    conn: Box<Conn>,
    since: Instant,
}

pub(crate) struct HolderEntry {
    pub(crate) site: Site,
    pub(crate) task: TaskKey,
    pub(crate) since: Instant,
    pub(crate) backend_pid: i32,
    pub(crate) warned: bool,
}

impl HolderEntry {
    /// The record of `task` holding `conn` since `since`, checked out at `site`.
    pub(crate) fn new(site: Site, task: TaskKey, since: Instant, conn: &Conn) -> HolderEntry {
        HolderEntry {
            site,
            task,
            since,
            backend_pid: conn.meta.backend_pid,
            warned: false,
        }
    }
}

/// Index of a holder record; stays valid until the connection is returned.
pub(crate) type HolderKey = usize;

#[derive(Default)]
pub(crate) struct State {
    idle: Vec<IdleConn>,
    pub(crate) waiters: VecDeque<Waiter>,
    /// Waiter entries whose task still waits.
    pub(crate) waiting: usize,
    /// Connections those waiters still need.
    pub(crate) need: usize,
    /// Connections open or being opened.
    pub(crate) size: usize,
    /// Being opened by a connect task.
    pub(crate) connecting: usize,
    holders: Vec<Option<HolderEntry>>,
    free_holders: Vec<usize>,
    pub(crate) closed: bool,
    pub(crate) last_connect_error: Option<Arc<Error>>,
    pub(crate) connect_failures_in_row: u32,
    pub(crate) next_connect_at: Option<Instant>,
    /// A connect task is probing a failing server; the others wait for its outcome.
    pub(crate) probing: bool,
    next_waiter_id: u64,
    /// The deadline sweeper task is running.
    pub(crate) sweeper_running: bool,
    /// The deadline the sweeper sleeps until; `None` while it waits for a new waiter.
    pub(crate) sweeper_armed: Option<Instant>,
}

impl Pool {
    /// Starts configuring a pool from a URL (`postgres://user:pass@host:port/db`), a
    /// key-value string, or a `tokio_postgres::Config`. See [`Builder`] for the options
    /// and their defaults.
    pub fn builder(config: impl Into<ConfigSource>) -> Builder {
        Builder::new(config.into())
    }

    /// Builds a pool with default settings and opens one connection to prove the
    /// settings work.
    ///
    /// If the future is dropped, the pool is dropped with it.
    pub async fn connect(config: impl Into<ConfigSource>) -> Result<Pool> {
        Pool::builder(config).connect().await
    }

    pub(crate) fn from_config(config: PoolConfig) -> Pool {
        let ctx = Arc::new(Ctx {
            config,
            counters: AtomicCounters::default(),
            next_conn_id: AtomicU64::new(1),
        });
        let pool = Pool {
            shared: Arc::new(Shared {
                ctx,
                state: Mutex::new(State::default()),
                maintenance_started: AtomicBool::new(false),
                shrunk: Notify::new(),
                connect_gate: Notify::new(),
                sweep: Arc::new(Notify::new()),
                closed: AtomicBool::new(false),
            }),
        };
        pool.shared.ensure_maintenance();
        pool
    }

    /// The per-task capability to use the pool: check out one connection at a time
    /// (`db.acquire()`), or run one-shot statements. Make one per task or request; it is
    /// not `Clone`, which is what lets the compiler refuse a second checkout while one is
    /// held.
    pub fn db(&self) -> Db {
        Db::new(self.clone())
    }

    /// How many connections exist and what they are doing, with cumulative counters.
    /// `Display` prints it as a small table.
    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// Who holds connections right now — checkout site, task, for how long —
    /// longest-held first.
    pub fn holders(&self) -> Vec<Holder> {
        self.shared.holders()
    }

    /// The configured `max_size`.
    pub fn max_size(&self) -> usize {
        self.shared.ctx.config.max_size
    }

    /// Whether [`Pool::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Closes the pool: new acquires fail with [`Error::Closed`], waiters are woken with
    /// it, idle connections are closed, and connections in use are closed as they come
    /// back. Waits for them up to `close_timeout`, then returns regardless (logging who
    /// still holds connections).
    ///
    /// If the future is dropped, the pool is still closed; only the waiting stops.
    pub async fn close(&self) {
        let shared = &self.shared;
        let trash = {
            let mut st = shared.lock();
            st.closed = true;
            shared.closed.store(true, Ordering::Release);
            let gathered = shared.fail_all_waiters(&mut st, || Error::Closed);
            st.size -= gathered.len();
            let idle: Vec<IdleConn> = st.idle.drain(..).collect();
            st.size -= idle.len();
            for _ in 0..idle.len() + gathered.len() {
                shared.ctx.counters.discard(DiscardReason::Closed);
            }
            (idle, gathered)
        };
        drop(trash);
        let deadline = Instant::now() + shared.ctx.config.close_timeout;
        loop {
            let notified = shared.shrunk.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if shared.lock().size == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let holders = shared.holders();
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

    /// Opens one connection directly — reporting the real failure at once, not at an
    /// acquire deadline — and adds it to the pool.
    pub(crate) async fn warm_up(&self) -> Result<()> {
        let shared = &self.shared;
        {
            let mut st = shared.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            if st.size >= shared.ctx.config.max_size {
                return Ok(());
            }
            st.size += 1;
        }
        /// Gives the reserved slot back unless a connection filled it.
        struct Slot<'a>(&'a Arc<Shared>, bool);
        impl Drop for Slot<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    let mut st = self.0.lock();
                    st.size -= 1;
                    self.0.after_shrink(&mut st);
                }
            }
        }
        let mut slot = Slot(shared, false);
        match crate::connect::open(&shared.ctx, shared.next_conn_id()).await {
            Ok(conn) => {
                slot.1 = true;
                AtomicCounters::bump(&shared.ctx.counters.created);
                let st = shared.lock();
                shared.put_back(st, conn, Instant::now());
                Ok(())
            }
            Err(failure) => {
                AtomicCounters::bump(&shared.ctx.counters.connect_failures);
                Err(failure.error)
            }
        }
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way
        // that matters more than refusing all further work; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn config(&self) -> &PoolConfig {
        &self.ctx.config
    }

    pub(crate) fn ensure_maintenance(self: &Arc<Self>) {
        if self.maintenance_started.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current()
            && !self.maintenance_started.swap(true, Ordering::AcqRel)
        {
            rt.spawn(crate::maintain::run(Arc::downgrade(self)));
        }
    }

    pub(crate) fn status(&self) -> Status {
        self.status_locked(&self.lock())
    }

    pub(crate) fn status_locked(&self, st: &State) -> Status {
        Status {
            size: st.size,
            idle: st.idle.len(),
            in_use: st.size - st.idle.len() - st.connecting,
            connecting: st.connecting,
            waiting: st.waiting,
            max_size: self.ctx.config.max_size,
            closed: st.closed,
            counters: self.ctx.counters.snapshot(),
        }
    }

    /// The details of an acquire timeout, all from one look at the state.
    pub(crate) fn acquire_timeout_locked(&self, st: &State, now: Instant) -> Timeout {
        Timeout {
            kind: TimeoutKind::Acquire,
            after: self.acquire_timeout(),
            status: Some(self.status_locked(st)),
            holders: Shared::holders_locked(st, now),
            last_connect_error: st.last_connect_error.clone(),
            statement: None,
            unsent: false,
        }
    }

    pub(crate) fn holders(&self) -> Vec<Holder> {
        let now = Instant::now();
        Shared::holders_locked(&self.lock(), now)
    }

    pub(crate) fn holders_locked(st: &State, now: Instant) -> Vec<Holder> {
        let mut out: Vec<Holder> = st
            .holders
            .iter()
            .flatten()
            .map(|h| Holder {
                site: h.site,
                task: h.task,
                held_for: now - h.since,
                backend_pid: h.backend_pid,
            })
            .collect();
        out.sort_by_key(|h| std::cmp::Reverse(h.held_for));
        out
    }

    /// Records who holds a connection, unless bookkeeping is off (benchmarks only): then
    /// returns a key that matches no record.
    pub(crate) fn record_holder(&self, st: &mut State, entry: HolderEntry) -> HolderKey {
        if self.ctx.config.bookkeeping {
            Shared::register(st, entry)
        } else {
            HolderKey::MAX
        }
    }

    /// Records who holds a connection.
    pub(crate) fn register(st: &mut State, entry: HolderEntry) -> HolderKey {
        if let Some(i) = st.free_holders.pop() {
            st.holders[i] = Some(entry);
            i
        } else {
            st.holders.push(Some(entry));
            st.holders.len() - 1
        }
    }

    pub(crate) fn unregister(st: &mut State, key: HolderKey) {
        if let Some(slot) = st.holders.get_mut(key)
            && slot.take().is_some()
        {
            st.free_holders.push(key);
        }
    }

    /// The site of a connection this task already holds, if any.
    pub(crate) fn held_by(st: &State, task: TaskKey) -> Option<Site> {
        if st.holders.len() == st.free_holders.len() {
            return None;
        }
        st.holders
            .iter()
            .flatten()
            .find(|h| h.task == task)
            .map(|h| h.site)
    }

    pub(crate) fn holders_mut(st: &mut State) -> impl Iterator<Item = &mut HolderEntry> {
        st.holders.iter_mut().flatten()
    }

    /// Takes an idle connection that is open and not expired, closing stale ones on the
    /// way (into `trash`, to be dropped after the lock is released). Most recently
    /// returned first, so surplus connections age out through `idle_timeout`.
    pub(crate) fn pop_idle(
        &self,
        st: &mut State,
        now: Instant,
        trash: &mut Vec<Box<Conn>>,
    ) -> Option<(Box<Conn>, Instant)> {
        while let Some(idle) = st.idle.pop() {
            match stale(&idle.conn, now) {
                Some(reason) => {
                    st.size -= 1;
                    self.ctx.counters.discard(reason);
                    trash.push(idle.conn);
                }
                None => return Some((idle.conn, idle.since)),
            }
        }
        None
    }

    pub(crate) fn idle_len(&self, st: &State) -> usize {
        st.idle.len()
    }

    /// Closes idle connections that are broken, past `max_lifetime`, or idle longer than
    /// `idle_timeout` beyond `min_idle` (oldest first). Returns them, to be dropped after
    /// the lock is released.
    pub(crate) fn reap_idle(&self, st: &mut State, now: Instant) -> Vec<Box<Conn>> {
        let cfg = &self.ctx.config;
        let mut trash = Vec::new();
        let mut kept = Vec::with_capacity(st.idle.len());
        // Oldest returns sit at the front.
        let total = st.idle.len();
        for (i, idle) in std::mem::take(&mut st.idle).into_iter().enumerate() {
            let remaining_after = total - i - 1 + kept.len();
            let idle_too_long = cfg
                .idle_timeout
                .is_some_and(|t| now.duration_since(idle.since) >= t);
            let reason = match stale(&idle.conn, now) {
                None if idle_too_long && remaining_after >= cfg.min_idle => {
                    Some(DiscardReason::IdleTimeout)
                }
                reason => reason,
            };
            match reason {
                Some(reason) => {
                    self.ctx.counters.discard(reason);
                    trash.push(idle.conn);
                }
                None => kept.push(idle),
            }
        }
        st.idle = kept;
        st.size -= trash.len();
        trash
    }

    /// Gives a connection to the oldest waiter, or makes it idle. A single waiter gets
    /// it recorded as held by its task.
    pub(crate) fn hand_off(&self, st: &mut State, conn: Box<Conn>, now: Instant) {
        // Connections given back by a multi-waiter that left; rarely any, and then the
        // vector allocates.
        let mut more: Vec<Box<Conn>> = Vec::new();
        let mut next = Some(conn);
        while let Some(mut conn) = next.take().or_else(|| more.pop()) {
            loop {
                match st.waiters.front_mut() {
                    None => {
                        st.idle.push(IdleConn { conn, since: now });
                        break;
                    }
                    Some(Waiter::One(w)) if w.tx.is_closed() => {
                        st.waiters.pop_front();
                    }
                    Some(Waiter::One(_)) => {
                        let Some(Waiter::One(w)) = st.waiters.pop_front() else {
                            break;
                        };
                        let key =
                            self.record_holder(st, HolderEntry::new(w.site, w.task, now, &conn));
                        match w.tx.send(Ok((conn, key, now))) {
                            Ok(()) => {
                                st.waiting -= 1;
                                st.need -= 1;
                                break;
                            }
                            Err(Ok((back, key, _))) => {
                                Shared::unregister(st, key);
                                conn = back;
                            }
                            Err(Err(_)) => break,
                        }
                    }
                    Some(Waiter::Many { tx, .. }) if tx.is_closed() => {
                        // Its task is leaving; `leave_many` will not find the entry once
                        // it is popped, so account for it here.
                        if let Some(Waiter::Many { need, got, .. }) = st.waiters.pop_front() {
                            st.waiting -= 1;
                            st.need -= need - got.len();
                            more.extend(got);
                        }
                    }
                    Some(Waiter::Many { need, got, .. }) => {
                        got.push(conn);
                        st.need -= 1;
                        if got.len() == *need
                            && let Some(Waiter::Many { got, tx, .. }) = st.waiters.pop_front()
                        {
                            st.waiting -= 1;
                            if let Err(Ok(got)) = tx.send(Ok(got)) {
                                // The waiter left between the check and the send.
                                more.extend(got);
                            }
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Returns a connection from a borrower (or a guard holding one).
    pub(crate) fn checkin(self: &Arc<Self>, conn: Box<Conn>, holder: Option<HolderKey>) {
        if !conn.is_clean() {
            if let Some(key) = holder {
                Shared::unregister(&mut self.lock(), key);
            }
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(crate::maintain::clean_and_return(Arc::clone(self), conn));
                }
                Err(_) => self.discard(conn, DiscardReason::FailedReset),
            }
            return;
        }
        let now = Instant::now();
        let mut st = self.lock();
        if let Some(key) = holder {
            Shared::unregister(&mut st, key);
        }
        self.put_back(st, conn, now);
    }

    /// Closes a connection that was handed over to a waiter (recorded as held) and found
    /// broken.
    pub(crate) fn discard_held(
        self: &Arc<Self>,
        conn: Box<Conn>,
        key: HolderKey,
        reason: DiscardReason,
    ) {
        {
            let mut st = self.lock();
            Shared::unregister(&mut st, key);
            self.lose_one(&mut st, reason);
        }
        drop(conn);
    }

    /// Puts a clean connection back (or closes it if expired or the pool is closed).
    pub(crate) fn put_back(
        self: &Arc<Self>,
        mut st: MutexGuard<'_, State>,
        conn: Box<Conn>,
        now: Instant,
    ) {
        let reason = if st.closed {
            Some(DiscardReason::Closed)
        } else {
            expired(&conn, now)
        };
        match reason {
            None => self.hand_off(&mut st, conn, now),
            Some(reason) => {
                self.lose_one(&mut st, reason);
                drop(st);
                drop(conn);
            }
        }
    }

    /// Closes a connection instead of reusing it.
    pub(crate) fn discard(self: &Arc<Self>, conn: Box<Conn>, reason: DiscardReason) {
        self.lose_one(&mut self.lock(), reason);
        drop(conn);
    }

    /// Accounts for a connection closed for `reason` (drop it after the lock is released).
    fn lose_one(self: &Arc<Self>, st: &mut State, reason: DiscardReason) {
        st.size -= 1;
        self.ctx.counters.discard(reason);
        self.after_shrink(st);
    }

    /// After the pool lost a connection: open replacements for waiters, wake `close()`.
    pub(crate) fn after_shrink(self: &Arc<Self>, st: &mut State) {
        if st.closed {
            self.shrunk.notify_waiters();
        } else {
            self.spawn_connects(st);
        }
    }

    /// Starts connect tasks for waiters not yet covered by a connection being opened,
    /// within `max_size`.
    pub(crate) fn spawn_connects(self: &Arc<Self>, st: &mut State) {
        while !st.closed && st.connecting < st.need && st.size < self.ctx.config.max_size {
            if !self.spawn_one_connect(st) {
                break;
            }
        }
    }

    pub(crate) fn spawn_one_connect(self: &Arc<Self>, st: &mut State) -> bool {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        st.size += 1;
        st.connecting += 1;
        rt.spawn(crate::connect::connect_task(Arc::clone(self)));
        true
    }

    /// Joins the waiter queue. Also returns what the waiter's deadline needs (see
    /// `sweeper::arm_sweeper`).
    pub(crate) fn enqueue_one(
        self: &Arc<Self>,
        st: &mut State,
        front: bool,
        site: Site,
        task: TaskKey,
        deadline: Instant,
    ) -> (oneshot::Receiver<Handoff>, crate::sweeper::Sweep) {
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter::One(OneWaiter {
            tx,
            site,
            task,
            deadline,
        });
        self.join_queue(st, waiter, 1, front);
        let sweep = crate::sweeper::arm_sweeper(self, st, deadline);
        (rx, sweep)
    }

    /// Joins the queue for `need` connections at once (at its head when `front`: the
    /// task was served already and gave the set back).
    pub(crate) fn enqueue_many(
        self: &Arc<Self>,
        st: &mut State,
        need: usize,
        front: bool,
    ) -> (u64, oneshot::Receiver<HandoffMany>) {
        let (tx, rx) = oneshot::channel();
        st.next_waiter_id += 1;
        let id = st.next_waiter_id;
        let waiter = Waiter::Many {
            id,
            need,
            got: Vec::with_capacity(need),
            tx,
        };
        self.join_queue(st, waiter, need, front);
        (id, rx)
    }

    /// Queues a waiter for `need` connections — at the head when `front` — and starts
    /// the connects it needs.
    fn join_queue(self: &Arc<Self>, st: &mut State, waiter: Waiter, need: usize, front: bool) {
        if front {
            st.waiters.push_front(waiter);
        } else {
            st.waiters.push_back(waiter);
        }
        st.waiting += 1;
        st.need += need;
        self.spawn_connects(st);
    }

    /// A single waiter gave up without receiving anything.
    pub(crate) fn leave_one(&self) {
        let mut st = self.lock();
        st.waiting -= 1;
        st.need -= 1;
        if st.waiters.len() > 2 * st.waiting + 64 {
            st.waiters
                .retain(|w| !matches!(w, Waiter::One(w) if w.tx.is_closed()));
        }
    }

    /// A multi-connection waiter gave up: take back what it had gathered.
    pub(crate) fn leave_many(self: &Arc<Self>, id: u64) {
        let now = Instant::now();
        let mut st = self.lock();
        let Some(pos) = st
            .waiters
            .iter()
            .position(|w| matches!(w, Waiter::Many { id: wid, .. } if *wid == id))
        else {
            return;
        };
        if let Some(Waiter::Many { need, got, .. }) = st.waiters.remove(pos) {
            st.waiting -= 1;
            st.need -= need - got.len();
            for conn in got {
                self.hand_off(&mut st, conn, now);
            }
        }
    }

    /// Wakes every waiter with an error. Returns the connections multi-waiters had
    /// gathered (still counted in `size`).
    pub(crate) fn fail_all_waiters(
        &self,
        st: &mut State,
        error: impl Fn() -> Error,
    ) -> Vec<Box<Conn>> {
        let mut gathered = Vec::new();
        for w in std::mem::take(&mut st.waiters) {
            match w {
                Waiter::One(w) => {
                    // If the send fails the waiter is leaving and `leave_one` accounts.
                    if w.tx.send(Err(error())).is_ok() {
                        st.waiting -= 1;
                        st.need -= 1;
                    }
                }
                Waiter::Many { need, got, tx, .. } => {
                    // `leave_many` will not find the entry: account here either way.
                    st.waiting -= 1;
                    st.need -= need - got.len();
                    gathered.extend(got);
                    let _ = tx.send(Err(error()));
                }
            }
        }
        gathered
    }

    /// Whether a connection idle since `since` must be pinged before hand-out.
    pub(crate) fn needs_validation(&self, since: Instant, now: Instant) -> bool {
        self.ctx
            .config
            .validate_after_idle
            .is_some_and(|d| now.duration_since(since) >= d)
    }

    /// Stamps a new connection's identity and lifetime.
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.ctx.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn acquire_timeout(&self) -> Duration {
        self.ctx.config.acquire_timeout
    }
}

/// Why an idle or returning connection cannot be reused, if it cannot: closed, or past
/// its lifetime.
fn stale(conn: &Conn, now: Instant) -> Option<DiscardReason> {
    if conn.is_broken() {
        Some(DiscardReason::Broken)
    } else {
        expired(conn, now)
    }
}

/// `Expired` if the connection reached `max_lifetime`.
fn expired(conn: &Conn, now: Instant) -> Option<DiscardReason> {
    conn.meta
        .expires
        .is_some_and(|at| at <= now)
        .then_some(DiscardReason::Expired)
}
