//! Cancellation: thousands of random timeouts and aborts around acquire, statements and
//! transaction bodies (cancel during BEGIN with `max_size` 1, panics inside
//! transactions), and a dropped `pg_sleep(30)`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pool_core::{Isolation, Pool, TxOptions};
use tests::faults::health::Figures;
use tests::faults::ledger::{Ledger, Write};
use tests::faults::rng::Rng;
use tests::faults::sampler::{Sampler, SamplerConfig};
use tests::faults::watchdog::Watchdog;
use tests::faults::workload::WorkloadReport;
use tests::poll::poll_n_then_drop;
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::rig::*;

/// Drops `fut` after `polls` polls (yielding in between, less than a round trip), or
/// after `timer` if given instead. Returns whether it completed.
async fn drop_after<F: Future>(fut: F, polls: usize, timer: Option<Duration>) -> bool {
    if let Some(after) = timer {
        return tokio::time::timeout(after, fut).await.is_ok();
    }
    poll_n_then_drop(fut, polls).await
}

#[derive(Default)]
struct Tally {
    completed: u64,
    dropped: u64,
    panics: u64,
    checked: u64,
    dirty: Vec<String>,
}

impl Tally {
    /// Operations run: each one either completed or was dropped.
    fn iterations(&self) -> u64 {
        self.completed + self.dropped
    }

    /// Adds another tally's counts to this one.
    fn merge(&mut self, other: Tally) {
        self.completed += other.completed;
        self.dropped += other.dropped;
        self.panics += other.panics;
        self.checked += other.checked;
        self.dirty.extend(other.dirty);
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} operations ({} completed, {} dropped, {} panics), {} next borrowers checked, {} dirty",
            self.iterations(),
            self.completed,
            self.dropped,
            self.panics,
            self.checked,
            self.dirty.len()
        )
    }
}

struct Fuzzer {
    pool: Pool,
    ledger: Arc<Ledger>,
    watchdog: Arc<Watchdog>,
    acquire: Duration,
    statement: Duration,
}

impl Fuzzer {
    /// A fuzzer of `pool`, whose calls `watchdog` watches, writing to the rig's ledger
    /// under the rig's deadlines.
    fn new(rig: &Rig, pool: Pool, watchdog: Arc<Watchdog>) -> Fuzzer {
        Fuzzer {
            pool,
            ledger: Arc::clone(&rig.ledger),
            watchdog,
            acquire: rig.settings.acquire,
            statement: rig.settings.statement,
        }
    }

    /// `iterations` random operations, each dropped at a random point and followed by a
    /// check of the next borrower.
    async fn run(&self, rng: &mut Rng, admin: &Client, iterations: u32) -> Tally {
        let mut tally = Tally::default();
        for _ in 0..iterations {
            if self.op(rng, &mut tally).await {
                tally.completed += 1;
            } else {
                tally.dropped += 1;
            }
            self.check_next(admin, &mut tally).await;
        }
        tally
    }

