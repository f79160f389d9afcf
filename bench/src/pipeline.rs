//! Pipelined statements: N inserts in one transaction, sent one round trip at a time
//! (`tx.execute` N times) against one pipeline (`tx.pipeline()`), and tokio-postgres
//! pipelining the same N inserts by hand (`join_all` of `client.execute`, the statement
//! prepared once), on one
//! connection each, interleaved.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use crate::Plan;
use crate::stats::median;

const INSERT: &str = "INSERT INTO bench_pipeline (a) VALUES ($1)";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// pool-core, `tx.execute` per row: N round trips.
    OneByOne,
    /// pool-core, one `tx.pipeline()` of N inserts.
    Pipeline,
    /// tokio-postgres, the N inserts' futures joined: the driver's own pipelining.
    Raw,
}

impl Way {
    const ALL: [Way; 3] = [Way::OneByOne, Way::Pipeline, Way::Raw];
    fn name(self) -> &'static str {
        match self {
            Way::OneByOne => "pool-core, `tx.execute` × N",
            Way::Pipeline => "pool-core, `tx.pipeline()`",
            Way::Raw => "tokio-postgres, joined futures",
        }
    }
}

/// Transactions of `n` inserts run in `window`; returns transactions per second.
async fn run_way(
    way: Way,
    n: usize,
    window: Duration,
    pool: &pool_core::Pool,
    client: &mut tokio_postgres::Client,
) -> f64 {
    let values: Vec<i64> = (0..n as i64).collect();
    let params: Vec<[&(dyn ToSql + Sync); 1]> =
        values.iter().map(|v| [v as &(dyn ToSql + Sync)]).collect();
    let mut db = pool.db();
    let mut conn = db.acquire().await.expect("pool-core: checkout");
    // Prepared once, as pool-core's statement cache does.
    let st = client.prepare(INSERT).await.expect("prepare");
    let started = Instant::now();
    let mut done = 0_u64;
    while started.elapsed() < window {
        match way {
            Way::OneByOne => {
                let mut tx = conn.begin().await.expect("begin");
                for p in &params {
                    tx.execute(INSERT, p).await.expect("insert");
                }
                tx.commit().await.expect("commit");
            }
            Way::Pipeline => {
                let mut tx = conn.begin().await.expect("begin");
                let mut pipeline = tx.pipeline();
                for p in &params {
                    pipeline = pipeline.execute(INSERT, p);
                }
                let out = pipeline.run().await.expect("pipeline");
                assert_eq!(out.len(), n);
                tx.commit().await.expect("commit");
            }
            Way::Raw => {
                let tx = client.transaction().await.expect("begin");
                let sends = params.iter().map(|p| tx.execute(&st, p));
                for r in futures::future::join_all(sends).await {
                    r.expect("insert");
                }
                tx.commit().await.expect("commit");
            }
        }
        done += 1;
    }
    done as f64 / started.elapsed().as_secs_f64()
}

/// Runs every way at two batch sizes, interleaved, and returns the report's section.
pub(crate) fn run(plan: &Plan, config: &tokio_postgres::Config) -> String {
    let rt = crate::run::runtime(2).unwrap();
    let reps = plan.reps;
    let window = plan.select_window;
    let (pool, mut client) = rt.block_on(async {
        let pool = pool_core::Pool::builder(config.clone())
            .max_size(1)
            .connect()
            .await
            .unwrap();
        let (client, connection) = config.connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(
                "DROP TABLE IF EXISTS bench_pipeline; CREATE UNLOGGED TABLE bench_pipeline (a int8)",
            )
            .await
            .unwrap();
        (pool, client)
    });
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## N inserts in a transaction: one pipeline against N round trips\n\n\
         One connection each; each transaction is `BEGIN`, N `INSERT`s into an unlogged table, `COMMIT`. \
         Transactions per second, medians of {reps} interleaved runs of {} ms.\n\n\
         | N | {} | {} | {} | pipeline ÷ one by one | pipeline ÷ tokio-postgres |\n\
         |---:|---:|---:|---:|---:|---:|",
        window.as_millis(),
        Way::OneByOne.name(),
        Way::Pipeline.name(),
        Way::Raw.name(),
    );
    for n in [10_usize, 100] {
        let mut runs: Vec<(Way, Vec<f64>)> = Way::ALL.iter().map(|w| (*w, Vec::new())).collect();
        for _ in 0..reps {
            for (way, rates) in runs.iter_mut() {
                let rate = rt.block_on(run_way(*way, n, window, &pool, &mut client));
                eprintln!("pipeline {n} {}: {rate:.0} tx/s", way.name());
                rates.push(rate);
            }
        }
        let med = |w: Way| {
            runs.iter()
                .find(|(x, _)| *x == w)
                .map_or(f64::NAN, |(_, r)| median(r))
        };
        let (one, pipe, raw) = (med(Way::OneByOne), med(Way::Pipeline), med(Way::Raw));
        let _ = writeln!(
            out,
            "| {n} | {one:.0} | {pipe:.0} | {raw:.0} | {:.2}× | {:.2}× |",
            pipe / one,
            pipe / raw
        );
    }
    rt.block_on(async {
        client
            .batch_execute("DROP TABLE IF EXISTS bench_pipeline")
            .await
            .unwrap();
        pool.close().await;
    });
    out
}
