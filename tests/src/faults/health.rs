//! "Back to full health": every one of the pool's `max_size` connections can be checked
//! out at once, each on its own live backend, outside any transaction.

use std::time::Duration;

use pool_core::Pool;
use tokio::time::Instant;

/// Waits until the pool is at full health, trying for at most `within`. Returns how long
/// it took, or what was still wrong.
pub async fn full_health(pool: &Pool, within: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let deadline = start + within;
    let max = pool.max_size();
    let mut last = String::from("never tried");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(format!(
                "not back to full health within {within:?}: {last}\n{}",
                pool.status()
            ));
        }
        let attempt = async {
            let mut db = pool.db();
            let mut set = db.acquire_many(max).await.map_err(|e| e.to_string())?;
            let mut pids = Vec::with_capacity(max);
            for conn in set.iter_mut() {
                let at = super::workload::now_micros();
                let row = conn
                    .query_one(super::workload::PROBE, &[&at])
                    .await
                    .map_err(|e| format!("backend {}: {e}", conn.backend_pid()))?;
                let pid: i32 = row.get(0);
                let outside: bool = row.get(1);
                if pid != conn.backend_pid() || !outside {
                    return Err(format!(
                        "backend {} answered from {pid}, outside a transaction: {outside}",
                        conn.backend_pid()
                    ));
                }
                pids.push(pid);
            }
            pids.sort_unstable();
            pids.dedup();
            if pids.len() != max {
                return Err(format!(
                    "{} distinct backends for {max} connections",
                    pids.len()
                ));
            }
            Ok::<(), String>(())
        };
        match tokio::time::timeout(remaining.min(Duration::from_secs(2)), attempt).await {
            Ok(Ok(())) => return Ok(start.elapsed()),
            Ok(Err(e)) => last = e,
            Err(_) => last = "an attempt timed out".to_owned(),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Figures measured by a scenario, printed as one line each (`--nocapture` shows them).
#[derive(Debug, Default)]
pub struct Figures {
    scenario: String,
    lines: Vec<(String, String)>,
}

impl Figures {
    /// Figures of one scenario.
    pub fn new(scenario: &str) -> Figures {
        Figures {
            scenario: scenario.to_owned(),
            lines: Vec::new(),
        }
    }

    /// Adds a figure.
    pub fn add(&mut self, name: &str, value: impl std::fmt::Display) {
        self.lines.push((name.to_owned(), value.to_string()));
    }

    /// Prints them to stderr.
    pub fn print(&self) {
        let mut out = format!("FIGURES [{}]", self.scenario);
        for (name, value) in &self.lines {
            out.push_str(&format!("\n  {name}: {value}"));
        }
        eprintln!("{out}");
    }
}
