//! What the pool can tell about itself: status, counters, holders, and how durations
//! are shown to people. The bottom layer: it uses no other module of the crate (errors
//! are built on it, not the other way round).

use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A place in the source code where a connection was checked out, captured with
/// `#[track_caller]`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Site(pub(crate) &'static Location<'static>);

impl Site {
    /// The source file.
    pub fn file(&self) -> &'static str {
        self.0.file()
    }
    /// The line, 1-based.
    pub fn line(&self) -> u32 {
        self.0.line()
    }
    /// The column, 1-based.
    pub fn column(&self) -> u32 {
        self.0.column()
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.0.file(), self.0.line(), self.0.column())
    }
}

impl fmt::Debug for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Who holds a connection: a tokio task, or — outside any task, as in the body of
/// `#[tokio::main]` or `Runtime::block_on` — a thread.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TaskKey {
    /// A tokio task.
    Task(tokio::task::Id),
    /// A thread, outside any tokio task.
    Thread(std::thread::ThreadId),
}

impl TaskKey {
    pub(crate) fn current() -> TaskKey {
        match tokio::task::try_id() {
            Some(id) => TaskKey::Task(id),
            None => TaskKey::Thread(std::thread::current().id()),
        }
    }
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskKey::Task(id) => write!(f, "task {id}"),
            TaskKey::Thread(id) => write!(f, "{id:?} (outside a task)"),
        }
    }
}

/// One checked-out connection: where, by whom, for how long.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Holder {
    /// Where it was checked out.
    pub site: Site,
    /// The task (or thread) holding it.
    pub task: TaskKey,
    /// How long it has been held.
    pub held_for: Duration,
    /// The server process id serving this connection (`pg_backend_pid()`).
    pub backend_pid: i32,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} held by {} for {} (backend pid {})",
            self.site,
            self.task,
            DisplayDuration(self.held_for),
            self.backend_pid
        )
    }
}

/// Why a connection was closed instead of being reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscardReason {
    /// The connection was closed or hit a fatal error.
    Broken,
    /// It reached `max_lifetime`.
    Expired,
    /// It stayed idle past `idle_timeout` above `min_idle`.
    IdleTimeout,
    /// The ping before hand-out (`validate_after_idle`) failed.
    FailedValidation,
    /// Rolling back or resetting session state failed or took too long.
    FailedReset,
    /// The pool was closed.
    Closed,
    /// A hook (`after_connect`) left it inside a transaction, with an interrupted
    /// operation, or broken.
    FailedHook,
    /// A `before_acquire` or `after_release` hook said not to use it.
    Rejected,
    /// Retired by [`Pool::resize`](crate::Pool::resize) (the pool shrank) or
    /// [`Pool::drain`](crate::Pool::drain) (every connection replaced).
    Retired,
}

impl DiscardReason {
    pub(crate) const ALL: [DiscardReason; 9] = [
        DiscardReason::Broken,
        DiscardReason::Expired,
        DiscardReason::IdleTimeout,
        DiscardReason::FailedValidation,
        DiscardReason::FailedReset,
        DiscardReason::Closed,
        DiscardReason::FailedHook,
        DiscardReason::Rejected,
        DiscardReason::Retired,
    ];

    /// Its place in [`DiscardReason::ALL`] (the order of the variants).
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// A short snake_case name, for metric attributes.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn key(self) -> &'static str {
        match self {
            DiscardReason::Broken => "broken",
            DiscardReason::Expired => "expired",
            DiscardReason::IdleTimeout => "idle_timeout",
            DiscardReason::FailedValidation => "failed_validation",
            DiscardReason::FailedReset => "failed_reset",
            DiscardReason::Closed => "closed",
            DiscardReason::FailedHook => "failed_hook",
            DiscardReason::Rejected => "rejected",
            DiscardReason::Retired => "retired",
        }
    }

    fn name(self) -> &'static str {
        match self {
            DiscardReason::Broken => "broken",
            DiscardReason::Expired => "expired",
            DiscardReason::IdleTimeout => "idle timeout",
            DiscardReason::FailedValidation => "failed validation",
            DiscardReason::FailedReset => "failed reset",
            DiscardReason::Closed => "pool closed",
            DiscardReason::FailedHook => "failed hook",
            DiscardReason::Rejected => "rejected by a hook",
            DiscardReason::Retired => "retired",
        }
    }
}

