//! Running one cell: a fresh runtime and a fresh, filled pool; N tasks in a closed loop;
//! a warm-up that is discarded, then a fixed measurement window.
//!
//! The window is kept by a plain OS thread, not a tokio timer, so it closes on time even
//! when a task never yields (a checkout loop with nothing else in it can hog a worker
//! thread). Tasks read the phase, an atomic, after every operation.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::impls::{Bb8, Deadpool, Impl, Limit, Op, PoolCore, Target};

/// What to run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CellSpec {
    pub(crate) op: Op,
    /// Tokio worker threads: 1 is a current-thread runtime, 2 a multi-thread one.
    pub(crate) threads: usize,
    pub(crate) pool: usize,
    pub(crate) tasks: usize,
    /// Read the clock around every operation: needed for the age of the oldest operation
    /// in flight and for latencies; costs one clock read per operation.
    pub(crate) timed: bool,
    /// Record every operation's latency (implies `timed`).
    pub(crate) latencies: bool,
    pub(crate) warm: Duration,
    pub(crate) window: Duration,
}

impl CellSpec {
    /// Whether every operation reads the clock (`timed`, or implied by `latencies`).
    pub(crate) fn clocked(&self) -> bool {
        self.timed || self.latencies
    }
}

/// What one run of a cell measured.
#[derive(Clone, Debug)]
pub(crate) struct CellResult {
    /// Completed operations per second in the window.
    pub(crate) throughput: f64,
    /// Completed operations per task in the window.
    pub(crate) counts: Vec<u64>,
    /// The age, when the window closed, of the oldest operation still in flight.
    pub(crate) oldest_in_flight: Option<Duration>,
    /// Latencies of the operations completed in the window, sorted, in nanoseconds.
    pub(crate) latencies: Vec<u64>,
}

const WARM: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// One cache line per task, so tasks on two threads do not share lines.
#[repr(align(64))]
struct Slot(AtomicU64);

struct Ctl {
    phase: AtomicU8,
    base: Instant,
    /// When each task's current operation started (ns since `base`).
    started: Box<[Slot]>,
}

impl Ctl {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

struct TaskOut {
    count: u64,
    latencies: Vec<u64>,
}

async fn task_loop<T: Target>(
    mut task: T::Task,
    op: Op,
    ctl: Arc<Ctl>,
    i: usize,
    timed: bool,
    latencies: bool,
) -> TaskOut {
    let mut count = 0;
    let mut lat = Vec::new();
    let mut started = ctl.started[i].0.load(Relaxed);
    // The mixed cell: every 100th operation of a task is the slow one, staggered
    // across tasks; only the fast ones' latencies are kept.
    let mut k = i;
    loop {
        let this = if op == Op::Mixed {
            k += 1;
            if k.is_multiple_of(100) {
                Op::SlowOneShot
            } else {
                Op::Mixed
            }
        } else {
            op
        };
        T::op(&mut task, this).await;
        let phase = ctl.phase.load(Relaxed);
        if timed {
            let now = ctl.now_ns();
            if latencies && phase == MEASURE && this != Op::SlowOneShot {
                lat.push(now - started);
            }
            started = now;
            ctl.started[i].0.store(now, Relaxed);
        }
        match phase {
            MEASURE => count += 1,
            STOP => break,
            _ => {}
        }
    }
    TaskOut {
        count,
        latencies: lat,
    }
}

/// A runtime with `threads` workers: 1 is a current-thread runtime.
pub(crate) fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(|e| e.to_string())
}

/// Runs one cell of `imp` against the database at `url`, on a runtime of its own.
pub(crate) fn run_cell(
    imp: Impl,
    spec: &CellSpec,
    url: &str,
    config: &tokio_postgres::Config,
) -> Result<CellResult, String> {
    let config = config.clone();
    match imp {
        Impl::PoolCore(variant) => {
            run_custom(spec, || async { PoolCore::build(url, spec.pool, variant) })
        }
        Impl::Deadpool => run_custom(spec, || async { Deadpool::build(config, spec.pool, false) }),
        Impl::DeadpoolPrepared => {
            run_custom(spec, || async { Deadpool::build(config, spec.pool, true) })
        }
        Impl::Bb8Fast => run_custom(spec, || Bb8::build(config, spec.pool, false)),
        Impl::Bb8Default => run_custom(spec, || Bb8::build(config, spec.pool, true)),
        Impl::Limit => run_custom(spec, || Limit::build(config, spec.pool, false)),
        Impl::LimitPrepared => run_custom(spec, || Limit::build(config, spec.pool, true)),
        Impl::LimitPipelined => run_custom(spec, || async {
            Limit::build(config, spec.pool, true)
                .await
                .map(Limit::shared)
        }),
    }
}

