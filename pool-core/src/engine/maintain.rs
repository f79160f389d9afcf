//! The maintenance pass: cleaning returned connections, and the periodic pass that keeps
//! `min_idle`, enforces `idle_timeout` and `max_lifetime`, and reports leaks.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::{Shared, State};
use crate::conn::Conn;
use crate::error::Error;
use crate::status::{AtomicCounters, DiscardReason};

/// Cleans a connection returned dirty (transaction open, session state touched,
/// statement interrupted), then puts it back — or discards it if cleaning fails.
pub(super) async fn clean_and_return(shared: Arc<Shared>, mut conn: Box<Conn>) {
    let cfg = &shared.ctx.config;
    let limit = cfg.connect_timeout + cfg.cleanup_timeout * 4;
    match tokio::time::timeout(limit, conn.clean()).await {
        Ok(Ok(())) if conn.is_clean() => {
            if let Some(hook) = cfg.after_release.clone() {
                let kept = tokio::time::timeout(limit, conn.passes(&hook, "after_release")).await;
                match kept {
                    Ok(true) => {}
                    Ok(false) => return shared.discard_counted(conn),
                    Err(_) => {
                        tracing::warn!(target: "pool_core", "the after_release hook did not finish in time; its connection is discarded");
                        return shared.discard(conn, DiscardReason::FailedHook);
                    }
                }
            }
            let now = Instant::now();
            let st = shared.lock();
            shared.put_back(st, conn, now);
        }
        outcome => {
            let reason = if matches!(outcome, Ok(Err(Error::Hook { .. }))) {
                // Counted by the check after the hook.
                None
            } else if conn.is_broken() {
                Some(DiscardReason::Broken)
            } else {
                Some(DiscardReason::FailedReset)
            };
            if let Ok(Err(e)) = outcome {
                tracing::debug!(target: "pool_core", error = %e, "discarding a connection that could not be cleaned");
            }
            match reason {
                Some(reason) => shared.discard(conn, reason),
                None => shared.discard_counted(conn),
            }
        }
    }
}

impl Shared {
    /// Starts the connects that `min_idle` lacks, unless the server is being backed off
    /// from (the connect tasks already trying go on probing it).
    pub(super) fn fill_min_idle(self: &Arc<Self>, st: &mut State, now: Instant) {
        let backing_off = st.gate.backing_off(now);
        while !backing_off
            && !st.closed
            && st.idle.len() + st.slots.connecting() < self.config.min_idle
            && st.slots.has_room()
            && self.spawn_one_connect(st)
        {}
    }
}

/// How often the periodic pass runs: often enough for the shortest configured duration.
fn interval(shared: &Shared) -> Duration {
    let cfg = &shared.config;
    [
        cfg.idle_timeout,
        shared.ctx.config.max_lifetime.map(|d| d / 8),
        cfg.leak_threshold,
    ]
    .into_iter()
    .flatten()
    .map(|d| d / 4)
    .fold(Duration::from_secs(1), Duration::min)
    .max(Duration::from_millis(10))
}

/// The periodic pass. Holds the pool only weakly: it ends when the pool is dropped or
/// closed.
pub(super) async fn run(pool: Weak<Shared>) {
    loop {
        let period = match pool.upgrade() {
            Some(shared) => interval(&shared),
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(shared) = pool.upgrade() else { return };
        if shared.lock().closed {
            return;
        }
        pass(&shared);
        #[cfg(feature = "metrics")]
        shared.publish_metrics();
    }
}

fn pass(shared: &Arc<Shared>) {
    let cfg = &shared.config;
    let now = Instant::now();
    let mut leaks = Vec::new();
    let trash = {
        let mut st = shared.lock();
        let trash = st.reap_idle(now, cfg, &shared.ctx);
        shared.fill_min_idle(&mut st, now);
        if let Some(threshold) = cfg.leak_threshold {
            leaks = st.holders.overdue(now, threshold);
        }
        trash
    };
    drop(trash);
    for leak in leaks {
        AtomicCounters::bump(&shared.ctx.counters.leaks);
        shared.ctx.telemetry.leak_warned();
        let (site, task, held_for, backend_pid) =
            (leak.site, leak.task, leak.held_for, leak.backend_pid);
        tracing::warn!(
            target: "pool_core",
            %site, %task, backend_pid, held_ms = held_for.as_millis() as u64,
            "possible connection leak: a connection checked out at {site} has been held by {task} for {:?} \
             (leak_threshold {:?}); return connections as soon as the work is done",
            held_for, cfg.leak_threshold.unwrap_or_default()
        );
    }
}
