//! The workload every scenario runs: ledger writes (in transactions and as one-shot
//! statements), reads, large results and session advisory locks, from several tasks.
//!
//! Every pool call goes through the [`Watchdog`] with its own deadline; every checked-out
//! connection is probed first ([`PROBE`]: its backend, and whether its transaction began
//! before the hand-out),
//! so a connection handed out dead, crossed, inside a transaction or aborted is caught;
//! every error is checked by [`explain`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pool_core::{Acquire, Conn, Db, Error, Pool, PooledConn};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::explain::{Category, before_send, explain};
use super::ledger::{Ledger, Write};
use super::rng::Rng;
use super::watchdog::{Overrun, Watchdog};

/// How often each operation is picked (relative weights).
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// `BEGIN; INSERT; [try xact lock;] COMMIT` on a held connection.
    pub tx_write: u32,
    /// A one-shot `INSERT` on `Db`.
    pub one_shot_write: u32,
    /// A small read on a held connection.
    pub read: u32,
    /// A read of about 200 KB.
    pub big_read: u32,
    /// Take and release a session advisory lock.
    pub session_lock: u32,
    /// `SELECT pg_sleep(0.02)`.
    pub short_sleep: u32,
}

impl Default for Mix {
    fn default() -> Mix {
        Mix {
            tx_write: 5,
            one_shot_write: 2,
            read: 2,
            big_read: 1,
            session_lock: 1,
            short_sleep: 1,
        }
    }
}

/// How the workload runs.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Concurrent tasks.
    pub workers: usize,
    /// The pool's `acquire_timeout` (the deadline of an acquire).
    pub acquire_timeout: Duration,
    /// The pool's `statement_timeout` (the deadline of a statement).
    pub statement_timeout: Duration,
    /// Pause between two operations of a task (randomised 50–150 %).
    pub pace: Duration,
    /// The operation mix.
    pub mix: Mix,
    /// Seed of the operation choices.
    pub seed: u64,
    /// Check that the probe runs on the connection's own backend (off through PgBouncer).
    pub check_backend_pid: bool,
}

impl WorkloadConfig {
    /// Four tasks, the default mix, 2 ms pace.
    pub fn new(acquire_timeout: Duration, statement_timeout: Duration, seed: u64) -> Self {
        WorkloadConfig {
            workers: 4,
            acquire_timeout,
            statement_timeout,
            pace: Duration::from_millis(2),
            mix: Mix::default(),
            seed,
            check_backend_pid: true,
        }
    }
}

/// What the workload did.
#[derive(Clone, Debug, Default)]
pub struct WorkloadReport {
    /// Operations started.
    pub ops: u64,
    /// Operations that succeeded.
    pub ok: u64,
    /// Errors by category.
    pub errors: BTreeMap<Category, u64>,
    /// The first message seen of each category.
    pub samples: BTreeMap<Category, String>,
    /// Root causes seen, with counts.
    pub roots: BTreeMap<String, u64>,
    /// Errors that failed to name their category or root cause: must be empty.
    pub unexplained: Vec<String>,
    /// Calls abandoned by the watchdog.
    pub overruns: u64,
    /// Connections checked at hand-out.
    pub handouts: u64,
    /// Connections that died after they were handed out, before their first statement:
    /// no pool can prevent that; the statement reports it like any lost connection.
    pub died_after_handout: u64,
    /// Connections handed out dead, crossed, in a transaction or aborted: must be empty.
    pub bad_handouts: Vec<String>,
}

impl WorkloadReport {
    /// Errors of all categories.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds another report's counts to this one.
    pub fn merge(&mut self, other: WorkloadReport) {
        self.ops += other.ops;
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.samples {
            self.samples.entry(k).or_insert(v);
        }
        for (k, v) in other.roots {
            *self.roots.entry(k).or_default() += v;
        }
        self.unexplained.extend(other.unexplained);
        self.overruns += other.overruns;
        self.handouts += other.handouts;
        self.died_after_handout += other.died_after_handout;
        self.bad_handouts.extend(other.bad_handouts);
    }

    /// Errors of one category.
    pub fn errors_of(&self, category: Category) -> u64 {
        self.errors.get(&category).copied().unwrap_or(0)
    }
}

