//! `#[with_conn]` / `#[transactional]` against the same code written by hand.
//!
//! Four functions, each called with `&mut db` once per operation: a `#[with_conn]`
//! function running `SELECT 1` and its hand-written twin (`db.acquire()`, the query,
//! return); a `#[transactional]` function running `SELECT 1` in a transaction and its
//! hand-written twin (`acquire`, `BEGIN`, the query, `COMMIT`, rollback on error). The
//! pairs run interleaved in the same cells, on fresh pools with the default settings.

use std::sync::Arc;

use pool_core::{Conn, Db, Error, Tx, transactional, with_conn};
use tokio::sync::Barrier;

use crate::Plan;
use crate::impls::{Op, PcVariant, PoolCore, Target};
use crate::run::{CellResult, CellSpec, run_custom};

#[with_conn]
async fn select_with_conn(conn: &mut Conn) -> Result<i32, Error> {
    Ok(conn.query_one("SELECT 1", &[]).await?.get(0))
}

async fn select_by_hand(db: &mut Db) -> Result<i32, Error> {
    let mut conn = db.acquire().await?;
    Ok(conn.query_one("SELECT 1", &[]).await?.get(0))
}

#[transactional]
async fn select_transactional(tx: &mut Tx) -> Result<i32, Error> {
    Ok(tx.query_one("SELECT 1", &[]).await?.get(0))
}

async fn select_in_tx_by_hand(db: &mut Db) -> Result<i32, Error> {
    let mut conn = db.acquire().await?;
    let mut tx = conn.begin().await?;
    let result: Result<i32, Error> =
        async { Ok(tx.query_one("SELECT 1", &[]).await?.get(0)) }.await;
    match result {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            tx.rollback().await?;
            Err(e)
        }
    }
}

/// Which function a cell calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    WithConn,
    WithConnByHand,
    Transactional,
    TransactionalByHand,
}

impl Variant {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Variant::WithConn => "#[with_conn]",
            Variant::WithConnByHand => "by hand (acquire)",
            Variant::Transactional => "#[transactional]",
            Variant::TransactionalByHand => "by hand (acquire, begin, commit)",
        }
    }

    pub(crate) fn key(self) -> &'static str {
        match self {
            Variant::WithConn => "with-conn",
            Variant::WithConnByHand => "with-conn-by-hand",
            Variant::Transactional => "transactional",
            Variant::TransactionalByHand => "transactional-by-hand",
        }
    }

    /// Every variant.
    pub(crate) const ALL: [Variant; 4] = [
        Variant::WithConn,
        Variant::WithConnByHand,
        Variant::Transactional,
        Variant::TransactionalByHand,
    ];

    pub(crate) fn from_key(key: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.key() == key)
    }
}

/// A pool-core pool (as benchmarked elsewhere) whose tasks call one of the four functions.
pub(crate) struct MacroTarget {
    pool: PoolCore,
    variant: Variant,
}

impl MacroTarget {
    pub(crate) fn build(url: &str, size: usize, variant: Variant) -> Result<MacroTarget, String> {
        let pool = PoolCore::build(url, size, PcVariant::Default)?;
        Ok(MacroTarget { pool, variant })
    }
}

impl Target for MacroTarget {
    type Task = (Db, Variant);

    fn fill_count(&self) -> usize {
        self.pool.fill_count()
    }

    fn task(&self, i: usize) -> (Db, Variant) {
        (self.pool.task(i), self.variant)
    }

    async fn fill(task: &mut (Db, Variant), barrier: Arc<Barrier>) {
        PoolCore::fill(&mut task.0, barrier).await;
    }

    async fn op(task: &mut (Db, Variant), _op: Op) {
        let (db, variant) = task;
        let v = match variant {
            Variant::WithConn => select_with_conn(db).await,
            Variant::WithConnByHand => select_by_hand(db).await,
            Variant::Transactional => select_transactional(db).await,
            Variant::TransactionalByHand => select_in_tx_by_hand(db).await,
        }
        .expect("SELECT 1");
        assert_eq!(v, 1);
    }
}

/// One configuration of the macro scenario: each variant's results per repetition.
pub(crate) struct MacroRow {
    pub(crate) label: String,
    pub(crate) threads: usize,
    pub(crate) pool: usize,
    pub(crate) tasks: usize,
    pub(crate) variants: Vec<(&'static str, Vec<CellResult>)>,
}

/// The macro scenario's part of the report.
pub(crate) struct MacroSection {
    /// Why nothing was measured, or remarks on what was.
    pub(crate) note: String,
    pub(crate) rows: Vec<MacroRow>,
}

impl MacroSection {
    pub(crate) fn skipped(why: &str) -> MacroSection {
        MacroSection {
            note: why.to_owned(),
            rows: Vec::new(),
        }
    }
}

/// Runs the macro scenario: each pair interleaved, on one thread with a connection per
/// task (no waiting: the cost of the code itself) and on two threads oversubscribed.
pub(crate) fn run(plan: &Plan, url: &str) -> MacroSection {
    let mut rows = Vec::new();
    let pairs = [
        (
            "`#[with_conn]` vs acquire by hand",
            Variant::WithConn,
            Variant::WithConnByHand,
        ),
        (
            "`#[transactional]` vs acquire/begin/commit by hand",
            Variant::Transactional,
            Variant::TransactionalByHand,
        ),
    ];
    for (label, macro_variant, hand) in pairs {
        for (threads, pool, tasks) in [(1, 4, 4), (2, 16, 64)] {
            let spec = plan.spec(Op::Select1, threads, pool, tasks);
            let mut variants: Vec<(&'static str, Vec<CellResult>)> = vec![
                (macro_variant.name(), Vec::new()),
                (hand.name(), Vec::new()),
            ];
            for rep in 0..plan.reps {
                for (i, v) in [macro_variant, hand].into_iter().enumerate() {
                    match run_variant(v, &spec, url) {
                        Ok(r) => {
                            eprintln!(
                                "macros {threads}t pool={pool} tasks={tasks} {} rep {}: {}/s",
                                v.name(),
                                rep + 1,
                                crate::report::rate(r.throughput)
                            );
                            variants[i].1.push(r);
                        }
                        Err(e) => eprintln!(
                            "macros {threads}t pool={pool} tasks={tasks} {} rep {}: FAILED: {e}",
                            v.name(),
                            rep + 1
                        ),
                    }
                }
            }
            rows.push(MacroRow {
                label: label.to_owned(),
                threads,
                pool,
                tasks,
                variants,
            });
        }
    }
    MacroSection {
        note: "Each function is called with `&mut db` once per operation. \
               The macros expand to the same statements as the hand-written code (tests/tests/macros/equivalence.rs checks this \
               against the server's log), so any difference is the generated Rust code. \
               Ratios within 10 % are noise here."
            .to_owned(),
        rows,
    }
}

fn run_variant(v: Variant, spec: &CellSpec, url: &str) -> Result<CellResult, String> {
    run_custom(spec, || async { MacroTarget::build(url, spec.pool, v) })
}