    /// One random operation, dropped at a random point. Returns whether it completed.
    async fn op(&self, rng: &mut Rng, tally: &mut Tally) -> bool {
        let polls = rng.below(60) as usize;
        let timer = rng
            .chance(0.4)
            .then(|| rng.duration(Duration::ZERO, Duration::from_millis(6)));
        let pool = &self.pool;
        let ledger = &self.ledger;
        match rng.below(9) {
            0 => {
                let mut db = pool.db();
                drop_after(db.acquire(), polls, timer).await
            }
            1 => {
                let mut db = pool.db();
                let Ok(mut conn) = db.acquire().await else {
                    return false;
                };
                drop_after(conn.query("SELECT pg_sleep(0.002)", &[]), polls, timer).await
            }
            2 => {
                // Cancel during BEGIN.
                let mut db = pool.db();
                let Ok(mut conn) = db.acquire().await else {
                    return false;
                };
                let opts = TxOptions::new().isolation(Isolation::Serializable);
                drop_after(conn.begin_with(opts), polls, timer).await
            }
            3 => {
                // A whole transaction body, dropped anywhere.
                let mut write = Write::start(ledger);
                let id = write.id();
                let savepoint = rng.chance(0.5);
                let body = async {
                    let mut db = pool.db();
                    let mut conn = db.acquire().await?;
                    let mut tx = conn.begin().await?;
                    tx.execute("INSERT INTO ledger (id, worker) VALUES ($1, 1)", &[&id])
                        .await?;
                    if savepoint {
                        let mut sp = tx.savepoint().await?;
                        sp.query("SELECT pg_advisory_xact_lock(42)", &[]).await?;
                        sp.commit().await?;
                    }
                    write.commit_sent();
                    tx.commit().await?;
                    Ok::<_, pool_core::Error>(())
                };
                let mut result = None;
                let completed =
                    drop_after(async { result = Some(body.await) }, polls + 10, timer).await;
                match result {
                    Some(Ok(())) => write.acked(),
                    Some(Err(e)) => write.failed(tests::faults::explain::before_send(&e)),
                    None => drop(write),
                }
                completed
            }
            4 => {
                // A panic inside a transaction, in its own task as a server would run it.
                let pool = pool.clone();
                let ledger = Arc::clone(ledger);
                let task = tokio::spawn(async move {
                    let write = Write::start(&ledger);
                    let id = write.id();
                    let mut db = pool.db();
                    let mut conn = db.acquire().await.unwrap();
                    let mut tx = conn.begin().await.unwrap();
                    tx.execute("INSERT INTO ledger (id, worker) VALUES ($1, 2)", &[&id])
                        .await
                        .unwrap();
                    drop(write);
                    panic!("fuzz: a handler panicked inside a transaction");
                });
                let panicked = task.await.is_err_and(|e| e.is_panic());
                assert!(panicked);
                tally.panics += 1;
                false
            }
            5 => {
                // A task aborted somewhere in a transaction body.
                let pool = pool.clone();
                let ledger = Arc::clone(ledger);
                let task = tokio::spawn(async move {
                    let mut write = Write::start(&ledger);
                    let id = write.id();
                    let mut db = pool.db();
                    let mut conn = db.acquire().await?;
                    let mut tx = conn.begin().await?;
                    tx.execute("INSERT INTO ledger (id, worker) VALUES ($1, 3)", &[&id])
                        .await?;
                    tx.query("SELECT pg_sleep(0.001)", &[]).await?;
                    write.commit_sent();
                    match tx.commit().await {
                        Ok(()) => write.acked(),
                        Err(_) => write.failed(false),
                    }
                    Ok::<_, pool_core::Error>(())
                });
                tokio::time::sleep(rng.duration(Duration::ZERO, Duration::from_millis(4))).await;
                task.abort();
                matches!(task.await, Ok(Ok(())))
            }
            6 => {
                // A one-shot statement dropped.
                let mut write = Write::start(ledger);
                let id = write.id();
                write.commit_sent();
                let mut db = pool.db();
                let mut done = None;
                let completed = drop_after(
                    async {
                        done = Some(
                            db.execute("INSERT INTO ledger (id, worker) VALUES ($1, 4)", &[&id])
                                .await,
                        )
                    },
                    polls,
                    timer,
                )
                .await;
                match done {
                    Some(Ok(_)) => write.acked(),
                    Some(Err(e)) => write.failed(tests::faults::explain::before_send(&e)),
                    None => drop(write),
                }
                completed
            }
            7 => {
                // COMMIT dropped.
                let mut write = Write::start(ledger);
                let id = write.id();
                let mut db = pool.db();
                let Ok(mut conn) = db.acquire().await else {
                    return false;
                };
                let Ok(mut tx) = conn.begin().await else {
                    return false;
                };
                if tx
                    .execute("INSERT INTO ledger (id, worker) VALUES ($1, 5)", &[&id])
                    .await
                    .is_err()
                {
                    return false;
                }
                write.commit_sent();
                let mut done = None;
                let completed =
                    drop_after(async { done = Some(tx.commit().await) }, polls, timer).await;
                match done {
                    Some(Ok(())) => write.acked(),
                    Some(Err(_)) => write.failed(false),
                    None => drop(write),
                }
                completed
            }
            _ => {
                // A session advisory lock and a statement under it, dropped.
                let mut db = pool.db();
                let Ok(mut conn) = db.acquire().await else {
                    return false;
                };
                drop_after(
                    async {
                        if let Ok(Some(mut lock)) = conn.try_advisory_lock(7).await {
                            let _ = lock.query("SELECT pg_sleep(0.001)", &[]).await;
                        }
                    },
                    polls,
                    timer,
                )
                .await
            }
        }
    }

