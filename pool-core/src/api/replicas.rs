//! The read side's routing: a pool per replica, the servers' WAL positions sampled in
//! the background, and the choice of where each read goes.
//!
//! Every `replica_sample_interval` one task asks the primary for its WAL insert position
//! and each replica for its replay position (through their pools, with a short deadline).
//! From those samples:
//!
//! * a replica's **lag** is how long ago the primary was at a position the replica has
//!   not replayed yet (zero when it has replayed everything the samples saw);
//! * a task that **wrote** at time `T` (the primary's write log) reads from a replica
//!   only if it has replayed a primary position sampled after `T` — that position is at
//!   or past the commit — else from the primary.
//!
//! A replica that does not answer, or answers that it is not in recovery (a primary, or
//! promoted), is passed over until a sample finds it well again; `replica_status()`
//! says why.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{ReplicaFallback, ReplicaPlan};
use crate::conn::WriteLog;
use crate::engine::Shared;
use crate::error::{Error, Result};
use crate::status::DisplayDuration;

use super::pool::Pool;

/// What the pool knows of one replica, from [`Pool::replica_status`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// `host:port` of the replica.
    pub name: String,
    /// Whether it serves reads now (up, a standby, within `max_replica_lag`).
    pub usable: bool,
    /// How far behind the primary it is, as last measured (`None`: not measured yet).
    pub lag: Option<Duration>,
    /// Its replay position (`pg_last_wal_replay_lsn()`, as a byte offset) at the last
    /// sample.
    pub replay_lsn: Option<u64>,
    /// Why it is passed over, when it is.
    pub problem: Option<String>,
}

/// Where a read goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// The replica at this index.
    Replica(usize),
    /// The primary.
    Primary,
}

/// One sample of the primary's WAL insert position, taken at `at` or later.
#[derive(Clone, Copy, Debug)]
struct Position {
    at: Instant,
    lsn: u64,
}

/// The last sample of one replica.
#[derive(Debug, Default)]
struct Seen {
    replay: Option<u64>,
    problem: Option<String>,
}

struct Member {
    name: String,
    shared: Arc<Shared>,
    seen: Mutex<Seen>,
}

/// The read side of a pool.
pub(crate) struct ReplicaSet {
    members: Vec<Member>,
    writes: Arc<WriteLog>,
    max_lag: Option<Duration>,
    fallback: ReplicaFallback,
    every: Duration,
    /// The primary's samples, oldest first, for `keep()`.
    history: Mutex<VecDeque<Position>>,
    next: AtomicUsize,
    sampler_started: AtomicBool,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A WAL position as a replay position can equal it: the insert position of an idle
/// primary may point past the header of the next WAL page (24 bytes, 40 at a segment
/// start), where no record ends.
fn reachable(lsn: u64) -> u64 {
    match lsn % 8192 {
        off @ (24 | 40) => lsn - off,
        _ => lsn,
    }
}

impl ReplicaSet {
    pub(crate) fn new(plan: ReplicaPlan, writes: Arc<WriteLog>) -> ReplicaSet {
        let members = plan
            .servers
            .into_iter()
            .map(|(name, pool, conn)| Member {
                name,
                shared: Shared::new(pool, conn),
                seen: Mutex::new(Seen {
                    replay: None,
                    problem: Some("not sampled yet".to_owned()),
                }),
            })
            .collect();
        ReplicaSet {
            members,
            writes,
            max_lag: plan.max_lag,
            fallback: plan.fallback,
            every: plan.sample_every,
            history: Mutex::new(VecDeque::new()),
            next: AtomicUsize::new(0),
            sampler_started: AtomicBool::new(false),
        }
    }

    /// The pool of the replica at `i`.
    pub(crate) fn member(&self, i: usize) -> Pool {
        Pool::single(Arc::clone(&self.members[i].shared))
    }

    /// The name (`host:port`) of the replica at `i`.
    pub(crate) fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn fallback(&self) -> ReplicaFallback {
        self.fallback
    }

