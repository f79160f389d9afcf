//! Benchmarks of pool-core against deadpool-postgres, bb8-postgres and the raw-client
//! limit, with a markdown report and plots.
//!
//! ```text
//! cargo run --release -p bench -- [--quick] [--out DIR] [--only checkout,select1,growth,…]
//! ```
//!
//! The report goes to `target/bench/` unless `--out` is given (`--out docs/bench`
//! replaces the committed full run).
//!
//! Runs against `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`;
//! a private throwaway cluster when nothing answers there), in a fresh database that is
//! dropped at the end. The last line printed is the summary:
//! `summary: checkout_vs_best_peer=<x> select1_vs_limit=<y> fairness=<z>`.
//!
//! `--plot-faults DIR` draws the faults suite's sampler timelines found in DIR (see
//! `bench/fault-plots.sh`) and needs no server.
//!
//! `--callgrind IMPL --iters N [--op checkout|yield|select1|held-select1] [--pool P] [--tasks T]` runs
//! N operations on one thread and nothing else, for instruction counts under
//! `valgrind --tool=callgrind` (see `bench/callgrind.sh`).

// A benchmark binary: a failed setup step ends the run with its message.
#![allow(clippy::unwrap_used)]

mod bulk;
mod growth;
mod impls;
mod macros;
mod pgbench;
mod pipeline;
mod plot;
mod report;
mod run;
mod stats;
mod timeline;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use impls::{Impl, Op, Target};
use run::{CellResult, CellSpec};

/// Which part of the benchmark a group of cells belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// Checkout + return, no query.
    Checkout,
    /// Checkout, `yield_now().await`, return.
    CheckoutYield,
    /// Checkout, `SELECT 1`, return.
    Select1,
    /// pool-core's own bookkeeping on and off.
    Bookkeeping,
    /// A one-shot `SELECT 1`: pool-core's shared lane against checkouts.
    OneShot,
    /// One-shots of which 1 % are `pg_sleep(0.05)`: the fast ones' latency.
    Mixed,
}

impl Scenario {
    pub(crate) fn key(self) -> &'static str {
        match self {
            Scenario::Checkout => "checkout",
            Scenario::CheckoutYield => "yield",
            Scenario::Select1 => "select1",
            Scenario::Bookkeeping => "bookkeeping",
            Scenario::OneShot => "oneshot",
            Scenario::Mixed => "mixed",
        }
    }
}

/// The settings of a run.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) quick: bool,
    pub(crate) reps: usize,
    pub(crate) checkout_warm: Duration,
    pub(crate) checkout_window: Duration,
    pub(crate) select_warm: Duration,
    pub(crate) select_window: Duration,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                reps: 3,
                checkout_warm: Duration::from_millis(30),
                checkout_window: Duration::from_millis(100),
                select_warm: Duration::from_millis(100),
                select_window: Duration::from_millis(300),
            }
        } else {
            Plan {
                quick,
                reps: 5,
                checkout_warm: Duration::from_millis(100),
                checkout_window: Duration::from_millis(500),
                select_warm: Duration::from_millis(300),
                select_window: Duration::from_millis(1500),
            }
        }
    }

    pub(crate) fn spec(&self, op: Op, threads: usize, pool: usize, tasks: usize) -> CellSpec {
        let (warm, window, timed, latencies) = match op {
            Op::Checkout => (self.checkout_warm, self.checkout_window, false, false),
            Op::CheckoutYield => (self.checkout_warm, self.checkout_window, true, false),
            Op::Select1 | Op::OneShot | Op::Mixed | Op::SlowOneShot => {
                (self.select_warm, self.select_window, true, true)
            }
        };
        CellSpec {
            op,
            threads,
            pool,
            tasks,
            timed,
            latencies,
            warm,
            window,
        }
    }
}

/// Cells that share a configuration and differ only in the implementation; run
/// interleaved, A B C A B C ….
pub(crate) struct Group {
    pub(crate) scenario: Scenario,
    /// For the bookkeeping and macro scenarios: what the group measures.
    pub(crate) label: String,
    pub(crate) spec: CellSpec,
    pub(crate) impls: Vec<Impl>,
}

impl Group {
    /// `checkout 2t pool=4 tasks=64`: what `--filter` matches.
    fn describe(&self) -> String {
        format!(
            "{} {}t pool={} tasks={}",
            self.scenario.key(),
            self.spec.threads,
            self.spec.pool,
            self.spec.tasks
        )
    }
}