    /// The next borrower gets a connection idle on the server, outside any transaction,
    /// holding no advisory lock, that answers.
    async fn check_next(&self, admin: &Client, tally: &mut Tally) {
        let mut db = self.pool.db();
        let conn = self
            .watchdog
            .call("acquire after a drop", self.acquire, db.acquire())
            .await;
        let mut conn = match conn {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                tally
                    .dirty
                    .push(format!("acquire after a drop failed: {e}"));
                return;
            }
            Err(_) => return,
        };
        tally.checked += 1;
        let pid = conn.backend_pid();
        let row = admin
            .query_one(
                "SELECT coalesce(state, ''), xact_start IS NULL, \
                 (SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory') \
                 FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await;
        match row {
            Ok(row) => {
                let (state, no_tx, locks): (String, bool, i64) =
                    (row.get(0), row.get(1), row.get(2));
                if state != "idle" || !no_tx || locks != 0 {
                    tally.dirty.push(format!(
                        "backend {pid} handed out {state}, outside a transaction: {no_tx}, advisory locks: {locks}"
                    ));
                }
            }
            Err(e) => tally.dirty.push(format!("backend {pid} not found: {e}")),
        }
        match self
            .watchdog
            .call(
                "SELECT 1 after a drop",
                self.statement,
                conn.query_one("SELECT 1", &[]),
            )
            .await
        {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => tally
                .dirty
                .push(format!("backend {pid} failed SELECT 1: {e}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_fuzz() {
    let _serial = serial().await;
    let settings = Settings {
        max_size: 1,
        acquire: Duration::from_secs(3),
        ..Settings::default()
    };
    let rig = Rig::new("cancellation-fuzz", Target::Shared, settings, |b| {
        b.validate_after_idle(Duration::ZERO)
    })
    .await;
    let mut figures = Figures::new(&rig.name);
    let admin = Arc::new(rig.client().await);
    let sampler = rig.sampler();
    let mut rng = Rng::new(rig.seed);
    let started = Instant::now();
    // The fuzz's own panics are expected; keep every other panic loud.
    let default_hook = Arc::new(std::panic::take_hook());
    let hook = Arc::clone(&default_hook);
    std::panic::set_hook(Box::new(move |info| {
        let quiet = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|m| m.starts_with("fuzz:"));
        if !quiet {
            hook(info);
        }
    }));
    // Part 1: a pool of one connection, one task: every drop lands on the connection the
    // next borrower gets.
    let single = Fuzzer::new(&rig, rig.pool.clone(), Arc::clone(&rig.watchdog));
    let mut tally = single.run(&mut rng, &admin, 500).await;
    let sampled_single = sampler.stop().await;
    figures.add("max_size 1", &tally);
    // Part 2: six connections, eight tasks racing: drops while queued for a connection.
    let app = format!("{}-b", rig.app);
    let pool = Pool::builder(rig.proxy.config(&rig.direct))
        .application_name(app.clone())
        .max_size(6)
        .acquire_timeout(rig.settings.acquire)
        .statement_timeout(rig.settings.statement)
        .build()
        .unwrap();
    let watchdog = Arc::new(Watchdog::new(pool.clone()));
    let sampler = Sampler::start(
        pool.clone(),
        SamplerConfig::new(rig.direct.clone(), &rig.dbname, &app, 6),
        Some(rig.proxy.view()),
    );
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let fuzzer = Fuzzer::new(&rig, pool.clone(), Arc::clone(&watchdog));
            let admin = Arc::clone(&admin);
            let mut rng = rng.fork();
            tokio::spawn(async move { fuzzer.run(&mut rng, &admin, 200).await })
        })
        .collect();
    let mut racing = Tally::default();
    for t in tasks {
        racing.merge(t.await.unwrap());
    }
    let sampled_racing = sampler.stop().await;
    let status = pool.status();
    figures.add("max_size 6, 8 tasks", &racing);
    figures.add("fuzz time", format!("{} ms", started.elapsed().as_millis()));
    let single_status = rig.pool.status();
    figures.add(
        "cancelled statements / rollbacks on return / discarded",
        format!(
            "{} / {} / {}",
            single_status.counters.cancelled_statements + status.counters.cancelled_statements,
            single_status.counters.rollbacks_on_return + status.counters.rollbacks_on_return,
            single_status.counters.discarded() + status.counters.discarded()
        ),
    );
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| default_hook(info)));
    rig.health(&mut figures, "full health (max_size 1) after the fuzz")
        .await;
    match tests::faults::health::full_health(&pool, Duration::from_secs(5)).await {
        Ok(d) => figures.add(
            "full health (max_size 6) after the fuzz",
            format!("{} ms", d.as_millis()),
        ),
        Err(e) => panic!("{e}"),
    }
    assert!(pool.holders().is_empty() && rig.pool.holders().is_empty());
    tally.merge(racing);
    let mut report = WorkloadReport {
        bad_handouts: tally.dirty,
        ..WorkloadReport::default()
    };
    let overruns = watchdog.report().overruns;
    report.overruns = overruns.len() as u64;
    let mut sampled = sampled_single;
    sampled.violations.extend(sampled_racing.violations);
    sampled.violations.extend(overruns);
    rig.check(&mut figures, &report, &sampled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pg_sleep_30_is_cancelled_on_the_server() {
    let _serial = serial().await;
    let settings = Settings {
        max_size: 1,
        acquire: Duration::from_secs(1),
        ..Settings::default()
    };
    let mut rig = Rig::new("dropped-pg-sleep-30", Target::Shared, settings, |b| {
        b.statement_timeout(Duration::from_secs(60))
    })
    .await;
    let mut figures = Figures::new(&rig.name);
    let admin = rig.client().await;
    let sampler = rig.sampler();
    let running_sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
        AND query = 'SELECT pg_sleep(30)' AND state = 'active'";
    let running = |want: i64| {
        let admin = &admin;
        let dbname = rig.dbname.clone();
        async move {
            admin
                .query_one(running_sql, &[&dbname])
                .await
                .unwrap()
                .get::<_, i64>(0)
                == want
        }
    };
    let mut pids = Vec::new();
    for (label, how) in [
        ("held connection", 0),
        ("transaction", 1),
        ("one-shot", 2),
        ("aborted task", 3),
    ] {
        let pool = rig.pool.clone();
        let sleep = async move {
            let mut db = pool.db();
            match how {
                1 => {
                    let mut conn = db.acquire().await?;
                    let mut tx = conn.begin().await?;
                    tx.execute("INSERT INTO ledger (id, worker) VALUES (-1, 0)", &[])
                        .await?;
                    tx.query("SELECT pg_sleep(30)", &[]).await.map(drop)
                }
                2 => db.query("SELECT pg_sleep(30)", &[]).await.map(drop),
                _ => {
                    let mut conn = db.acquire().await?;
                    conn.query("SELECT pg_sleep(30)", &[]).await.map(drop)
                }
            }
        };
        // Wait until it runs on the server, then drop it: a request timeout in the
        // caller (`select!`), or an aborted task.
        let wait_running = async {
            let ok = eventually(Duration::from_secs(3), || running(1)).await;
            assert!(ok, "{label}: pg_sleep(30) never started");
        };
        let dropped = if how == 3 {
            let task = tokio::spawn(sleep);
            wait_running.await;
            let dropped = Instant::now();
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
            dropped
        } else {
            tokio::select! {
                r = sleep => panic!("{label}: pg_sleep(30) returned {r:?}"),
                () = wait_running => {}
            }
            Instant::now()
        };
        let cancelled = eventually(Duration::from_secs(3), || running(0)).await;
        let on_server = dropped.elapsed();
        assert!(
            cancelled,
            "{label}: pg_sleep(30) still running on the server"
        );
        // The next borrower (max_size 1) is served promptly with a clean connection.
        let mut db = rig.pool.db();
        let mut conn = rig
            .watchdog
            .call("next borrower", rig.settings.acquire, db.acquire())
            .await
            .unwrap()
            .unwrap();
        let next = dropped.elapsed();
        pids.push((label, conn.backend_pid()));
        let row = conn
            .query_one(
                tests::faults::workload::PROBE,
                &[&tests::faults::workload::now_micros()],
            )
            .await
            .unwrap();
        assert!(
            row.get::<_, bool>(1),
            "{label}: handed out inside a transaction"
        );
        figures.add(
            &format!("{label}: cancelled on the server / next borrower served"),
            format!("{} ms / {} ms", on_server.as_millis(), next.as_millis()),
        );
        assert!(next < rig.settings.acquire, "{label}: {next:?}");
    }
    // Cancelling costs no connection: each was recovered (rolled back if in a
    // transaction) and handed to the next borrower, not replaced.
    let first = pids[0].1;
    for (label, pid) in &pids {
        assert_eq!(
            *pid, first,
            "{label}: the connection was replaced, not recovered ({pids:?})"
        );
    }
    assert_eq!(
        rig.pool.status().counters.discarded(),
        0,
        "{}",
        rig.pool.status()
    );
    let work = rig.workload();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = work.stop().await;
    let sampled = sampler.stop().await;
    let client = rig.client().await;
    let leaked: i64 = client
        .query_one("SELECT count(*) FROM ledger WHERE id = -1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "the dropped transaction's insert was committed");
    rig.check(&mut figures, &report, &sampled).await;
}
