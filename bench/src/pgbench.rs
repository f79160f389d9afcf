//! pgbench's own workloads, like for like: select-only (`pgbench -S`: a point select by
//! a random key) and TPC-B (pgbench's default script: three updates, a select and an
//! insert in one transaction), on tables made by `pgbench -i -s 4` in the bench's
//! database, at 16/64/256 tasks with pool 4 and 16, interleaved.
//!
//! Side by side in each cell: pool-core (select-only through `db.query_one`, on the
//! shared lane and with it off; TPC-B by hand and through `#[transactional]`), deadpool
//! with `query_typed` (parsed every time) and with its statement cache
//! (`prepare_cached`), bb8 with `query_typed` (bb8-postgres has no statement cache), the
//! raw prepared limit (one raw client per task, statements prepared once, as many
//! clients as the pool has connections) and, as the external anchor, pgbench itself
//! (`-M prepared`, as many clients as the pool has connections, 2 threads): pgbench's
//! clients are connections, so it has no tasks beyond them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use pool_core::{Db, Error, Tx, transactional};
use tokio::sync::Barrier;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

use crate::Plan;
use crate::impls::{Bb8, Bb8Pool, Deadpool, Op, PcVariant, PoolCore, Target};
use crate::report::rate;
use crate::run::{CellResult, run_custom};
use crate::stats::median;

/// pgbench's scale: 100,000 accounts, 10 tellers and 1 branch per unit.
const SCALE: i32 = 4;
const ACCOUNTS: i32 = 100_000 * SCALE;
const TELLERS: i32 = 10 * SCALE;
const BRANCHES: i32 = SCALE;

const SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
const UPDATE_ACCOUNT: &str = "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2";
const UPDATE_TELLER: &str = "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2";
const UPDATE_BRANCH: &str = "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2";
const INSERT_HISTORY: &str = "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
                              VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)";

/// Which of pgbench's workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    /// `pgbench -S`.
    Select,
    /// pgbench's default (TPC-B like) script.
    TpcB,
}

impl Work {
    fn title(self) -> &'static str {
        match self {
            Work::Select => "select-only (`pgbench -S`)",
            Work::TpcB => "TPC-B (pgbench's default script)",
        }
    }
}

/// Who runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// pool-core with its defaults: select-only on the shared lane; TPC-B by hand
    /// (`acquire`, `begin`, the statements, `commit`).
    PoolCore,
    /// pool-core, `shared_lane(false)` (select-only) or `#[transactional]` (TPC-B).
    PoolCoreAlt,
    Deadpool,
    DeadpoolPrepared,
    Bb8,
    RawPrepared,
    /// pgbench itself.
    Pgbench,
}

impl Who {
    const ALL: [Who; 7] = [
        Who::PoolCore,
        Who::PoolCoreAlt,
        Who::Deadpool,
        Who::DeadpoolPrepared,
        Who::Bb8,
        Who::RawPrepared,
        Who::Pgbench,
    ];

    fn name(self, work: Work) -> &'static str {
        match (self, work) {
            (Who::PoolCore, Work::Select) => "pool-core (lane)",
            (Who::PoolCore, Work::TpcB) => "pool-core by hand",
            (Who::PoolCoreAlt, Work::Select) => "pool-core lane off",
            (Who::PoolCoreAlt, Work::TpcB) => "pool-core `#[transactional]`",
            (Who::Deadpool, _) => "deadpool",
            (Who::DeadpoolPrepared, _) => "deadpool (prepare_cached)",
            (Who::Bb8, _) => "bb8",
            (Who::RawPrepared, _) => "raw prepared",
            (Who::Pgbench, _) => "pgbench -M prepared",
        }
    }

    fn is_peer(self) -> bool {
        matches!(self, Who::Deadpool | Who::DeadpoolPrepared | Who::Bb8)
    }
}

/// A small, fast random number per thread (xorshift), for keys.
fn below(n: i32) -> i32 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) };
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        // `n` is positive and small: the remainder fits.
        i32::try_from(x % u64::from(n.unsigned_abs())).unwrap_or(0)
    })
}

/// One TPC-B transaction's parameters, drawn as pgbench draws them.
#[derive(Clone, Copy)]
struct Draw {
    aid: i32,
    tid: i32,
    bid: i32,
    delta: i32,
}

impl Draw {
    fn new() -> Draw {
        Draw {
            aid: below(ACCOUNTS) + 1,
            tid: below(TELLERS) + 1,
            bid: below(BRANCHES) + 1,
            delta: below(10_001) - 5_000,
        }
    }