/// Cumulative counters since the pool was built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Connections handed out.
    pub acquires: u64,
    /// Acquires that had to wait (no idle connection at once).
    pub waits: u64,
    /// Total time spent waiting, over all acquires.
    pub wait_time: Duration,
    /// Acquires that gave up at `acquire_timeout`.
    pub timeouts: u64,
    /// Acquires refused at once because `max_waiting` tasks were already waiting.
    pub waiting_refused: u64,
    /// Total time connections were held by borrowers, over all checkouts (psycopg's
    /// `usage_ms`).
    pub use_time: Duration,
    /// Connections opened.
    pub created: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Connections closed instead of reused, by reason.
    pub discarded_broken: u64,
    /// ... because they reached `max_lifetime`.
    pub discarded_expired: u64,
    /// ... because they were idle too long.
    pub discarded_idle: u64,
    /// ... because the ping before hand-out failed.
    pub discarded_validation: u64,
    /// ... because they could not be cleaned.
    pub discarded_reset: u64,
    /// ... because the pool closed.
    pub discarded_closed: u64,
    /// ... because a hook left them in a transaction, interrupted or broken.
    pub discarded_hook: u64,
    /// ... because a `before_acquire` or `after_release` hook rejected them.
    pub discarded_rejected: u64,
    /// ... because `resize` shrank the pool or `drain` replaced them.
    pub discarded_retired: u64,
    /// Connections returned with a transaction still open, rolled back by the pool.
    pub rollbacks_on_return: u64,
    /// Connections returned with session state (SET, LISTEN, locks, temp tables) reset by the pool.
    pub resets_on_return: u64,
    /// In-flight statements whose future was dropped, cancelled on the server.
    pub cancelled_statements: u64,
    /// Statements that hit `statement_timeout`.
    pub statement_timeouts: u64,
    /// Nested checkouts refused (or warned about).
    pub nested_checkouts: u64,
    /// Connections held past `leak_threshold` (each warned about once).
    pub leaks: u64,
}

impl Counters {
    /// Connections discarded, all reasons together.
    pub fn discarded(&self) -> u64 {
        self.discarded_broken
            + self.discarded_expired
            + self.discarded_idle
            + self.discarded_validation
            + self.discarded_reset
            + self.discarded_closed
            + self.discarded_hook
            + self.discarded_rejected
            + self.discarded_retired
    }
}

/// The live counters, updated lock-free.
#[derive(Default, Debug)]
pub(crate) struct AtomicCounters {
    pub(crate) acquires: AtomicU64,
    pub(crate) waits: AtomicU64,
    pub(crate) wait_nanos: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) waiting_refused: AtomicU64,
    pub(crate) use_nanos: AtomicU64,
    pub(crate) created: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    discarded: [AtomicU64; 9],
    pub(crate) rollbacks_on_return: AtomicU64,
    pub(crate) resets_on_return: AtomicU64,
    pub(crate) cancelled_statements: AtomicU64,
    pub(crate) statement_timeouts: AtomicU64,
    pub(crate) nested_checkouts: AtomicU64,
    pub(crate) leaks: AtomicU64,
}

impl AtomicCounters {
    pub(crate) fn discard(&self, reason: DiscardReason) {
        self.discarded[reason.index()].fetch_add(1, Relaxed);
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Counters {
        let d = |r: DiscardReason| self.discarded[r.index()].load(Relaxed);
        Counters {
            acquires: self.acquires.load(Relaxed),
            waits: self.waits.load(Relaxed),
            wait_time: Duration::from_nanos(self.wait_nanos.load(Relaxed)),
            timeouts: self.timeouts.load(Relaxed),
            waiting_refused: self.waiting_refused.load(Relaxed),
            use_time: Duration::from_nanos(self.use_nanos.load(Relaxed)),
            created: self.created.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            discarded_broken: d(DiscardReason::Broken),
            discarded_expired: d(DiscardReason::Expired),
            discarded_idle: d(DiscardReason::IdleTimeout),
            discarded_validation: d(DiscardReason::FailedValidation),
            discarded_reset: d(DiscardReason::FailedReset),
            discarded_closed: d(DiscardReason::Closed),
            discarded_hook: d(DiscardReason::FailedHook),
            discarded_rejected: d(DiscardReason::Rejected),
            discarded_retired: d(DiscardReason::Retired),
            rollbacks_on_return: self.rollbacks_on_return.load(Relaxed),
            resets_on_return: self.resets_on_return.load(Relaxed),
            cancelled_statements: self.cancelled_statements.load(Relaxed),
            statement_timeouts: self.statement_timeouts.load(Relaxed),
            nested_checkouts: self.nested_checkouts.load(Relaxed),
            leaks: self.leaks.load(Relaxed),
        }
    }
}

/// A snapshot of the pool: how many connections exist and what they are doing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// Connections open or being opened (never more than `max_size`).
    pub size: usize,
    /// Open and idle in the pool.
    pub idle: usize,
    /// Checked out, or being cleaned after return.
    pub in_use: usize,
    /// Being opened.
    pub connecting: usize,
    /// Tasks waiting for a connection.
    pub waiting: usize,
    /// The configured maximum.
    pub max_size: usize,
    /// Whether `close()` was called.
    pub closed: bool,
    /// Cumulative counters.
    pub counters: Counters,
    /// The shared lane, when it is on (`Builder::shared_lane`).
    pub lane: Option<LaneStatus>,
}

