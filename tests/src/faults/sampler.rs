//! The invariant sampler: every 10 ms, the pool's and the server's view of the pool.
//!
//! Checked at every sample:
//!
//! * the pool's size never exceeds `max_size` (strict);
//! * no backend of the pool is idle in a transaction, busy, or holding an advisory lock
//!   while no borrower holds its connection (for longer than a grace period, so the
//!   pool's own cleaning in flight is not counted);
//! * the server never has more backends of the pool than `max_size` (for longer than the
//!   grace period: a discarded connection's backend takes a moment to exit).
//!
//! Backends behind a partition (a blackholed proxy link, and for the grace period after it
//! heals) are out of the pool's reach and not counted. With `map_holders` off (through PgBouncer, where server pids are not the
//! pool's), only "idle in transaction longer than the grace period" is checked on the
//! server.
//!
//! The sampler also keeps the pool's timeline (size, idle, in use, connecting, waiting at
//! every sample) and the scenario's marks ([`Sampler::mark`]: "server stopped", …). With
//! `FAULTS_PLOTS` set to a directory, [`SamplerReport::write_trace`] writes them there as
//! `<scenario>.csv`, which `cargo run -p bench -- --plot-faults DIR` draws
//! (`bench/fault-plots.sh` does both).

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_core::Pool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::{Client, Config, NoTls};

use super::proxy::ProxyView;

/// What the sampler looks at.
#[derive(Clone, Debug)]
pub struct SamplerConfig {
    /// A direct connection to the server (not through the proxy).
    pub admin: Config,
    /// The pool's database.
    pub dbname: String,
    /// The pool's `application_name` (`None`: every backend of the database).
    pub application_name: Option<String>,
    /// The most backends the pool may have on the server.
    pub max_backends: usize,
    /// How often to sample.
    pub period: Duration,
    /// How long a server-side condition may last before it counts.
    pub grace: Duration,
    /// Whether server pids are the pool's connections' `backend_pid`s.
    pub map_holders: bool,
}

impl SamplerConfig {
    /// Every 10 ms, a 1 s grace period, server pids mapped to holders.
    pub fn new(admin: Config, dbname: &str, application_name: &str, max_backends: usize) -> Self {
        SamplerConfig {
            admin,
            dbname: dbname.to_owned(),
            application_name: Some(application_name.to_owned()),
            max_backends,
            period: Duration::from_millis(10),
            grace: Duration::from_secs(1),
            map_holders: true,
        }
    }
}

/// What the sampler saw.
#[derive(Clone, Debug, Default)]
pub struct SamplerReport {
    /// Samples of the pool.
    pub samples: u64,
    /// Samples that also read the server.
    pub server_samples: u64,
    /// Samples during which the server could not be read.
    pub unreachable_samples: u64,
    /// The largest pool size seen.
    pub max_pool_size: usize,
    /// The most backends of the pool seen on the server at once (partitioned ones aside).
    pub max_server_backends: usize,
    /// Every broken invariant.
    pub violations: Vec<String>,
    /// The pool at every sample.
    pub timeline: Vec<Point>,
    /// What the scenario did, and when ([`Sampler::mark`]).
    pub marks: Vec<Mark>,
}

/// The pool at one sample, `at` after the sampler started.
#[derive(Clone, Copy, Debug, Default)]
pub struct Point {
    /// Since the sampler started.
    pub at: Duration,
    /// Connections open or being opened (idle + in use + connecting).
    pub size: usize,
    /// Idle connections.
    pub idle: usize,
    /// Connections handed out.
    pub in_use: usize,
    /// Connects in progress.
    pub connecting: usize,
    /// Tasks waiting for a connection.
    pub waiting: usize,
    /// The longest any connection out now has been held.
    pub longest_held: Duration,
}

/// A moment of the scenario: a fault injected or healed.
#[derive(Clone, Debug)]
pub struct Mark {
    /// Since the sampler started.
    pub at: Duration,
    /// What happened, in a few words.
    pub label: String,
}