    /// Starts the replicas' maintenance and the sampler, once, if a runtime is at hand.
    pub(crate) fn ensure_started(self: &Arc<Self>, primary: &Arc<Shared>) {
        for m in &self.members {
            m.shared.ensure_maintenance();
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current()
            && !self.sampler_started.swap(true, Ordering::AcqRel)
        {
            rt.spawn(sampler(Arc::downgrade(self), Arc::downgrade(primary)));
        }
    }

    /// How long history is kept: long enough to measure any lag that matters.
    fn keep(&self) -> Duration {
        self.max_lag
            .map_or(Duration::ZERO, |d| d * 2)
            .max(Duration::from_secs(30))
    }

    /// The deadline of one sample query.
    fn sample_deadline(&self) -> Duration {
        (self.every * 5).clamp(Duration::from_secs(1), Duration::from_secs(5))
    }

    /// One round of samples: the primary's position and every replica's, at once. (The
    /// order does not matter: a replay position only grows, and what read-your-writes
    /// needs of a primary sample is that it started after the write.)
    pub(crate) async fn sample(&self, primary: &Arc<Shared>) {
        let at = Instant::now();
        let deadline = self.sample_deadline();
        let primary_lsn = lsn_of(
            primary,
            "SELECT CASE WHEN pg_is_in_recovery() THEN NULL \
             ELSE (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8 END",
            deadline,
        );
        let replays = futures::future::join_all(self.members.iter().map(|m| async move {
            lsn_of(
                &m.shared,
                "SELECT CASE WHEN pg_is_in_recovery() \
                     THEN (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8 END",
                deadline,
            )
            .await
        }));
        let (primary_lsn, replays) = futures::future::join(primary_lsn, replays).await;
        if let Ok(Some(lsn)) = primary_lsn {
            let mut history = locked(&self.history);
            history.push_back(Position { at, lsn });
            let keep = self.keep();
            while history.len() > 2
                && history
                    .front()
                    .is_some_and(|p| at.duration_since(p.at) > keep)
            {
                history.pop_front();
            }
        }
        for (m, replay) in self.members.iter().zip(replays) {
            let mut seen = locked(&m.seen);
            match replay {
                Ok(Some(lsn)) => {
                    seen.replay = Some(lsn);
                    seen.problem = None;
                }
                Ok(None) => {
                    seen.problem = Some(
                        "is not a standby (pg_is_in_recovery() is false): a replica must be a streaming \
                         replica; a promoted one is used again only once listed as the primary"
                            .to_owned(),
                    );
                }
                Err(e) => seen.problem = Some(format!("did not answer its sample: {e}")),
            }
        }
        self.forget_replayed_writes();
    }

    /// Forgets the writes every replica has replayed (and, so that the log stays small
    /// while a replica is down, writes older than ten minutes).
    fn forget_replayed_writes(&self) {
        let history = locked(&self.history);
        let Some(newest) = history.back().map(|p| p.at) else {
            return;
        };
        let mut all_past = Some(newest);
        for m in &self.members {
            let replay = locked(&m.seen).replay;
            let past = replay.and_then(|r| caught_up_at(&history, r));
            all_past = match (all_past, past) {
                (Some(a), Some(p)) => Some(a.min(p)),
                _ => None,
            };
        }
        drop(history);
        let floor = newest.checked_sub(Duration::from_secs(600));
        match (all_past, floor) {
            (Some(t), Some(f)) => self.writes.forget_before(t.max(f)),
            (Some(t), None) | (None, Some(t)) => self.writes.forget_before(t),
            (None, None) => {}
        }
    }

    /// Where the current task's next read goes.
    pub(crate) fn route(&self) -> Result<Route> {
        let now = Instant::now();
        let wrote = self.writes.last_write();
        let history = locked(&self.history);
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut why = Vec::new();
        let mut unreplayed_write = false;
        for k in 0..n {
            let i = (start + k) % n;
            let m = &self.members[i];
            match self.passes(m, &history, now, wrote) {
                Ok(()) => return Ok(Route::Replica(i)),
                Err((reason, write)) => {
                    unreplayed_write |= write;
                    why.push(format!("{}: {reason}", m.name));
                }
            }
        }
        if self.fallback == ReplicaFallback::Primary || unreplayed_write {
            return Ok(Route::Primary);
        }
        Err(Error::NoReplica {
            why: why.join("; "),
        })
    }

    /// Whether replica `m` may serve a read now; else why not (and whether only because
    /// it has not replayed this task's write yet).
    fn passes(
        &self,
        m: &Member,
        history: &VecDeque<Position>,
        now: Instant,
        wrote: Option<Instant>,
    ) -> std::result::Result<(), (String, bool)> {
        let seen = locked(&m.seen);
        if let Some(problem) = &seen.problem {
            return Err((problem.clone(), false));
        }
        let Some(replay) = seen.replay else {
            return Err(("not sampled yet".to_owned(), false));
        };
        drop(seen);
        if let Some(max) = self.max_lag {
            match lag_of(history, replay, now) {
                Some(lag) if lag > max => {
                    return Err((
                        format!(
                            "is {} behind the primary (max_replica_lag {})",
                            DisplayDuration(lag),
                            DisplayDuration(max)
                        ),
                        false,
                    ));
                }
                Some(_) => {}
                None => {
                    return Err((
                        "its lag is unknown: the primary's position was not sampled yet".to_owned(),
                        false,
                    ));
                }
            }
        }
        if let Some(w) = wrote
            && caught_up_at(history, replay).is_none_or(|t| t < w)
        {
            return Err((
                "has not replayed this task's last write yet".to_owned(),
                true,
            ));
        }
        Ok(())
    }

    /// Returns once a sample finds replica `i` unwell (checked every sample interval),
    /// so that a read waiting on it can go elsewhere.
    pub(crate) async fn until_unwell(&self, i: usize) {
        loop {
            tokio::time::sleep(self.every).await;
            if locked(&self.members[i].seen).problem.is_some() {
                return;
            }
        }
    }

    /// A checkout on replica `i` failed: pass it over until a sample finds it well.
    pub(crate) fn failed(&self, i: usize, e: &Error) {
        locked(&self.members[i].seen).problem = Some(format!("a checkout failed: {e}"));
    }

    pub(crate) fn status(&self) -> Vec<ReplicaStatus> {
        let now = Instant::now();
        let history = locked(&self.history);
        self.members
            .iter()
            .map(|m| {
                let (replay, problem) = {
                    let seen = locked(&m.seen);
                    (seen.replay, seen.problem.clone())
                };
                let lag = replay.and_then(|r| lag_of(&history, r, now));
                let verdict = self.passes(m, &history, now, None);
                let usable = verdict.is_ok();
                let problem = verdict.err().map(|(reason, _)| reason).or(problem);
                ReplicaStatus {
                    name: m.name.clone(),
                    usable,
                    lag,
                    replay_lsn: replay,
                    problem,
                }
            })
            .collect()
    }

    pub(crate) async fn close(&self) {
        futures::future::join_all(self.members.iter().map(|m| m.shared.close())).await;
    }

    /// Writes remembered for read-your-writes (for tests of the pruning).
    #[cfg(test)]
    fn remembered_writes(&self) -> usize {
        self.writes.len()
    }
}

/// How long ago the primary was at a position `replay` has not reached: zero if it
/// has reached every sampled one, `None` with no samples.
fn lag_of(history: &VecDeque<Position>, replay: u64, now: Instant) -> Option<Duration> {
    let newest = history.back()?;
    if reachable(newest.lsn) <= replay {
        return Some(Duration::ZERO);
    }
    let first_ahead = history.iter().find(|p| reachable(p.lsn) > replay)?;
    Some(now.saturating_duration_since(first_ahead.at))
}

/// When the newest primary sample `replay` has reached was taken.
fn caught_up_at(history: &VecDeque<Position>, replay: u64) -> Option<Instant> {
    history
        .iter()
        .rev()
        .find(|p| reachable(p.lsn) <= replay)
        .map(|p| p.at)
}

/// Runs a sample query that returns one nullable `int8`; an error is said in words
/// (with the last connect error, when connecting is what keeps it from an answer).
async fn lsn_of(
    shared: &Arc<Shared>,
    sql: &'static str,
    deadline: Duration,
) -> std::result::Result<Option<u64>, String> {
    let started = Instant::now();
    let mut db = Pool::single(Arc::clone(shared)).db();
    let answer = tokio::time::timeout(deadline, db.query_one(sql, &[]).timeout(deadline)).await;
    let row = match answer {
        Ok(Ok(row)) => row,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => {
            let mut why = format!("no answer within {}", DisplayDuration(deadline));
            if let Some(e) = shared.last_connect_error(started) {
                why.push_str(&format!("; connecting fails: {}", error_chain(&e)));
            }
            return Err(why);
        }
    };
    let lsn: Option<i64> = row.try_get(0).map_err(|e| e.to_string())?;
    Ok(lsn.map(|l| u64::try_from(l).unwrap_or(0)))
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// The background sampler: one round every `replica_sample_interval` while the pool
/// lives and is open.
async fn sampler(set: Weak<ReplicaSet>, primary: Weak<Shared>) {
    loop {
        let (Some(set), Some(primary)) = (set.upgrade(), primary.upgrade()) else {
            return;
        };
        if primary.is_closed() {
            return;
        }
        set.sample(&primary).await;
        let every = set.every;
        drop((set, primary));
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn history(points: &[(u64, u64)], base: Instant) -> VecDeque<Position> {
        points
            .iter()
            .map(|&(ms, lsn)| Position {
                at: base + Duration::from_millis(ms),
                lsn,
            })
            .collect()
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_unreplayed_position() {
        let base = Instant::now();
        let h = history(&[(0, 100), (100, 200), (200, 300)], base);
        let now = base + Duration::from_millis(250);
        assert_eq!(lag_of(&h, 300, now), Some(Duration::ZERO));
        assert_eq!(lag_of(&h, 250, now), Some(Duration::from_millis(50)));
        assert_eq!(lag_of(&h, 150, now), Some(Duration::from_millis(150)));
        assert_eq!(lag_of(&h, 50, now), Some(Duration::from_millis(250)));
        assert_eq!(lag_of(&VecDeque::new(), 50, now), None);
    }

    #[test]
    fn a_write_is_replayed_once_a_later_sample_is() {
        let base = Instant::now();
        let h = history(&[(0, 100), (100, 200), (200, 300)], base);
        assert_eq!(
            caught_up_at(&h, 250),
            Some(base + Duration::from_millis(100))
        );
        assert_eq!(caught_up_at(&h, 99), None);
    }

    #[test]
    fn an_idle_primary_past_a_page_header_counts_as_reached() {
        assert_eq!(reachable(8192 + 24), 8192);
        assert_eq!(reachable(16 * 1024 * 1024 + 40), 16 * 1024 * 1024);
        assert_eq!(reachable(8192 + 25), 8192 + 25);
        let base = Instant::now();
        let h = history(&[(0, 8192 + 24)], base);
        assert_eq!(lag_of(&h, 8192, base), Some(Duration::ZERO));
    }

    #[test]
    fn writes_are_forgotten_once_every_replica_is_past_them() {
        let plan = ReplicaPlan {
            servers: Vec::new(),
            max_lag: None,
            fallback: ReplicaFallback::Primary,
            sample_every: Duration::from_millis(100),
        };
        let set = ReplicaSet::new(plan, Arc::new(WriteLog::default()));
        set.writes.wrote();
        locked(&set.history).push_back(Position {
            at: Instant::now(),
            lsn: 1,
        });
        // No replica: every (zero) replica is past it.
        set.forget_replayed_writes();
        assert_eq!(set.remembered_writes(), 0);
    }
}
