//! The rig every scenario runs on: a database (on the shared server or a private
//! cluster), the fault proxy in front of it, a pool through the proxy, and the ledger,
//! sampler, watchdog and workload around the pool.

use std::sync::Arc;
use std::time::Duration;

use pool_core::{Builder, Pool};
use tests::faults::explain::Category;
use tests::faults::health::{Figures, full_health};
use tests::faults::ledger::{self, Ledger};
use tests::faults::proxy::FaultProxy;
use tests::faults::rng::Rng;
use tests::faults::sampler::{Sampler, SamplerConfig, SamplerReport};
use tests::faults::watchdog::Watchdog;
use tests::faults::workload::{Workload, WorkloadConfig, WorkloadReport};
use tests::harness::{PrivateCluster, TestDb, test_db};
use tests::poll::eventually_every;
use tokio_postgres::{Client, Config, NoTls};

/// One scenario at a time: the deadlines are checked to 100 ms, and two fault scenarios
/// sharing two cores would measure each other.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// The seed of this run: `FAULTS_SEED` if set, else fresh. Printed, so a failure can be
/// replayed.
pub fn seed(scenario: &str) -> u64 {
    let seed = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(Rng::fresh_seed);
    eprintln!("[{scenario}] seed {seed} (replay with FAULTS_SEED={seed})");
    seed
}

/// The pool's deadlines and size in a scenario.
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_size: usize,
    pub acquire: Duration,
    pub connect: Duration,
    pub statement: Duration,
    pub workers: usize,
    /// Log in as this user (and password) instead of the superuser.
    pub login: Option<(String, Option<String>)>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_size: 4,
            acquire: Duration::from_secs(2),
            connect: Duration::from_secs(1),
            statement: Duration::from_secs(2),
            workers: 6,
            login: None,
        }
    }
}

/// Where the database lives.
pub enum Target {
    /// A fresh database on the shared server.
    Shared,
    /// A database on a private cluster (for restarts, pauses, server settings).
    Cluster(Box<PrivateCluster>),
}

pub struct Rig {
    pub name: String,
    pub app: String,
    pub dbname: String,
    /// Direct to the database, as the superuser (not through the proxy).
    pub direct: Config,
    pub proxy: FaultProxy,
    pub pool: Pool,
    pub ledger: Arc<Ledger>,
    pub watchdog: Arc<Watchdog>,
    pub settings: Settings,
    pub seed: u64,
    pub rng: Rng,
    pub cluster: Option<PrivateCluster>,
    _tdb: Option<TestDb>,
}

/// Connects with `config`, spawning the connection task.
pub async fn connect(config: &Config) -> Client {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting directly: {e}"));
    tokio::spawn(connection);
    client
}

impl Rig {
    pub async fn new(
        name: &str,
        target: Target,
        settings: Settings,
        customize: impl FnOnce(Builder) -> Builder,
    ) -> Rig {
        let (tdb, cluster, direct) = match target {
            Target::Shared => {
                let tdb = test_db().await;
                let config = tdb.config();
                (Some(tdb), None, config)
            }
            Target::Cluster(cluster) => {
                let admin = connect(&cluster.config()).await;
                admin.batch_execute("CREATE DATABASE faults").await.unwrap();
                let mut config = cluster.config();
                config.dbname("faults");
                (None, Some(*cluster), config)
            }
        };
        let port = direct.get_ports().first().copied().unwrap_or(5432);
        let proxy = FaultProxy::to_port(port).await.unwrap();
        let dbname = direct.get_dbname().unwrap_or("postgres").to_owned();
        let app = format!("faults-{name}");
        let client = connect(&direct).await;
        client.batch_execute(ledger::CREATE_TABLE).await.unwrap();
        drop(client);
        let mut config = proxy.config(&direct);
        if let Some((user, password)) = &settings.login {
            config.user(user);
            if let Some(password) = password {
                config.password(password);
            }
        }
        let builder = Pool::builder(config)
            .application_name(app.clone())
            .max_size(settings.max_size)
            .acquire_timeout(settings.acquire)
            .connect_timeout(settings.connect)
            .statement_timeout(settings.statement);
        let pool = customize(builder).build().unwrap();
        let seed = seed(name);
        Rig {
            name: name.to_owned(),
            app,
            dbname,
            direct,
            proxy,
            watchdog: Arc::new(Watchdog::new(pool.clone())),
            pool,
            ledger: Arc::new(Ledger::new()),
            settings,
            seed,
            rng: Rng::new(seed),
            cluster,
            _tdb: tdb,
        }
    }

    pub fn cluster(&self) -> &PrivateCluster {
        self.cluster
            .as_ref()
            .expect("this rig has no private cluster")
    }

    /// A direct client to the database, as the superuser.
    pub async fn client(&self) -> Client {
        connect(&self.direct).await
    }

    pub fn sampler(&self) -> Sampler {
        let config = SamplerConfig::new(
            self.direct.clone(),
            &self.dbname,
            &self.app,
            self.settings.max_size,
        );
        Sampler::start(self.pool.clone(), config, Some(self.proxy.view()))
    }

    pub fn workload_config(&mut self) -> WorkloadConfig {
        let mut config = WorkloadConfig::new(
            self.settings.acquire,
            self.settings.statement,
            self.rng.next_u64(),
        );
        config.workers = self.settings.workers;
        config
    }

    pub fn workload(&mut self) -> Workload {
        let config = self.workload_config();
        self.workload_with(config)
    }

    pub fn workload_with(&self, config: WorkloadConfig) -> Workload {
        Workload::start(
            self.pool.clone(),
            config,
            Arc::clone(&self.ledger),
            Arc::clone(&self.watchdog),
        )
    }