impl SamplerReport {
    /// With `FAULTS_PLOTS` set, writes the timeline and the marks to
    /// `$FAULTS_PLOTS/<scenario>.csv` (`# mark,<ms>,<label>` lines, then a header and one
    /// row per sample) and returns the path; otherwise does nothing.
    pub fn write_trace(&self, scenario: &str) -> std::io::Result<Option<PathBuf>> {
        let Some(dir) = std::env::var_os("FAULTS_PLOTS") else {
            return Ok(None);
        };
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{scenario}.csv"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for m in &self.marks {
            let label = m.label.replace('\n', " ");
            writeln!(out, "# mark,{:.1},{label}", m.at.as_secs_f64() * 1e3)?;
        }
        writeln!(
            out,
            "t_ms,size,idle,in_use,connecting,waiting,longest_held_ms"
        )?;
        for p in &self.timeline {
            writeln!(
                out,
                "{:.1},{},{},{},{},{},{:.1}",
                p.at.as_secs_f64() * 1e3,
                p.size,
                p.idle,
                p.in_use,
                p.connecting,
                p.waiting,
                p.longest_held.as_secs_f64() * 1e3
            )?;
        }
        out.flush()?;
        Ok(Some(path))
    }
}

impl std::fmt::Display for SamplerReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sampler: {} samples ({} of the server, {} with the server unreachable), pool size ≤ {}, server backends ≤ {}, {} violations",
            self.samples,
            self.server_samples,
            self.unreachable_samples,
            self.max_pool_size,
            self.max_server_backends,
            self.violations.len()
        )
    }
}

/// A running sampler; [`Sampler::stop`] ends it and returns its report.
#[derive(Debug)]
pub struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<SamplerReport>,
    started: Instant,
    marks: Arc<Mutex<Vec<Mark>>>,
}

const QUERY: &str = "SELECT a.pid, coalesce(a.state, ''), coalesce(a.client_port, 0), \
    extract(epoch FROM clock_timestamp() - coalesce(a.state_change, a.backend_start))::float8, \
    (SELECT count(*) FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory') \
    FROM pg_stat_activity a \
    WHERE a.datname = $1 AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend' \
    AND ($2::text IS NULL OR a.application_name = $2)";

impl Sampler {
    /// Starts sampling `pool` on the current runtime.
    pub fn start(pool: Pool, config: SamplerConfig, proxy: Option<ProxyView>) -> Sampler {
        let (stop, stop_rx) = watch::channel(false);
        let started = Instant::now();
        let task = tokio::spawn(run(pool, config, proxy, stop_rx, started));
        Sampler {
            stop,
            task,
            started,
            marks: Arc::default(),
        }
    }

    /// Marks this moment of the timeline: what the scenario does now (a fault, a heal).
    pub fn mark(&self, label: impl Into<String>) {
        self.mark_at(Instant::now(), label);
    }

    /// Marks a moment of the timeline known in advance or after the fact (a deadline).
    pub fn mark_at(&self, at: Instant, label: impl Into<String>) {
        let mark = Mark {
            at: at.saturating_duration_since(self.started),
            label: label.into(),
        };
        self.marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(mark);
    }

    /// Stops sampling and returns what was seen.
    pub async fn stop(self) -> SamplerReport {
        let _ = self.stop.send(true);
        let mut report = self.task.await.unwrap_or_else(|e| SamplerReport {
            violations: vec![format!("the sampler task failed: {e}")],
            ..SamplerReport::default()
        });
        let mut marks = std::mem::take(&mut *self.marks.lock().unwrap_or_else(|e| e.into_inner()));
        marks.sort_by_key(|m| m.at);
        report.marks = marks;
        report
    }
}