/// A group's results: per implementation, one result per repetition.
pub(crate) struct GroupResult {
    pub(crate) scenario: Scenario,
    pub(crate) label: String,
    pub(crate) spec: CellSpec,
    pub(crate) runs: Vec<(Impl, Vec<CellResult>)>,
}

pub(crate) const TASKS: [usize; 5] = [1, 16, 64, 256, 1024];
pub(crate) const POOLS: [usize; 2] = [4, 16];
pub(crate) const SELECT_TASKS: [usize; 3] = [16, 64, 256];
pub(crate) const ONESHOT_TASKS: [usize; 4] = [16, 64, 256, 1024];

/// The implementations of the mixed cells.
pub(crate) const MIXED_IMPLS: [Impl; 4] = [
    Impl::POOL_CORE,
    Impl::PoolCore(impls::PcVariant::LaneOff),
    Impl::DeadpoolPrepared,
    Impl::LimitPipelined,
];

/// The implementations of the one-shot cells, in report column order.
pub(crate) const ONESHOT_IMPLS: [Impl; 7] = [
    Impl::POOL_CORE,
    Impl::PoolCore(impls::PcVariant::LaneOff),
    Impl::Deadpool,
    Impl::DeadpoolPrepared,
    Impl::Bb8Fast,
    Impl::LimitPrepared,
    Impl::LimitPipelined,
];

/// The implementations of the checkout and `SELECT 1` cells, in report column order.
pub(crate) const CHECKOUT_IMPLS: [Impl; 5] = [
    Impl::POOL_CORE,
    Impl::Deadpool,
    Impl::Bb8Fast,
    Impl::Bb8Default,
    Impl::Limit,
];

fn groups(plan: &Plan, only: &[String]) -> Vec<Group> {
    let wanted = |s: Scenario| only.is_empty() || only.iter().any(|o| o == s.key());
    let mut out = Vec::new();
    for (scenario, op) in [
        (Scenario::Checkout, Op::Checkout),
        (Scenario::CheckoutYield, Op::CheckoutYield),
    ] {
        if !wanted(scenario) {
            continue;
        }
        for threads in [1, 2] {
            for pool in POOLS {
                for tasks in TASKS {
                    out.push(Group {
                        scenario,
                        label: String::new(),
                        spec: plan.spec(op, threads, pool, tasks),
                        impls: CHECKOUT_IMPLS.to_vec(),
                    });
                }
            }
        }
    }
    if wanted(Scenario::Select1) {
        for pool in POOLS {
            for tasks in SELECT_TASKS {
                let mut impls = CHECKOUT_IMPLS.to_vec();
                // Like for like: deadpool with its statement cache, as pool-core's.
                impls.insert(2, Impl::DeadpoolPrepared);
                impls.push(Impl::LimitPrepared);
                out.push(Group {
                    scenario: Scenario::Select1,
                    label: String::new(),
                    spec: plan.spec(Op::Select1, 2, pool, tasks),
                    impls,
                });
            }
        }
    }
    if wanted(Scenario::OneShot) {
        for pool in POOLS {
            for tasks in ONESHOT_TASKS {
                out.push(Group {
                    scenario: Scenario::OneShot,
                    label: String::new(),
                    spec: plan.spec(Op::OneShot, 2, pool, tasks),
                    impls: ONESHOT_IMPLS.to_vec(),
                });
            }
        }
    }
    if wanted(Scenario::Mixed) {
        for tasks in [64, 256] {
            out.push(Group {
                scenario: Scenario::Mixed,
                label: String::new(),
                spec: plan.spec(Op::Mixed, 2, 4, tasks),
                impls: MIXED_IMPLS.to_vec(),
            });
        }
    }
    if wanted(Scenario::Bookkeeping) {
        let variants = Impl::BOOKKEEPING.to_vec();
        for (label, op, threads, pool, tasks) in [
            (
                "checkout, 1 thread, pool 16, 1 task",
                Op::Checkout,
                1,
                16,
                1,
            ),
            (
                "checkout, 2 threads, pool 16, 16 tasks",
                Op::Checkout,
                2,
                16,
                16,
            ),
            (
                "checkout + yield, 2 threads, pool 4, 256 tasks",
                Op::CheckoutYield,
                2,
                4,
                256,
            ),
            (
                "SELECT 1, 2 threads, pool 16, 64 tasks",
                Op::Select1,
                2,
                16,
                64,
            ),
        ] {
            out.push(Group {
                scenario: Scenario::Bookkeeping,
                label: label.to_owned(),
                spec: plan.spec(op, threads, pool, tasks),
                impls: variants.clone(),
            });
        }
    }
    out
}