impl std::fmt::Display for WorkloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "workload: {} ops, {} ok, {} errors {:?}, {} hand-outs checked ({} died just after), {} bad, {} unexplained, {} overruns",
            self.ops,
            self.ok,
            self.error_count(),
            self.errors,
            self.handouts,
            self.died_after_handout,
            self.bad_handouts.len(),
            self.unexplained.len(),
            self.overruns
        )?;
        for (category, sample) in &self.samples {
            write!(f, "\n  {category}: {sample}")?;
        }
        for u in &self.unexplained {
            write!(f, "\n  UNEXPLAINED: {u}")?;
        }
        for b in &self.bad_handouts {
            write!(f, "\n  BAD HAND-OUT: {b}")?;
        }
        Ok(())
    }
}

/// A running workload.
#[derive(Debug)]
pub struct Workload {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    report: Arc<Mutex<WorkloadReport>>,
}

enum Failure {
    Pool(Error),
    Overrun,
    /// The probe found a connection that must not have been handed out.
    BadHandout,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Pool(e)
    }
}

impl From<Overrun> for Failure {
    fn from(_: Overrun) -> Failure {
        Failure::Overrun
    }
}

struct Worker {
    id: i32,
    pool: Pool,
    config: WorkloadConfig,
    ledger: Arc<Ledger>,
    watchdog: Arc<Watchdog>,
    report: Arc<Mutex<WorkloadReport>>,
    rng: Rng,
}

