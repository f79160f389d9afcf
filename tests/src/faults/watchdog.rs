//! The watchdog: every pool call runs under its own deadline plus a slack of 100 ms. A
//! call that overruns is abandoned, recorded with the pool's status and holders at that
//! moment, and fails the test at the end.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pool_core::Pool;
use tokio::time::Instant;

/// How far past its own deadline a call may finish.
pub const SLACK: Duration = Duration::from_millis(100);

/// A call that overran its deadline by more than [`SLACK`]; it was abandoned.
#[derive(Clone, Debug)]
pub struct Overrun {
    /// What the call was.
    pub label: String,
    /// Its deadline, from its start.
    pub budget: Duration,
}

impl std::fmt::Display for Overrun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} overran its deadline of {:?} by more than {:?}",
            self.label, self.budget, SLACK
        )
    }
}

impl std::error::Error for Overrun {}

/// Watches calls to one pool.
#[derive(Debug)]
pub struct Watchdog {
    pool: Pool,
    calls: AtomicU64,
    /// Longest time past its deadline at which a call finished, in microseconds.
    worst_late_us: AtomicU64,
    /// Longest call relative to its budget, in per-mille.
    worst_ratio: AtomicU64,
    overruns: Mutex<Vec<String>>,
}

/// What the watchdog saw.
#[derive(Clone, Debug)]
pub struct WatchdogReport {
    /// Calls watched.
    pub calls: u64,
    /// The most any call finished past its own deadline (zero if none did).
    pub worst_late: Duration,
    /// The longest call as a fraction of its deadline.
    pub worst_ratio: f64,
    /// Every overrun, with the pool's status and holders at the time.
    pub overruns: Vec<String>,
}

impl std::fmt::Display for WatchdogReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "watchdog: {} calls, worst {:.0}% of its deadline, worst {:?} past it, {} overruns",
            self.calls,
            self.worst_ratio * 100.0,
            self.worst_late,
            self.overruns.len()
        )
    }
}

impl Watchdog {
    /// A watchdog for calls to `pool`.
    pub fn new(pool: Pool) -> Watchdog {
        Watchdog {
            pool,
            calls: AtomicU64::new(0),
            worst_late_us: AtomicU64::new(0),
            worst_ratio: AtomicU64::new(0),
            overruns: Mutex::new(Vec::new()),
        }
    }

    /// Runs `fut`, whose own deadline is `budget` from now. If it is still running
    /// [`SLACK`] after that, it is dropped and the overrun recorded (and printed with the
    /// pool's status and holders).
    pub async fn call<F: Future>(
        &self,
        label: &str,
        budget: Duration,
        fut: F,
    ) -> Result<F::Output, Overrun> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        match tokio::time::timeout_at(start + budget + SLACK, fut).await {
            Ok(out) => {
                // Finished, but possibly polled late: an overrun all the same.
                let elapsed = start.elapsed();
                if self.stats(elapsed, budget) > SLACK {
                    self.record(format!(
                        "WATCHDOG: `{label}` finished {elapsed:?} after it started; its deadline was {budget:?} (+{SLACK:?})\n{}",
                        self.pool.status()
                    ));
                }
                Ok(out)
            }
            Err(_) => {
                let elapsed = start.elapsed();
                self.stats(elapsed, budget);
                let holders: Vec<String> = self
                    .pool
                    .holders()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let message = format!(
                    "WATCHDOG: `{label}` still running {elapsed:?} after it started; its deadline was {budget:?} (+{SLACK:?})\n{}\nholders: [{}]",
                    self.pool.status(),
                    holders.join("; ")
                );
                self.record(message);
                Err(Overrun {
                    label: label.to_owned(),
                    budget,
                })
            }
        }
    }

    /// Records a call measured elsewhere (for calls that cannot be dropped, like
    /// `Pool::close`).
    pub fn observe(&self, label: &str, elapsed: Duration, budget: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.stats(elapsed, budget) > SLACK {
            let message = format!(
                "WATCHDOG: `{label}` took {elapsed:?}; its deadline was {budget:?} (+{SLACK:?})\n{}",
                self.pool.status()
            );
            self.record(message);
        }
    }

    fn record(&self, message: String) {
        let mut overruns = self.overruns.lock().unwrap_or_else(|p| p.into_inner());
        // The first few in full; a storm of them would drown the output.
        if overruns.len() < 10 {
            eprintln!("{message}");
        }
        overruns.push(message);
    }

    fn stats(&self, elapsed: Duration, budget: Duration) -> Duration {
        let late = elapsed.saturating_sub(budget);
        self.worst_late_us
            .fetch_max(late.as_micros() as u64, Ordering::Relaxed);
        if !budget.is_zero() {
            let ratio = (elapsed.as_secs_f64() / budget.as_secs_f64() * 1000.0) as u64;
            self.worst_ratio.fetch_max(ratio, Ordering::Relaxed);
        }
        late
    }

    /// What the watchdog saw so far.
    pub fn report(&self) -> WatchdogReport {
        WatchdogReport {
            calls: self.calls.load(Ordering::Relaxed),
            worst_late: Duration::from_micros(self.worst_late_us.load(Ordering::Relaxed)),
            worst_ratio: self.worst_ratio.load(Ordering::Relaxed) as f64 / 1000.0,
            overruns: self
                .overruns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}