/// Runs one cell of a target built by `build` (on the cell's runtime).
pub(crate) fn run_custom<T, F>(
    spec: &CellSpec,
    build: impl FnOnce() -> F,
) -> Result<CellResult, String>
where
    T: Target,
    F: Future<Output = Result<T, String>>,
{
    let rt = runtime(spec.threads)?;
    let res = rt.block_on(async { run_with(build().await?, spec).await });
    rt.shutdown_timeout(Duration::from_secs(5));
    res
}

/// Checks out `fill_count` connections at once and returns them, so the pool is full.
pub(crate) async fn fill<T: Target>(target: &Arc<T>) -> Result<(), String> {
    let n = target.fill_count();
    if n == 0 {
        return Ok(());
    }
    let barrier = Arc::new(Barrier::new(n));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut task = target.task(i);
        let barrier = Arc::clone(&barrier);
        set.spawn(async move { T::fill(&mut task, barrier).await });
    }
    let joined = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(res) = set.join_next().await {
            res.map_err(|e| format!("filling the pool: {e}"))?;
        }
        Ok::<(), String>(())
    })
    .await;
    joined.map_err(|_| "filling the pool took over 60 s".to_owned())?
}

async fn run_with<T: Target>(target: T, spec: &CellSpec) -> Result<CellResult, String> {
    let target = Arc::new(target);
    fill(&target).await?;
    let n = target.tasks(spec.tasks);
    let ctl = Arc::new(Ctl {
        phase: AtomicU8::new(WARM),
        base: Instant::now(),
        started: (0..n).map(|_| Slot(AtomicU64::new(0))).collect(),
    });
    let (op, timed, latencies) = (spec.op, spec.clocked(), spec.latencies);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        // An operation "starts" when its task is spawned: a task that never gets to run
        // shows up as the oldest operation in flight.
        ctl.started[i].0.store(ctl.now_ns(), Relaxed);
        let task = target.task(i);
        let ctl = Arc::clone(&ctl);
        set.spawn(async move { (i, task_loop::<T>(task, op, ctl, i, timed, latencies).await) });
    }
    let clock = {
        let ctl = Arc::clone(&ctl);
        let (warm, window, timed) = (spec.warm, spec.window, spec.clocked());
        std::thread::Builder::new()
            .name("bench-window".to_owned())
            .spawn(move || {
                std::thread::sleep(warm);
                ctl.phase.store(MEASURE, Relaxed);
                let t0 = Instant::now();
                std::thread::sleep(window);
                ctl.phase.store(STOP, Relaxed);
                let closed = ctl.now_ns();
                let elapsed = t0.elapsed();
                let oldest = timed.then(|| {
                    let first = ctl
                        .started
                        .iter()
                        .map(|s| s.0.load(Relaxed))
                        .min()
                        .unwrap_or(closed);
                    Duration::from_nanos(closed.saturating_sub(first))
                });
                (elapsed, oldest)
            })
            .map_err(|e| e.to_string())?
    };
    let mut counts = vec![0; n];
    let mut latencies = Vec::new();
    while let Some(res) = set.join_next().await {
        let (i, out) = res.map_err(|e| format!("a benchmark task failed: {e}"))?;
        counts[i] = out.count;
        latencies.extend(out.latencies);
    }
    let (window, oldest_in_flight) = clock
        .join()
        .map_err(|_| "the window thread panicked".to_owned())?;
    latencies.sort_unstable();
    let total: u64 = counts.iter().sum();
    Ok(CellResult {
        throughput: total as f64 / window.as_secs_f64(),
        counts,
        oldest_in_flight,
        latencies,
    })
}