struct Args {
    quick: bool,
    out: PathBuf,
    only: Vec<String>,
    filter: Option<String>,
    callgrind: Option<Profile>,
    plot_faults: Option<PathBuf>,
}

fn usage() -> ! {
    let keys: Vec<&str> = Impl::ALL
        .map(Impl::key)
        .into_iter()
        .chain(macros::Variant::ALL.map(macros::Variant::key))
        .collect();
    eprintln!(
        "usage: bench [--quick] [--out DIR] [--only checkout,yield,select1,oneshot,mixed,bookkeeping,macros,growth,bulk,pipeline,pgbench] [--filter TEXT]\n       \
         bench --plot-faults DIR\n       \
         bench --callgrind IMPL [--iters N] [--op checkout|yield|select1|held-select1] [--pool P] [--tasks T]\n       \
         (IMPL: {})",
        keys.join(", ")
    );
    std::process::exit(2)
}

/// The number after an option, or the usage.
fn number<T: std::str::FromStr>(it: &mut impl Iterator<Item = String>) -> T {
    it.next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| usage())
}

fn parse_args() -> Args {
    let mut args = Args {
        quick: false,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("bench"),
        only: Vec::new(),
        filter: None,
        callgrind: None,
        plot_faults: None,
    };
    let mut callgrind_impl = None;
    let mut iters = 100_000;
    let mut op = Op::Checkout;
    let mut held = false;
    let mut pool = 4;
    let mut tasks = 1;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--filter" => args.filter = Some(it.next().unwrap_or_else(|| usage())),
            "--plot-faults" => {
                args.plot_faults = Some(PathBuf::from(it.next().unwrap_or_else(|| usage())))
            }
            "--out" => args.out = PathBuf::from(it.next().unwrap_or_else(|| usage())),
            "--only" => {
                args.only = it
                    .next()
                    .unwrap_or_else(|| usage())
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .collect();
            }
            "--callgrind" => {
                let name = it.next().unwrap_or_else(|| usage());
                callgrind_impl = Some(match Impl::from_key(&name) {
                    Some(imp) => Ok(imp),
                    None => Err(macros::Variant::from_key(&name).unwrap_or_else(|| usage())),
                });
            }
            "--iters" => iters = number(&mut it),
            "--op" => {
                op = match it.next().as_deref() {
                    Some("checkout") => Op::Checkout,
                    Some("yield") => Op::CheckoutYield,
                    Some("select1") => Op::Select1,
                    Some("oneshot") => Op::OneShot,
                    Some("mixed") => Op::Mixed,
                    Some("held-select1") => {
                        held = true;
                        Op::Select1
                    }
                    _ => usage(),
                };
            }
            "--pool" => pool = number(&mut it),
            "--tasks" => tasks = number(&mut it),
            _ => usage(),
        }
    }
    args.callgrind = callgrind_impl.map(|imp| Profile {
        imp,
        iters,
        op,
        held,
        pool,
        tasks,
    });
    args
}