/// Runs `fut` under the watchdog with `budget`, flattening the outcome.
async fn guarded<T>(
    watchdog: &Watchdog,
    label: &str,
    budget: Duration,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Failure> {
    Ok(watchdog.call(label, budget, fut).await??)
}

/// The probe run on every connection handed out: its backend, and whether the
/// transaction it runs in started after `$1` (microseconds since the epoch, read by the
/// client after the hand-out). A connection handed out inside a transaction answers
/// `false`: its transaction began before the hand-out.
pub const PROBE: &str =
    "SELECT pg_backend_pid(), (extract(epoch FROM now()) * 1000000)::int8 >= $1::int8";

/// Now, in microseconds since the Unix epoch (the server's clock on the same host).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Locks `report`, even if a task panicked while holding it.
fn lock_report(report: &Mutex<WorkloadReport>) -> MutexGuard<'_, WorkloadReport> {
    report.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records an error of a pool call in `report`.
pub fn record_error(report: &Mutex<WorkloadReport>, error: &Error) {
    let mut r = lock_report(report);
    match explain(error) {
        Ok(explained) => {
            *r.errors.entry(explained.category).or_default() += 1;
            r.samples
                .entry(explained.category)
                .or_insert_with(|| super::explain::chain(error));
            let root: String = explained.root.chars().take(120).collect();
            *r.roots.entry(root).or_default() += 1;
        }
        Err(why) => {
            *r.errors.entry(Category::Other).or_default() += 1;
            if r.unexplained.len() < 50 {
                r.unexplained.push(why);
            }
        }
    }
}

impl Worker {
    /// Acquires a connection under the watchdog and probes it. Takes the `acquire()`
    /// future rather than the `Db` so the call site the pool records is the caller's.
    async fn checkout<'a>(&self, acquire: Acquire<'a>) -> Result<PooledConn<'a>, Failure> {
        let mut conn = guarded(
            &self.watchdog,
            "acquire",
            self.config.acquire_timeout,
            acquire,
        )
        .await?;
        self.probe(&mut conn).await?;
        Ok(conn)
    }

    /// Checks a freshly checked-out connection before using it.
    async fn probe(&self, conn: &mut PooledConn<'_>) -> Result<(), Failure> {
        // When it was handed out: the pool checks a connection at that moment, so only a
        // connection seen closed before then was handed out known to be dead. One that
        // closes in between (a fault landing right then, or this task descheduled for a
        // while on a loaded machine) is what its first statement then reports.
        let handed_out = tokio::time::Instant::now() - PooledConn::held_for(conn);
        lock_report(&self.report).handouts += 1;
        if conn.is_broken() {
            match pool_core::__private::closed_at(conn) {
                Some(closed) if closed > handed_out => {
                    lock_report(&self.report).died_after_handout += 1;
                }
                _ => {
                    return Err(
                        self.bad("a connection known to be broken was handed out".to_owned())
                    );
                }
            }
        }
        let conn: &mut Conn = conn;
        let expected_pid = conn.backend_pid();
        let handed_out_at = now_micros();
        let rows = guarded(
            &self.watchdog,
            "probe",
            self.config.statement_timeout,
            conn.query(PROBE, &[&handed_out_at]),
        )
        .await;
        let rows = match rows {
            Err(Failure::Pool(e)) if e.code().is_some_and(|c| c.code() == "25P02") => {
                return Err(self.bad(format!("handed out inside an aborted transaction: {e}")));
            }
            other => other?,
        };
        let Some(row) = rows.first() else {
            return Err(self.bad("the probe returned no row".to_owned()));
        };
        let pid: i32 = row.get(0);
        let outside_tx: bool = row.get(1);
        if self.config.check_backend_pid && pid != expected_pid {
            return Err(self.bad(format!(
                "the connection of backend {expected_pid} answered from backend {pid}"
            )));
        }
        if !outside_tx {
            return Err(self.bad(format!("backend {pid} was handed out inside a transaction")));
        }
        Ok(())
    }

    fn bad(&self, what: String) -> Failure {
        eprintln!("BAD HAND-OUT: {what}\n{}", self.pool.status());
        let mut r = lock_report(&self.report);
        if r.bad_handouts.len() < 50 {
            r.bad_handouts.push(what);
        }
        Failure::BadHandout
    }

    async fn tx_write(&mut self, db: &mut Db, write: &mut Write<'_>) -> Result<(), Failure> {
        let id = write.id();
        let key = id % 16;
        let lock = self.rng.chance(0.3);
        let st = self.config.statement_timeout;
        let mut conn = self.checkout(db.acquire()).await?;
        let mut tx = guarded(&self.watchdog, "begin", st, conn.begin()).await?;
        guarded(
            &self.watchdog,
            "insert",
            st,
            tx.execute(
                "INSERT INTO ledger (id, worker) VALUES ($1, $2)",
                &[&id, &self.id],
            ),
        )
        .await?;
        if lock {
            guarded(
                &self.watchdog,
                "try_advisory_xact_lock",
                st,
                tx.try_advisory_xact_lock(key),
            )
            .await?;
        }
        write.commit_sent();
        guarded(&self.watchdog, "commit", st, tx.commit()).await?;
        Ok(())
    }

    async fn one_shot_write(&mut self, db: &mut Db, write: &mut Write<'_>) -> Result<(), Failure> {
        let id = write.id();
        write.commit_sent();
        guarded(
            &self.watchdog,
            "one-shot insert",
            self.config.acquire_timeout + self.config.statement_timeout,
            db.execute(
                "INSERT INTO ledger (id, worker) VALUES ($1, $2)",
                &[&id, &self.id],
            ),
        )
        .await?;
        Ok(())
    }

    async fn read(&mut self, db: &mut Db, big: bool, sleep: bool) -> Result<(), Failure> {
        let st = self.config.statement_timeout;
        let modulo = self.rng.below(7) as i64;
        let mut conn = self.checkout(db.acquire()).await?;
        if big {
            let rows = guarded(
                &self.watchdog,
                "big read",
                st,
                conn.query("SELECT repeat('x', 1000) FROM generate_series(1, 200)", &[]),
            )
            .await?;
            if rows.len() != 200 {
                return Err(self.bad(format!("a big read returned {} rows", rows.len())));
            }
        } else if sleep {
            guarded(
                &self.watchdog,
                "short sleep",
                st,
                conn.query("SELECT pg_sleep(0.02)", &[]),
            )
            .await?;
        } else {
            guarded(
                &self.watchdog,
                "read",
                st,
                conn.query("SELECT count(*) FROM ledger WHERE id % 7 = $1", &[&modulo]),
            )
            .await?;
        }
        Ok(())
    }

    async fn session_lock(&mut self, db: &mut Db) -> Result<(), Failure> {
        let st = self.config.statement_timeout;
        let key = 1_000_000 + i64::from(self.id);
        let unlock = self.rng.chance(0.5);
        let mut conn = self.checkout(db.acquire()).await?;
        let lock = guarded(
            &self.watchdog,
            "try_advisory_lock",
            st,
            conn.try_advisory_lock(key),
        )
        .await?;
        if let Some(mut lock) = lock {
            guarded(
                &self.watchdog,
                "read under lock",
                st,
                lock.query("SELECT 1", &[]),
            )
            .await?;
            if unlock {
                guarded(
                    &self.watchdog,
                    "advisory unlock",
                    st,
                    pool_core::AdvisoryLock::unlock(lock),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut db = self.pool.db();
        let ledger = Arc::clone(&self.ledger);
        let mix = self.config.mix;
        let weights = [
            mix.tx_write,
            mix.one_shot_write,
            mix.read,
            mix.big_read,
            mix.session_lock,
            mix.short_sleep,
        ];
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        while !*stop.borrow_and_update() {
            let mut pick = self.rng.below(total.max(1));
            let mut op = 0;
            for (i, w) in weights.iter().enumerate() {
                if pick < u64::from(*w) {
                    op = i;
                    break;
                }
                pick -= u64::from(*w);
            }
            lock_report(&self.report).ops += 1;
            let outcome = match op {
                0 | 1 => {
                    let mut write = Write::start(&ledger);
                    let res = if op == 0 {
                        self.tx_write(&mut db, &mut write).await
                    } else {
                        self.one_shot_write(&mut db, &mut write).await
                    };
                    match &res {
                        Ok(()) => write.acked(),
                        Err(Failure::Pool(e)) => write.failed(before_send(e)),
                        Err(_) => write.failed(false),
                    }
                    res
                }
                2 => self.read(&mut db, false, false).await,
                3 => self.read(&mut db, true, false).await,
                4 => self.session_lock(&mut db).await,
                _ => self.read(&mut db, false, true).await,
            };
            match outcome {
                Ok(()) => {
                    lock_report(&self.report).ok += 1;
                }
                Err(Failure::Pool(e)) => {
                    record_error(&self.report, &e);
                    // After a failure, back off a little as a real client would.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(Failure::Overrun) => {
                    lock_report(&self.report).overruns += 1;
                }
                Err(Failure::BadHandout) => {}
            }
            let pace = self.config.pace;
            if !pace.is_zero() {
                let d = self.rng.duration(pace / 2, pace * 3 / 2);
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

impl Workload {
    /// Starts the workload's tasks on the current runtime.
    pub fn start(
        pool: Pool,
        config: WorkloadConfig,
        ledger: Arc<Ledger>,
        watchdog: Arc<Watchdog>,
    ) -> Workload {
        let (stop, stop_rx) = watch::channel(false);
        let report = Arc::new(Mutex::new(WorkloadReport::default()));
        let mut rng = Rng::new(config.seed);
        let tasks = (0..config.workers)
            .map(|i| {
                let worker = Worker {
                    id: i32::try_from(i).unwrap_or(i32::MAX),
                    pool: pool.clone(),
                    config: config.clone(),
                    ledger: Arc::clone(&ledger),
                    watchdog: Arc::clone(&watchdog),
                    report: Arc::clone(&report),
                    rng: rng.fork(),
                };
                tokio::spawn(worker.run(stop_rx.clone()))
            })
            .collect();
        Workload {
            stop,
            tasks,
            report,
        }
    }

    /// What the workload did so far.
    pub fn report(&self) -> WorkloadReport {
        lock_report(&self.report).clone()
    }

    /// Asks the tasks to stop after their current operation, without waiting.
    pub fn signal_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops the tasks (each finishes its current operation) and returns the report.
    pub async fn stop(mut self) -> WorkloadReport {
        self.signal_stop();
        for task in std::mem::take(&mut self.tasks) {
            if let Err(e) = task.await {
                lock_report(&self.report)
                    .unexplained
                    .push(format!("a workload task failed: {e}"));
            }
        }
        self.report()
    }
}
