//! Growth that follows demand: a waiter starts a new connection only when one would
//! arrive in time to be of use. Every extra connection is a server process kept for
//! `idle_timeout`, so a burst of short requests that the connections in use will serve
//! in less time than a connect takes opens none; sustained demand reaches `max_size` in
//! a few connect times.
//!
//! The estimate: with `U` connections in use, held `H` on average, and a connect taking
//! `C`, a connection opened now arrives after `C`, by which time the returning ones have
//! served `U·C/H` of the `W` waiting. What remains, `B = W − U·C/H`, is worth
//! `B·H / 2C − U` more connections: each then has at least two connect times of work.
//! With none in use to come back (or no connect seen yet), every waiter gets its
//! connect; with connections in use but none returned yet, one connect at a time. If
//! the oldest waiter has waited four connect times the estimate is wrong (holds got
//! longer): every waiter gets its connect.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// The estimates, kept by the pool.
#[derive(Default)]
pub(super) struct Demand {
    /// Mean connect time (EWMA, nanoseconds); 0 until the first connect.
    connect_nanos: u64,
    /// A later look at waiters left without a connect is scheduled.
    pub(super) recheck_pending: bool,
}

/// Mean hold time (EWMA, nanoseconds), updated without the lock on every return; 0 until
/// the first.
#[derive(Default)]
pub(super) struct HoldTime(AtomicU64);

impl HoldTime {
    /// A connection came back after `nanos`. Concurrent returns may lose an update; it
    /// is an estimate.
    #[inline]
    pub(super) fn returned(&self, nanos: u64) {
        let old = self.0.load(Relaxed);
        self.0.store(ewma(old, nanos), Relaxed);
    }

    fn nanos(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One eighth of each new sample.
fn ewma(old: u64, sample: u64) -> u64 {
    if old == 0 {
        sample.max(1)
    } else {
        (old - old / 8 + sample / 8).max(1)
    }
}

impl Demand {
    /// A connect took `took`.
    pub(super) fn connected(&mut self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.connect_nanos = ewma(self.connect_nanos, nanos);
    }

    /// How long after a deferral to look again: when the oldest waiter would have waited
    /// four connect times.
    pub(super) fn recheck_after(&self) -> Duration {
        Duration::from_nanos(self.connect_nanos.saturating_mul(4)).max(Duration::from_millis(1))
    }

    /// How many connects are worth having in flight for waiters that need `need`
    /// connections, with `in_use` connections to come back; the oldest waiter joined at
    /// `oldest` (if known).
    pub(super) fn wanted(
        &self,
        need: usize,
        in_use: usize,
        hold: &HoldTime,
        oldest: Option<Instant>,
        now: Instant,
    ) -> usize {
        let (c, h) = (u128::from(self.connect_nanos), u128::from(hold.nanos()));
        if c == 0 || in_use == 0 {
            return need;
        }
        let starved = oldest.is_some_and(|since| {
            now.saturating_duration_since(since).as_nanos() >= c.saturating_mul(4)
        });
        if starved {
            return need;
        }
        if h == 0 {
            // Connections in use, none back yet: grow one at a time until one is.
            return need.min(1);
        }
        let (w, u) = (need as u128, in_use as u128);
        let served_meanwhile = u * c / h;
        let Some(backlog) = w.checked_sub(served_meanwhile).filter(|b| *b > 0) else {
            return 0;
        };
        let worth = (backlog * h / (2 * c)).saturating_sub(u);
        usize::try_from(worth.min(w)).unwrap_or(need)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(connect_ms: u64, hold_ms: u64) -> (Demand, HoldTime) {
        let mut d = Demand::default();
        d.connected(Duration::from_millis(connect_ms));
        let h = HoldTime::default();
        h.returned(hold_ms * 1_000_000);
        (d, h)
    }

    #[test]
    fn a_burst_of_short_requests_opens_at_most_a_few() {
        // 50 requests of 2 ms, 5 connections in use, connects of 5 ms: 45 wait.
        let (d, h) = demand(5, 2);
        let now = Instant::now();
        let n = d.wanted(45, 5, &h, Some(now), now);
        assert!(n <= 2, "{n}");
        // Served faster than a connect: none.
        assert_eq!(d.wanted(4, 5, &h, Some(now), now), 0);
    }

    #[test]
    fn sustained_or_long_holds_open_one_per_waiter() {
        let (d, h) = demand(5, 20);
        let now = Instant::now();
        assert_eq!(d.wanted(95, 5, &h, Some(now), now), 95);
        // Nobody to come back: one per waiter; no return seen yet: one at a time.
        assert_eq!(d.wanted(7, 0, &h, None, now), 7);
        let h0 = HoldTime::default();
        assert_eq!(d.wanted(7, 5, &h0, Some(now), now), 1);
    }

    #[test]
    fn a_waiter_left_waiting_four_connect_times_gets_its_connect() {
        let (d, h) = demand(5, 2);
        let now = Instant::now();
        let long_ago = now.checked_sub(Duration::from_millis(25)).unwrap_or(now);
        assert_eq!(d.wanted(3, 5, &h, Some(long_ago), now), 3);
    }
}