fn main() {
    // With the `metrics` feature every pool records into a real recorder, as in a
    // service that exports its metrics; `BENCH_RECORDER=none` leaves the facade without
    // one, which measures the pool's own share of the cost.
    #[cfg(feature = "metrics")]
    if std::env::var("BENCH_RECORDER").as_deref() != Ok("none") {
        metrics::set_global_recorder(
            metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
        )
        .unwrap_or_else(|e| panic!("metrics recorder: {e}"));
    }
    let args = parse_args();
    if let Some(dir) = &args.plot_faults {
        match timeline::plot_dir(dir) {
            Ok(files) => println!("wrote {} into {}", files.join(", "), dir.display()),
            Err(e) => {
                eprintln!("bench --plot-faults: {e}");
                std::process::exit(1)
            }
        }
        return;
    }
    let started = Instant::now();
    // The server (DATABASE_URL or a private cluster) and a fresh database for this run,
    // dropped when `db` is.
    let setup = run::runtime(1).unwrap();
    let (db, server_version) = setup.block_on(async {
        let db = tests::harness::try_test_db()
            .await
            .unwrap_or_else(|e| panic!("no PostgreSQL server for the benchmark: {e}"));
        let client = db.connect().await;
        let version: String = client
            .query_one("SHOW server_version", &[])
            .await
            .unwrap()
            .get(0);
        (db, version)
    });
    drop(setup);
    let url = db.url().to_owned();
    let config = db.config();

    if let Some(p) = args.callgrind {
        callgrind(p, &url, &config);
        drop(db);
        return;
    }

    let plan = Plan::new(args.quick);
    let load_before = report::loadavg();
    let mut groups = groups(&plan, &args.only);
    if let Some(f) = &args.filter {
        groups.retain(|g| g.describe().contains(f.as_str()));
    }
    let cells: usize = groups.iter().map(|g| g.impls.len() * plan.reps).sum();
    eprintln!(
        "bench: {} mode, {} groups, {} cells, {} repetitions each; database {}",
        if plan.quick { "quick" } else { "full" },
        groups.len(),
        cells,
        plan.reps,
        db.name()
    );
    let mut results = Vec::new();
    let mut done = 0;
    for g in groups {
        let mut runs: Vec<(Impl, Vec<CellResult>)> =
            g.impls.iter().map(|&i| (i, Vec::new())).collect();
        for rep in 0..plan.reps {
            for (imp, out) in runs.iter_mut() {
                done += 1;
                match run::run_cell(*imp, &g.spec, &url, &config) {
                    Ok(r) => {
                        eprintln!(
                            "[{done}/{cells}] {} {} rep {}: {}/s",
                            g.describe(),
                            imp.name(),
                            rep + 1,
                            report::rate(r.throughput)
                        );
                        out.push(r);
                    }
                    Err(e) => eprintln!(
                        "[{done}/{cells}] {} {} rep {}: FAILED: {e}",
                        g.describe(),
                        imp.name(),
                        rep + 1
                    ),
                }
            }
        }
        results.push(GroupResult {
            scenario: g.scenario,
            label: g.label,
            spec: g.spec,
            runs,
        });
    }
    let wanted_macros =
        (args.only.is_empty() && args.filter.is_none()) || args.only.iter().any(|o| o == "macros");
    let macro_section = if wanted_macros {
        macros::run(&plan, &url)
    } else {
        macros::MacroSection::skipped("not selected with --only")
    };
    let wanted_growth =
        (args.only.is_empty() && args.filter.is_none()) || args.only.iter().any(|o| o == "growth");
    let growth_section = if wanted_growth {
        growth::run(&plan, &config)
    } else {
        String::new()
    };
    let wanted_bulk =
        (args.only.is_empty() && args.filter.is_none()) || args.only.iter().any(|o| o == "bulk");
    let bulk_section = if wanted_bulk {
        bulk::run(&plan, &config)
    } else {
        String::new()
    };
    let wanted_pipeline = (args.only.is_empty() && args.filter.is_none())
        || args.only.iter().any(|o| o == "pipeline");
    let pipeline_section = if wanted_pipeline {
        pipeline::run(&plan, &config)
    } else {
        String::new()
    };
    // pgbench's workloads: in a full run, or when asked for (not in --quick: its
    // tables take a few seconds to make and its 84 cells minutes to run).
    let wanted_pgbench = (!plan.quick && args.only.is_empty() && args.filter.is_none())
        || args.only.iter().any(|o| o == "pgbench");
    let (pgbench_section, pgbench_summary) = if wanted_pgbench {
        pgbench::run(&plan, &url, &config)
    } else {
        (String::new(), None)
    };
    let load_after = report::loadavg();
    let elapsed = started.elapsed();
    let machine =
        report::Machine::probe(&server_version, &load_before, &load_after, &plan, elapsed);
    let summary = report::Summary::compute(&results);
    let mut markdown = report::markdown(&results, &macro_section, &summary, &machine, &plan);
    markdown.push_str(&growth_section);
    markdown.push_str(&bulk_section);
    markdown.push_str(&pipeline_section);
    markdown.push_str(&pgbench_section);
    std::fs::create_dir_all(&args.out).unwrap();
    std::fs::write(args.out.join("results.md"), &markdown).unwrap();
    std::fs::write(
        args.out.join("raw.csv"),
        report::csv(&results, &macro_section),
    )
    .unwrap();
    let plots = plot::all(&results, &args.out);
    drop(db);
    println!("{markdown}");
    match plots {
        Ok(files) => println!("plots: {}", files.join(", ")),
        Err(e) => println!("plots: not drawn: {e}"),
    }
    println!(
        "report: {} (ran {:.0} s)",
        args.out.join("results.md").display(),
        elapsed.as_secs_f64()
    );
    let mut line = summary.line();
    if let Some(p) = pgbench_summary {
        line.push_str(&format!(
            " pgbench_select_vs_best_peer={:.3} pgbench_tpcb_vs_best_peer={:.3} pgbench_select_vs_raw={:.3}",
            p.select_vs_best_peer, p.tpcb_vs_best_peer, p.select_vs_raw
        ));
    }
    println!("{line}");
}