    /// Each statement's parameters, in script order.
    fn params(&self) -> [Vec<&(dyn ToSql + Sync)>; 5] {
        [
            vec![&self.delta, &self.aid],
            vec![&self.aid],
            vec![&self.delta, &self.tid],
            vec![&self.delta, &self.bid],
            vec![&self.tid, &self.bid, &self.aid, &self.delta],
        ]
    }
}

/// The script's statements, in order.
const SCRIPT: [&str; 5] = [
    UPDATE_ACCOUNT,
    SELECT,
    UPDATE_TELLER,
    UPDATE_BRANCH,
    INSERT_HISTORY,
];

fn typed<'a>(params: &[&'a (dyn ToSql + Sync)]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.iter().map(|p| (*p, Type::INT4)).collect()
}

// ---------------------------------------------------------------------------------------
// pool-core

#[transactional]
async fn tpcb_transactional(tx: &mut Tx, draw: Draw) -> Result<i32, Error> {
    tpcb_in(tx, draw).await
}

async fn tpcb_in(tx: &mut Tx<'_>, draw: Draw) -> Result<i32, Error> {
    let p = draw.params();
    tx.execute(UPDATE_ACCOUNT, &p[0]).await?;
    let balance: i32 = tx.query_one(SELECT, &p[1]).await?.get(0);
    tx.execute(UPDATE_TELLER, &p[2]).await?;
    tx.execute(UPDATE_BRANCH, &p[3]).await?;
    tx.execute(INSERT_HISTORY, &p[4]).await?;
    Ok(balance)
}

async fn tpcb_by_hand(db: &mut Db, draw: Draw) -> Result<i32, Error> {
    let mut conn = db.acquire().await?;
    let mut tx = conn.begin().await?;
    let balance = tpcb_in(&mut tx, draw).await?;
    tx.commit().await?;
    Ok(balance)
}

struct PoolCoreTarget {
    pool: pool_core::Pool,
    work: Work,
    alt: bool,
}

impl Target for PoolCoreTarget {
    type Task = (Db, Work, bool);

    fn fill_count(&self) -> usize {
        self.pool.max_size()
    }

    fn task(&self, _i: usize) -> (Db, Work, bool) {
        (self.pool.db(), self.work, self.alt)
    }

    async fn fill(task: &mut (Db, Work, bool), barrier: Arc<Barrier>) {
        let conn = task.0.acquire().await.expect("pool-core: checkout");
        barrier.wait().await;
        drop(conn);
    }

