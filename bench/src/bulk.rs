//! Bulk rows: 1,000,000 rows streamed (`query_stream` against tokio-postgres'
//! `query_raw`), copied out (`copy_out`) and copied in (`copy_in`), through pool-core
//! and through tokio-postgres used directly, on one connection each, interleaved.
//!
//! Memory: before each run the process's peak RSS is reset (`/proc/self/clear_refs`,
//! "5"); the figure is the peak during the run above the RSS at its start. Run at
//! 100,000 and at 1,000,000 rows, it shows whether memory grows with the row count.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use pool_core::bytes::Bytes;
use tokio_postgres::NoTls;

use crate::Plan;
use crate::stats::median;

const QUERY: &str = "SELECT g, 'row number ' || g FROM generate_series(1, $1::int4) g";
const COPY_OUT: &str =
    "COPY (SELECT g, 'row number ' || g FROM generate_series(1, %N%) g) TO STDOUT";
const COPY_IN: &str = "COPY bench_bulk (a, b) FROM STDIN";
/// Rows per chunk sent to `copy_in`.
const CHUNK_ROWS: usize = 1000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// The control: every row in memory at once (`query` / tokio-postgres `query`), to
    /// show that the memory figure sees what a run keeps.
    Collect,
    Stream,
    CopyOut,
    CopyIn,
}

impl Op {
    const ALL: [Op; 4] = [Op::Collect, Op::Stream, Op::CopyOut, Op::CopyIn];
    fn label(self) -> &'static str {
        match self {
            Op::Collect => "control: all rows in a `Vec` (`query`)",
            Op::Stream => "row stream (`query_stream` / `query_raw`)",
            Op::CopyOut => "COPY TO STDOUT (`copy_out`)",
            Op::CopyIn => "COPY FROM STDIN (`copy_in`)",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    PoolCore,
    Raw,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::PoolCore => "pool-core",
            Side::Raw => "tokio-postgres",
        }
    }
}

/// One run: rows per second and peak RSS growth in bytes.
struct Outcome {
    rows_per_sec: f64,
    peak_growth: f64,
}

/// Kilobytes from a `/proc/self/status` line (`VmRSS`, `VmHWM`).
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The rows of a COPY chunk starting at row `from`.
fn chunk(from: usize, rows: usize) -> Bytes {
    let mut s = String::with_capacity(rows * 24);
    for i in from..from + rows {
        let _ = writeln!(s, "{i}\trow number {i}");
    }
    Bytes::from(s)
}

/// Reads a row stream to its end, touching both columns of each row; the rows seen.
async fn read_rows<E: std::fmt::Debug>(
    rows: impl futures::Stream<Item = Result<tokio_postgres::Row, E>>,
) -> usize {
    let mut rows = std::pin::pin!(rows);
    let mut seen = 0;
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        let g: i32 = row.get(0);
        let s: &str = row.get(1);
        seen += usize::from(g > 0 && !s.is_empty());
    }
    seen
}

/// Reads COPY data to its end; the lines (rows) seen.
async fn read_lines<E: std::fmt::Debug>(
    data: impl futures::Stream<Item = Result<Bytes, E>>,
) -> usize {
    let mut data = std::pin::pin!(data);
    let mut lines = 0;
    while let Some(chunk) = data.next().await {
        lines += chunk.unwrap().iter().filter(|b| **b == b'\n').count();
    }
    lines
}

/// Sends `n` rows into a COPY sink, in chunks of [`CHUNK_ROWS`].
async fn send_rows<E: std::fmt::Debug>(
    sink: &mut (impl futures::Sink<Bytes, Error = E> + Unpin),
    n: usize,
) {
    let mut from = 0;
    while from < n {
        let rows = CHUNK_ROWS.min(n - from);
        sink.send(chunk(from, rows)).await.unwrap();
        from += rows;
    }
}

/// The rows of a collected result, counted (touching the first column).
fn count_collected(rows: &[tokio_postgres::Row]) -> usize {
    rows.iter().filter(|r| r.get::<_, i32>(0) > 0).count()
}

async fn run_pool_core(op: Op, n: usize, pool: &pool_core::Pool) -> usize {
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let n32 = i32::try_from(n).unwrap();
    match op {
        Op::Collect => count_collected(&conn.query(QUERY, &[&n32]).await.unwrap()),
        Op::Stream => read_rows(conn.query_stream(QUERY, &[&n32]).await.unwrap()).await,
        Op::CopyOut => {
            let sql = COPY_OUT.replace("%N%", &n.to_string());
            read_lines(conn.copy_out(sql.as_str()).await.unwrap()).await
        }
        Op::CopyIn => {
            conn.batch_execute("TRUNCATE bench_bulk").await.unwrap();
            let mut sink = conn.copy_in(COPY_IN).await.unwrap();
            send_rows(&mut sink, n).await;
            usize::try_from(sink.finish().await.unwrap()).unwrap()
        }
    }
}