/// What `--callgrind` runs.
#[derive(Clone, Copy, Debug)]
struct Profile {
    imp: Result<Impl, macros::Variant>,
    iters: u64,
    op: Op,
    /// `--op held-select1`: one checkout, then `SELECT 1` `iters` times on it (pool-core
    /// only; compare with `limit-prepared --op select1`, which has no checkout either).
    held: bool,
    pool: usize,
    tasks: usize,
}

/// Runs `iters` operations of `imp`, spread over `tasks` tasks on a current-thread
/// runtime, and nothing else, for `valgrind --tool=callgrind`: the difference between
/// two iteration counts is the cost of the operations alone.
fn callgrind(p: Profile, url: &str, config: &tokio_postgres::Config) {
    let rt = run::runtime(1).unwrap();
    let config = config.clone();
    rt.block_on(async move {
        match p.imp {
            Ok(Impl::PoolCore(v)) if p.held => {
                held_loop(impls::PoolCore::build(url, p.pool, v).unwrap(), p).await;
            }
            _ if p.held => usage(),
            Err(variant) => {
                op_loop(macros::MacroTarget::build(url, p.pool, variant).unwrap(), p).await;
            }
            Ok(Impl::PoolCore(v)) => {
                op_loop(impls::PoolCore::build(url, p.pool, v).unwrap(), p).await;
            }
            Ok(imp @ (Impl::Deadpool | Impl::DeadpoolPrepared)) => {
                let prepared = imp == Impl::DeadpoolPrepared;
                op_loop(impls::Deadpool::build(config, p.pool, prepared).unwrap(), p).await;
            }
            Ok(Impl::Bb8Fast) => {
                op_loop(impls::Bb8::build(config, p.pool, false).await.unwrap(), p).await;
            }
            Ok(Impl::Bb8Default) => {
                op_loop(impls::Bb8::build(config, p.pool, true).await.unwrap(), p).await;
            }
            Ok(imp @ (Impl::Limit | Impl::LimitPrepared)) => {
                let prepared = imp == Impl::LimitPrepared;
                op_loop(
                    impls::Limit::build(config, p.pool, prepared).await.unwrap(),
                    p,
                )
                .await;
            }
            Ok(Impl::LimitPipelined) => {
                let limit = impls::Limit::build(config, p.pool, true).await.unwrap();
                op_loop(limit.shared(), p).await;
            }
        }
    });
    eprintln!(
        "callgrind: {} × {:?} of {} (pool {}, {} tasks)",
        p.iters,
        p.op,
        p.imp.map_or_else(|v| v.name(), |i| i.name()),
        p.pool,
        p.tasks
    );
}

/// `iters` × `SELECT 1` on one held connection: the statement path alone.
async fn held_loop(target: impls::PoolCore, p: Profile) {
    let mut db = target.task(0);
    let mut conn = db.acquire().await.unwrap();
    for _ in 0..p.iters {
        let rows = conn.query("SELECT 1", &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, i32>(0), 1);
    }
}

async fn op_loop<T: Target>(target: T, p: Profile) {
    let target = std::sync::Arc::new(target);
    run::fill(&target).await.unwrap();
    let tasks = target.tasks(p.tasks) as u64;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..tasks {
        let mut task = target.task(i as usize);
        let n = p.iters / tasks + u64::from(i < p.iters % tasks);
        let op = p.op;
        set.spawn(async move {
            for _ in 0..n {
                T::op(&mut task, op).await;
            }
        });
    }
    while let Some(res) = set.join_next().await {
        res.unwrap();
    }
}