    /// Opens all `max_size` connections and returns them idle.
    pub async fn warm(&self) {
        let mut db = self.pool.db();
        let set = db.acquire_many(self.settings.max_size).await.unwrap();
        drop(set);
        let ok = eventually(Duration::from_secs(5), || async {
            self.pool.status().idle == self.settings.max_size
        })
        .await;
        assert!(ok, "not warm: {}", self.pool.status());
    }

    /// Terminates the pool's backends (only idle ones if `idle_only`), all at once, and
    /// waits (up to 5 s) until the server lists none of them; returns how many were
    /// signalled.
    ///
    /// Not `pg_terminate_backend(pid, timeout)`: it signals one backend at a time and waits
    /// for the process to be gone, which under a stopped postmaster (no one reaps the
    /// exited backends) is the whole timeout per backend.
    pub async fn terminate(&self, client: &Client, idle_only: bool) -> i64 {
        let state = idle_only.then_some("idle");
        let pids = self.backends(client, state).await;
        let pids: Vec<i32> = client
            .query(
                "SELECT p FROM unnest($1::int4[]) p WHERE pg_terminate_backend(p)",
                &[&pids],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let gone = eventually(Duration::from_secs(5), || async {
            client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                    &[&pids],
                )
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) == 0)
        })
        .await;
        // As `pg_terminate_backend(pid, 5000)` did: a backend still exiting after 5 s (one
        // blocked writing its FATAL to a partitioned client) is reported, not fatal here;
        // the sampler's invariants judge what it leaves behind.
        if !gone {
            eprintln!(
                "[{}] terminated backends {pids:?} still listed after 5 s",
                self.name
            );
        }
        pids.len() as i64
    }

    /// Pids of the pool's backends in `state` (any state if `None`).
    pub async fn backends(&self, client: &Client, state: Option<&str>) -> Vec<i32> {
        client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2 \
                 AND ($3::text IS NULL OR state = $3) ORDER BY pid",
                &[&self.dbname, &self.app, &state],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Measures "back to full health" from now, within 5 s.
    pub async fn health(&self, figures: &mut Figures, label: &str) -> Duration {
        match full_health(&self.pool, Duration::from_secs(5)).await {
            Ok(took) => {
                figures.add(label, format!("{} ms", took.as_millis()));
                took
            }
            Err(e) => {
                figures.print();
                panic!("[{}] {label}: {e}", self.name)
            }
        }
    }

    /// The pass criteria every scenario shares: no acked write lost (and no failed
    /// write committed), every call within its deadline + 100 ms, no bad hand-out, every
    /// error explained, the sampler's invariants held.
    pub async fn check(
        &self,
        figures: &mut Figures,
        work: &WorkloadReport,
        sampled: &SamplerReport,
    ) {
        let client = self.client().await;
        let ledger = self.ledger.verify(&client).await.unwrap();
        let watchdog = self.watchdog.report();
        figures.add("ledger", &ledger);
        figures.add("calls", &watchdog);
        figures.add("invariants", sampled);
        figures.add("workload", work);
        let status = self.pool.status();
        figures.add(
            "pool",
            format!(
                "created {}, discarded {} (broken {}, validation {}, reset {}, expired {}), connect failures {}, timeouts {}, cancelled {}, rollbacks {}",
                status.counters.created,
                status.counters.discarded(),
                status.counters.discarded_broken,
                status.counters.discarded_validation,
                status.counters.discarded_reset,
                status.counters.discarded_expired,
                status.counters.connect_failures,
                status.counters.timeouts,
                status.counters.cancelled_statements,
                status.counters.rollbacks_on_return
            ),
        );
        match sampled.write_trace(&self.name) {
            Ok(Some(path)) => figures.add("timeline", path.display()),
            Ok(None) => {}
            Err(e) => figures.add("timeline not written", e),
        }
        figures.print();
        let mut problems = Vec::new();
        if !ledger.is_consistent() {
            problems.push(format!("ledger inconsistent: {ledger}"));
        }
        for o in &watchdog.overruns {
            problems.push(o.clone());
        }
        for v in &sampled.violations {
            problems.push(format!("invariant: {v}"));
        }
        for u in &work.unexplained {
            problems.push(format!("unexplained error: {u}"));
        }
        for b in &work.bad_handouts {
            problems.push(format!("bad hand-out: {b}"));
        }
        if work.errors_of(Category::Other) > 0 {
            problems.push(format!(
                "unexpected errors: {:?}",
                work.samples.get(&Category::Other)
            ));
        }
        assert!(
            problems.is_empty(),
            "[{}] seed {}: {} problem(s):\n{}",
            self.name,
            self.seed,
            problems.len(),
            problems.join("\n")
        );
    }
}

/// Polls `f` every 10 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_every(within, Duration::from_millis(10), f).await
}

/// Asserts that every error of `category` the workload saw has a root cause matching
/// one of `needles` (case-insensitive).
pub fn assert_roots(work: &WorkloadReport, needles: &[&str]) {
    for (root, n) in &work.roots {
        let lower = root.to_lowercase();
        assert!(
            needles
                .iter()
                .any(|needle| lower.contains(&needle.to_lowercase())),
            "{n} error(s) with an unexpected root cause: {root}\n{work}"
        );
    }
}

/// Asserts that the workload saw errors of the `allowed` categories only.
pub fn assert_categories(work: &WorkloadReport, allowed: &[Category]) {
    for category in work.errors.keys() {
        assert!(allowed.contains(category), "{work}");
    }
}