    async fn op(task: &mut (Db, Work, bool), _op: Op) {
        let (db, work, alt) = task;
        match work {
            Work::Select => {
                let aid = below(ACCOUNTS) + 1;
                let row = db
                    .query_one(SELECT, &[&aid])
                    .await
                    .expect("pool-core: select");
                std::hint::black_box(row.get::<_, i32>(0));
            }
            Work::TpcB if *alt => {
                tpcb_transactional(db, Draw::new())
                    .await
                    .expect("pool-core: TPC-B (#[transactional])");
            }
            Work::TpcB => {
                tpcb_by_hand(db, Draw::new())
                    .await
                    .expect("pool-core: TPC-B");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// deadpool-postgres

struct DeadpoolTarget {
    pool: deadpool_postgres::Pool,
    size: usize,
    work: Work,
    prepared: bool,
}

impl Target for DeadpoolTarget {
    type Task = (deadpool_postgres::Pool, Work, bool);

    fn fill_count(&self) -> usize {
        self.size
    }

    fn task(&self, _i: usize) -> Self::Task {
        (self.pool.clone(), self.work, self.prepared)
    }

    async fn fill(task: &mut Self::Task, barrier: Arc<Barrier>) {
        let conn = task.0.get().await.expect("deadpool: checkout");
        barrier.wait().await;
        drop(conn);
    }

    async fn op(task: &mut Self::Task, _op: Op) {
        let (pool, work, prepared) = task;
        let mut conn = pool.get().await.expect("deadpool: checkout");
        match work {
            Work::Select => {
                let aid = below(ACCOUNTS) + 1;
                let balance: i32 = if *prepared {
                    let st = conn
                        .prepare_cached(SELECT)
                        .await
                        .expect("deadpool: prepare");
                    conn.query_one(&st, &[&aid])
                        .await
                        .expect("deadpool: select")
                        .get(0)
                } else {
                    conn.query_typed(SELECT, &[(&aid, Type::INT4)])
                        .await
                        .expect("deadpool: select")[0]
                        .get(0)
                };
                std::hint::black_box(balance);
            }
            Work::TpcB => {
                let draw = Draw::new();
                let params = draw.params();
                let tx = conn.transaction().await.expect("deadpool: begin");
                for (sql, p) in SCRIPT.iter().zip(&params) {
                    if *prepared {
                        let st = tx.prepare_cached(sql).await.expect("deadpool: prepare");
                        tx.query(&st, p).await.expect("deadpool: TPC-B");
                    } else {
                        tx.query_typed(sql, &typed(p))
                            .await
                            .expect("deadpool: TPC-B");
                    }
                }
                tx.commit().await.expect("deadpool: commit");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// bb8-postgres

struct Bb8Target {
    pool: Bb8Pool,
    size: usize,
    work: Work,
}

impl Target for Bb8Target {
    type Task = (Bb8Pool, Work);

    fn fill_count(&self) -> usize {
        self.size
    }

    fn task(&self, _i: usize) -> Self::Task {
        (self.pool.clone(), self.work)
    }

    async fn fill(task: &mut Self::Task, barrier: Arc<Barrier>) {
        let conn = task.0.get().await.expect("bb8: checkout");
        barrier.wait().await;
        drop(conn);
    }

    async fn op(task: &mut Self::Task, _op: Op) {
        let (pool, work) = task;
        let mut conn = pool.get().await.expect("bb8: checkout");
        match work {
            Work::Select => {
                let aid = below(ACCOUNTS) + 1;
                let rows = conn
                    .query_typed(SELECT, &[(&aid, Type::INT4)])
                    .await
                    .expect("bb8: select");
                std::hint::black_box(rows[0].get::<_, i32>(0));
            }
            Work::TpcB => {
                let draw = Draw::new();
                let params = draw.params();
                let tx = conn.transaction().await.expect("bb8: begin");
                for (sql, p) in SCRIPT.iter().zip(&params) {
                    tx.query_typed(sql, &typed(p)).await.expect("bb8: TPC-B");
                }
                tx.commit().await.expect("bb8: commit");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The raw prepared limit: one client per task, the script prepared once on each.

struct RawTarget {
    clients: Vec<(Arc<Client>, Arc<[Statement]>)>,
    work: Work,
}

impl RawTarget {
    async fn build(config: tokio_postgres::Config, n: usize, work: Work) -> Result<Self, String> {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let (client, connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let mut statements = Vec::with_capacity(SCRIPT.len());
            for sql in SCRIPT {
                statements.push(client.prepare(sql).await.map_err(|e| e.to_string())?);
            }
            clients.push((Arc::new(client), statements.into()));
        }
        Ok(RawTarget { clients, work })
    }
}

impl Target for RawTarget {
    type Task = (Arc<Client>, Arc<[Statement]>, Work);

    fn tasks(&self, requested: usize) -> usize {
        requested.min(self.clients.len())
    }

    fn fill_count(&self) -> usize {
        0
    }

    fn task(&self, i: usize) -> Self::Task {
        let (client, statements) = &self.clients[i];
        (Arc::clone(client), Arc::clone(statements), self.work)
    }

    async fn fill(_task: &mut Self::Task, _barrier: Arc<Barrier>) {}

    async fn op(task: &mut Self::Task, _op: Op) {
        let (client, statements, work) = task;
        match work {
            Work::Select => {
                let aid = below(ACCOUNTS) + 1;
                let row = client
                    .query_one(&statements[1], &[&aid])
                    .await
                    .expect("raw: select");
                std::hint::black_box(row.get::<_, i32>(0));
            }
            Work::TpcB => {
                let draw = Draw::new();
                let params = draw.params();
                client.batch_execute("BEGIN").await.expect("raw: begin");
                for (st, p) in statements.iter().zip(&params) {
                    client.query(st, p).await.expect("raw: TPC-B");
                }
                client.batch_execute("COMMIT").await.expect("raw: commit");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// pgbench itself, and the tables it makes

/// The `pgbench` binary: on `PATH`, else the newest PostgreSQL's.
fn pgbench_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path)
        .map(|d| d.join("pgbench"))
        .find(|p| p.is_file());
    on_path.or_else(|| {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin/pgbench")))
            .filter(|p| p.is_file())
            .collect();
        dirs.sort();
        dirs.pop()
    })
}

/// `pgbench` with the connection options of `config`.
fn pgbench(bin: &Path, config: &tokio_postgres::Config) -> Command {
    let mut cmd = Command::new(bin);
    match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => {
            cmd.arg("-h").arg(h);
        }
        Some(tokio_postgres::config::Host::Unix(p)) => {
            cmd.arg("-h").arg(p);
        }
        None => {}
    }
    if let Some(port) = config.get_ports().first() {
        cmd.arg("-p").arg(port.to_string());
    }
    if let Some(user) = config.get_user() {
        cmd.arg("-U").arg(user);
    }
    cmd
}

/// Makes pgbench's tables at scale [`SCALE`] in the bench's database.
fn init(bin: &Path, config: &tokio_postgres::Config) -> Result<(), String> {
    let db = config.get_dbname().unwrap_or("postgres");
    let out = pgbench(bin, config)
        .args(["-i", "-q", "-s", &SCALE.to_string(), db])
        .output()
        .map_err(|e| format!("running pgbench -i: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// pgbench's own transactions per second for `work` with `clients` connections, run
/// for `secs` seconds.
fn anchor(
    bin: &Path,
    config: &tokio_postgres::Config,
    work: Work,
    clients: usize,
    secs: u64,
) -> Result<f64, String> {
    let db = config.get_dbname().unwrap_or("postgres");
    let mut cmd = pgbench(bin, config);
    cmd.args(["-n", "-M", "prepared", "-j", "2"])
        .arg("-c")
        .arg(clients.to_string())
        .arg("-T")
        .arg(secs.to_string());
    if work == Work::Select {
        cmd.arg("-S");
    }
    let out = cmd
        .arg(db)
        .output()
        .map_err(|e| format!("running pgbench: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("tps = ")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .ok_or_else(|| {
            format!(
                "no tps in pgbench's output: {} {}",
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
}

// ---------------------------------------------------------------------------------------
// The section

/// Where and how the section runs.
struct Env<'a> {
    plan: &'a Plan,
    url: &'a str,
    config: &'a tokio_postgres::Config,
    bin: &'a Path,
}

fn run_one(env: &Env<'_>, who: Who, work: Work, pool: usize, tasks: usize) -> Result<f64, String> {
    let (plan, url) = (env.plan, env.url);
    let spec = plan.spec(Op::Select1, 2, pool, tasks);
    let config = env.config.clone();
    let res: Result<CellResult, String> = match who {
        Who::PoolCore | Who::PoolCoreAlt => run_custom(&spec, || async {
            let variant = if who == Who::PoolCoreAlt && work == Work::Select {
                PcVariant::LaneOff
            } else {
                PcVariant::Default
            };
            Ok(PoolCoreTarget {
                pool: PoolCore::build(url, pool, variant)?.pool,
                work,
                alt: who == Who::PoolCoreAlt,
            })
        }),
        Who::Deadpool | Who::DeadpoolPrepared => run_custom(&spec, || async {
            Ok(DeadpoolTarget {
                pool: Deadpool::build(config, pool, false)?.pool,
                size: pool,
                work,
                prepared: who == Who::DeadpoolPrepared,
            })
        }),
        Who::Bb8 => run_custom(&spec, || async {
            Ok(Bb8Target {
                pool: Bb8::build(config, pool, false).await?.pool,
                size: pool,
                work,
            })
        }),
        Who::RawPrepared => run_custom(&spec, || RawTarget::build(config, pool, work)),
        Who::Pgbench => {
            let secs = plan.select_window.as_secs().max(1) + 1;
            return anchor(env.bin, &config, work, pool, secs);
        }
    };
    res.map(|r| r.throughput)
}

/// What the section measured, for the summary line.
pub(crate) struct PgbenchSummary {
    /// pool-core's best ÷ the best peer, geometric mean over the select-only cells.
    pub(crate) select_vs_best_peer: f64,
    /// The same for the TPC-B cells.
    pub(crate) tpcb_vs_best_peer: f64,
    /// pool-core's best select-only ÷ the raw prepared limit, geometric mean.
    pub(crate) select_vs_raw: f64,
}

/// Runs the section; returns its markdown and summary figures (`None`: not run, the
/// markdown says why).
pub(crate) fn run(
    plan: &Plan,
    url: &str,
    config: &tokio_postgres::Config,
) -> (String, Option<PgbenchSummary>) {
    let mut out = String::from("\n## pgbench's workloads, like for like\n\n");
    let Some(bin) = pgbench_binary() else {
        let _ = writeln!(
            out,
            "Not run: no `pgbench` binary (on PATH or under /usr/lib/postgresql/*/bin)."
        );
        return (out, None);
    };
    if let Err(e) = init(&bin, config) {
        let _ = writeln!(out, "Not run: {e}");
        return (out, None);
    }
    // Three repetitions even in a full run: 12 groups of 7 cells.
    let reps = plan.reps.min(3);
    let _ = writeln!(
        out,
        "Tables from `pgbench -i -s {SCALE}`; 2 worker threads; transactions (select-only: statements) per second, \
         medians of {reps} interleaved runs of {} ms (pgbench: {} s each). \
         pool-core's select-only is `db.query_one` (on the shared lane by default; \"lane off\": a checkout each); its TPC-B is \
         `acquire`/`begin`/5 statements/`commit` by hand and the same through `#[transactional]`. The peers check out, \
         run the statements and return; deadpool with `query_typed` (parsed every time) and with `prepare_cached`; bb8 \
         with `query_typed` (bb8-postgres has no statement cache). **raw prepared**: one raw client per task, the \
         statements prepared once, as many clients as the pool has connections (so at most that many tasks); \
         **pgbench**: `pgbench -M prepared -c <pool> -j 2`, its clients being connections. ÷ best peer divides \
         pool-core's better column by the best peer column; the last column is like for like (a checkout each) for \
         select-only and the macro's cost for TPC-B.\n",
        plan.select_window.as_millis(),
        plan.select_window.as_secs().max(1) + 1,
    );
    let env = Env {
        plan,
        url,
        config,
        bin: &bin,
    };
    let mut select_ratios = Vec::new();
    let mut tpcb_ratios = Vec::new();
    let mut raw_ratios = Vec::new();
    for work in [Work::Select, Work::TpcB] {
        let _ = writeln!(out, "\n### {}\n", work.title());
        let mut head = String::from("| pool | tasks |");
        let mut rule = String::from("|---:|---:|");
        for who in Who::ALL {
            let _ = write!(head, " {} |", who.name(work));
            rule.push_str("---:|");
        }
        let third = match work {
            Work::Select => "lane off ÷ best peer",
            Work::TpcB => "`#[transactional]` ÷ by hand",
        };
        let _ = writeln!(
            out,
            "{head} ÷ best peer | ÷ raw prepared | {third} |\n{rule}---:|---:|---:|"
        );
        for pool in crate::POOLS {
            for tasks in crate::SELECT_TASKS {
                let mut runs: Vec<(Who, Vec<f64>)> =
                    Who::ALL.iter().map(|w| (*w, Vec::new())).collect();
                for rep in 0..reps {
                    for (who, rates) in runs.iter_mut() {
                        match run_one(&env, *who, work, pool, tasks) {
                            Ok(r) => {
                                eprintln!(
                                    "pgbench {work:?} pool={pool} tasks={tasks} {} rep {}: {}/s",
                                    who.name(work),
                                    rep + 1,
                                    rate(r)
                                );
                                rates.push(r);
                            }
                            Err(e) => eprintln!(
                                "pgbench {work:?} pool={pool} tasks={tasks} {}: FAILED: {e}",
                                who.name(work)
                            ),
                        }
                    }
                }
                let med = |w: Who| {
                    runs.iter()
                        .find(|(x, _)| *x == w)
                        .map_or(f64::NAN, |(_, r)| median(r))
                };
                let ours = med(Who::PoolCore).max(med(Who::PoolCoreAlt));
                let best_peer = Who::ALL
                    .iter()
                    .filter(|w| w.is_peer())
                    .map(|w| med(*w))
                    .fold(f64::NAN, f64::max);
                let raw = med(Who::RawPrepared);
                let mut row = format!("| {pool} | {tasks} |");
                for who in Who::ALL {
                    let _ = write!(row, " {} |", rate(med(who)));
                }
                let third = match work {
                    Work::Select => med(Who::PoolCoreAlt) / best_peer,
                    Work::TpcB => med(Who::PoolCoreAlt) / med(Who::PoolCore),
                };
                let _ = writeln!(
                    out,
                    "{row} {:.2}× | {:.2}× | {third:.2}× |",
                    ours / best_peer,
                    ours / raw
                );
                match work {
                    Work::Select => {
                        select_ratios.push(ours / best_peer);
                        raw_ratios.push(ours / raw);
                    }
                    Work::TpcB => tpcb_ratios.push(ours / best_peer),
                }
            }
        }
    }
    let summary = PgbenchSummary {
        select_vs_best_peer: crate::stats::geomean(&select_ratios),
        tpcb_vs_best_peer: crate::stats::geomean(&tpcb_ratios),
        select_vs_raw: crate::stats::geomean(&raw_ratios),
    };
    let _ = writeln!(
        out,
        "\nGeometric means: select-only ÷ best peer {:.2}×, TPC-B ÷ best peer {:.2}×, select-only ÷ raw prepared {:.2}×.",
        summary.select_vs_best_peer, summary.tpcb_vs_best_peer, summary.select_vs_raw
    );
    (out, Some(summary))
}