async fn connect(config: &Config) -> Option<Client> {
    let mut config = config.clone();
    config.application_name("faults-sampler");
    config.connect_timeout(Duration::from_millis(500));
    match tokio::time::timeout(Duration::from_millis(700), config.connect(NoTls)).await {
        Ok(Ok((client, connection))) => {
            tokio::spawn(connection);
            Some(client)
        }
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    IdleInTransaction,
    Busy,
    AdvisoryLock,
}

struct Row {
    pid: i32,
    state: String,
    port: u16,
    age: Duration,
    locks: i64,
}

async fn run(
    pool: Pool,
    config: SamplerConfig,
    proxy: Option<ProxyView>,
    mut stop: watch::Receiver<bool>,
    started: Instant,
) -> SamplerReport {
    let mut report = SamplerReport::default();
    let mut interval = tokio::time::interval(config.period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client: Option<Arc<Client>> = None;
    let mut next_connect = Instant::now();
    let mut reported: HashSet<(Kind, i32)> = HashSet::new();
    let mut over_since: Option<Instant> = None;
    let mut over_reported = false;
    // Upstream ports last seen partitioned: a healed link's backend gets the grace period
    // to receive what the partition held back.
    let mut partitioned_at: HashMap<u16, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => break,
        }
        report.samples += 1;
        let status = pool.status();
        report.timeline.push(Point {
            at: started.elapsed(),
            size: status.size,
            idle: status.idle,
            in_use: status.in_use,
            connecting: status.connecting,
            waiting: status.waiting,
            longest_held: pool
                .holders()
                .iter()
                .map(|h| h.held_for)
                .max()
                .unwrap_or_default(),
        });
        report.max_pool_size = report.max_pool_size.max(status.size);
        if status.size > status.max_size {
            report.violations.push(format!(
                "pool size {} exceeds max_size {}\n{status}",
                status.size, status.max_size
            ));
        }
        if client.as_ref().is_some_and(|c| c.is_closed()) {
            client = None;
        }
        if client.is_none() && Instant::now() >= next_connect {
            client = connect(&config.admin).await.map(Arc::new);
            next_connect = Instant::now() + Duration::from_millis(200);
        }
        let Some(admin) = client.clone() else {
            report.unreachable_samples += 1;
            continue;
        };
        let held_before: HashSet<i32> = pool.holders().iter().map(|h| h.backend_pid).collect();
        let rows = match tokio::time::timeout(
            Duration::from_secs(1),
            admin.query(QUERY, &[&config.dbname, &config.application_name]),
        )
        .await
        {
            Ok(Ok(rows)) => rows,
            _ => {
                client = None;
                report.unreachable_samples += 1;
                continue;
            }
        };
        report.server_samples += 1;
        let mut held = held_before;
        held.extend(pool.holders().iter().map(|h| h.backend_pid));
        let now = Instant::now();
        if let Some(p) = proxy.as_ref() {
            for port in p.partitioned_upstream_ports() {
                partitioned_at.insert(port, now);
            }
        }
        partitioned_at.retain(|_, at| now.duration_since(*at) < config.grace);
        let partitioned: HashSet<u16> = partitioned_at.keys().copied().collect();
        let rows: Vec<Row> = rows
            .iter()
            .map(|r| Row {
                pid: r.get(0),
                state: r.get(1),
                port: u16::try_from(r.get::<_, i32>(2)).unwrap_or(0),
                age: Duration::from_secs_f64(r.get::<_, f64>(3).max(0.0)),
                locks: r.get(4),
            })
            .filter(|r| !partitioned.contains(&r.port))
            .collect();
        report.max_server_backends = report.max_server_backends.max(rows.len());
        if rows.len() > config.max_backends {
            let since = *over_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= config.grace && !over_reported {
                over_reported = true;
                report.violations.push(format!(
                    "the server has had {} backends of the pool (max {}) for {:?}\n{status}",
                    rows.len(),
                    config.max_backends,
                    since.elapsed()
                ));
            }
        } else {
            over_since = None;
        }
        let mut found: HashMap<(Kind, i32), String> = HashMap::new();
        for row in &rows {
            if row.age < config.grace {
                continue;
            }
            let unheld = config.map_holders && !held.contains(&row.pid);
            if row.state.starts_with("idle in transaction") && (unheld || !config.map_holders) {
                found.insert(
                    (Kind::IdleInTransaction, row.pid),
                    format!(
                        "backend {} is `{}` for {:?} with no borrower holding it",
                        row.pid, row.state, row.age
                    ),
                );
            }
            if unheld && row.state == "active" {
                found.insert(
                    (Kind::Busy, row.pid),
                    format!(
                        "backend {} has been busy for {:?} with no borrower holding it (a dropped statement not cancelled?)",
                        row.pid, row.age
                    ),
                );
            }
            if unheld && row.state == "idle" && row.locks > 0 {
                found.insert(
                    (Kind::AdvisoryLock, row.pid),
                    format!(
                        "backend {} holds {} advisory lock(s), idle for {:?} with no borrower holding it",
                        row.pid, row.locks, row.age
                    ),
                );
            }
        }
        for (key, message) in found {
            if reported.insert(key) {
                report.violations.push(message);
            }
        }
    }
    report
}