async fn run_raw(op: Op, n: usize, client: &tokio_postgres::Client) -> usize {
    let n32 = i32::try_from(n).unwrap();
    match op {
        Op::Collect => count_collected(&client.query(QUERY, &[&n32]).await.unwrap()),
        Op::Stream => {
            let st = client.prepare(QUERY).await.unwrap();
            read_rows(client.query_raw(&st, [&n32]).await.unwrap()).await
        }
        Op::CopyOut => {
            let sql = COPY_OUT.replace("%N%", &n.to_string());
            read_lines(client.copy_out(sql.as_str()).await.unwrap()).await
        }
        Op::CopyIn => {
            client.batch_execute("TRUNCATE bench_bulk").await.unwrap();
            let sink = client.copy_in::<_, Bytes>(COPY_IN).await.unwrap();
            let mut sink = std::pin::pin!(sink);
            send_rows(&mut sink, n).await;
            usize::try_from(sink.finish().await.unwrap()).unwrap()
        }
    }
}

/// Runs every operation at two sizes on both sides, interleaved, and returns the
/// report's section.
pub(crate) fn run(plan: &Plan, config: &tokio_postgres::Config) -> String {
    let rt = crate::run::runtime(2).unwrap();
    // Each run is short (a second or less): more of them than elsewhere.
    let reps = if plan.quick { 3 } else { 7 };
    let sizes: [usize; 2] = if plan.quick {
        [10_000, 100_000]
    } else {
        [100_000, 1_000_000]
    };
    let measured_memory = reset_peak() && status_kb("VmHWM:").is_some();
    let (pool, client) = rt.block_on(async {
        let pool = pool_core::Pool::builder(config.clone())
            .max_size(1)
            .statement_timeout(Duration::from_secs(600))
            .connect()
            .await
            .unwrap();
        let (client, connection) = config.connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(
                "DROP TABLE IF EXISTS bench_bulk; CREATE UNLOGGED TABLE bench_bulk (a int8, b text)",
            )
            .await
            .unwrap();
        (pool, client)
    });
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Bulk rows: streams and COPY\n\n\
         One connection each; rows are produced by `generate_series` (stream, COPY out) or \
         sent in chunks of {CHUNK_ROWS} text rows into an unlogged table (COPY in). Medians \
         of {reps} interleaved runs. Peak RSS: the process's peak during the run above its \
         RSS at the start (reset before each run){}.\n\n\
         | operation | rows | pool-core rows/s | tokio-postgres rows/s | ratio | pool-core peak RSS | tokio-postgres peak RSS |\n\
         |---|---:|---:|---:|---:|---:|---:|",
        if measured_memory {
            ""
        } else {
            " — not available on this system"
        }
    );
    for op in Op::ALL {
        for n in sizes {
            let mut runs: Vec<(Side, Vec<Outcome>)> =
                vec![(Side::PoolCore, Vec::new()), (Side::Raw, Vec::new())];
            for _ in 0..reps {
                for (side, outcomes) in runs.iter_mut() {
                    reset_peak();
                    let start_kb = status_kb("VmRSS:").unwrap_or(0);
                    let started = Instant::now();
                    let rows = match side {
                        Side::PoolCore => rt.block_on(run_pool_core(op, n, &pool)),
                        Side::Raw => rt.block_on(run_raw(op, n, &client)),
                    };
                    let took = started.elapsed().as_secs_f64();
                    assert_eq!(rows, n, "{} {} moved {rows} rows", side.name(), op.label());
                    let peak_kb = status_kb("VmHWM:").unwrap_or(0);
                    eprintln!(
                        "bulk {} {n} {}: {:.0} rows/s",
                        op.label(),
                        side.name(),
                        n as f64 / took
                    );
                    outcomes.push(Outcome {
                        rows_per_sec: n as f64 / took,
                        peak_growth: peak_kb.saturating_sub(start_kb) as f64 * 1024.0,
                    });
                }
            }
            let med = |side: Side, f: fn(&Outcome) -> f64| {
                let values: Vec<f64> = runs
                    .iter()
                    .filter(|(s, _)| *s == side)
                    .flat_map(|(_, o)| o.iter().map(f))
                    .collect();
                median(&values)
            };
            let (core, raw) = (
                med(Side::PoolCore, |o| o.rows_per_sec),
                med(Side::Raw, |o| o.rows_per_sec),
            );
            let mem = |side| {
                if measured_memory {
                    format!(
                        "{:.1} MiB",
                        med(side, |o| o.peak_growth) / (1024.0 * 1024.0)
                    )
                } else {
                    "—".to_owned()
                }
            };
            let _ = writeln!(
                out,
                "| {} | {n} | {core:.0} | {raw:.0} | {:.2}× | {} | {} |",
                op.label(),
                core / raw,
                mem(Side::PoolCore),
                mem(Side::Raw),
            );
        }
    }
    rt.block_on(async {
        client
            .batch_execute("DROP TABLE IF EXISTS bench_bulk")
            .await
            .unwrap();
        pool.close().await;
    });
    out
}