/// What the lane is doing, in [`Status::lane`](Status::lane).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaneStatus {
    /// Connections shared now (counted in the pool's `in_use`).
    pub connections: usize,
    /// Statements in flight on them.
    pub in_flight: usize,
    /// One-shots waiting because every shared connection is at `shared_in_flight`.
    pub waiting: usize,
    /// One-shots run on the lane so far.
    pub statements: u64,
    /// One-shots that had to wait for capacity so far.
    pub waits: u64,
    /// Shared connections lost (closed by the server or the network) so far.
    pub lost: u64,
}

impl fmt::Display for Status {
    /// A small table, for logs and terminals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        writeln!(
            f,
            "pool status{}",
            if self.closed { " (closed)" } else { "" }
        )?;
        writeln!(
            f,
            "  size        {:>8}   max_size    {:>8}",
            self.size, self.max_size
        )?;
        writeln!(
            f,
            "  idle        {:>8}   in use      {:>8}",
            self.idle, self.in_use
        )?;
        writeln!(
            f,
            "  waiting     {:>8}   connecting  {:>8}",
            self.waiting, self.connecting
        )?;
        if let Some(lane) = &self.lane {
            writeln!(
                f,
                "  shared      {:>8}   in flight   {:>8}   lane waiting {:>6}",
                lane.connections, lane.in_flight, lane.waiting
            )?;
        }
        writeln!(
            f,
            "  acquires    {:>8}   waits       {:>8}",
            c.acquires, c.waits
        )?;
        writeln!(
            f,
            "  wait time   {:>8}   timeouts    {:>8}",
            DisplayDuration(c.wait_time).to_string(),
            c.timeouts
        )?;
        writeln!(
            f,
            "  use time    {:>8}   refused     {:>8}",
            DisplayDuration(c.use_time).to_string(),
            c.waiting_refused
        )?;
        writeln!(
            f,
            "  created     {:>8}   discarded   {:>8}",
            c.created,
            c.discarded()
        )?;
        writeln!(
            f,
            "  rollbacks   {:>8}   resets      {:>8}",
            c.rollbacks_on_return, c.resets_on_return
        )?;
        writeln!(
            f,
            "  cancelled   {:>8}   stmt t/outs {:>8}",
            c.cancelled_statements, c.statement_timeouts
        )?;
        write!(
            f,
            "  nested      {:>8}   leaks       {:>8}",
            c.nested_checkouts, c.leaks
        )?;
        let reasons: Vec<String> = DiscardReason::ALL
            .iter()
            .map(|r| (r, discarded_for(c, *r)))
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{} {n}", r.name()))
            .collect();
        if !reasons.is_empty() {
            write!(f, "\n  discarded by reason: {}", reasons.join(", "))?;
        }
        Ok(())
    }
}

fn discarded_for(c: &Counters, r: DiscardReason) -> u64 {
    match r {
        DiscardReason::Broken => c.discarded_broken,
        DiscardReason::Expired => c.discarded_expired,
        DiscardReason::IdleTimeout => c.discarded_idle,
        DiscardReason::FailedValidation => c.discarded_validation,
        DiscardReason::FailedReset => c.discarded_reset,
        DiscardReason::Closed => c.discarded_closed,
        DiscardReason::FailedHook => c.discarded_hook,
        DiscardReason::Rejected => c.discarded_rejected,
        DiscardReason::Retired => c.discarded_retired,
    }
}

/// Formats a duration the way people read them: `1.5s`, `250ms`, `12µs`.
pub(crate) struct DisplayDuration(pub(crate) Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d >= Duration::from_secs(60) {
            write!(f, "{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
        } else if d >= Duration::from_secs(1) {
            write!(f, "{:.1}s", d.as_secs_f64())
        } else if d >= Duration::from_millis(1) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}µs", d.as_micros())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DiscardReason;

    #[test]
    fn discard_reasons_are_listed_in_variant_order() {
        for (i, reason) in DiscardReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
        }
    }
}
