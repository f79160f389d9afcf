//! Metrics in OpenTelemetry's names for database client connection pools, emitted
//! through the `metrics` facade when the `metrics` feature is on (any exporter:
//! Prometheus, OpenTelemetry, StatsD). Without the feature every method is empty and
//! [`Telemetry`] has no size.
//!
//! | name | kind | unit | attributes |
//! |---|---|---|---|
//! | `db.client.connection.count` | gauge | `{connection}` | `db.client.connection.state` = `idle` \| `used` |
//! | `db.client.connection.idle.max` | gauge | `{connection}` | |
//! | `db.client.connection.idle.min` | gauge | `{connection}` | |
//! | `db.client.connection.max` | gauge | `{connection}` | |
//! | `db.client.connection.pending_requests` | gauge | `{request}` | |
//! | `db.client.connection.timeouts` | counter | `{timeout}` | |
//! | `db.client.connection.create_time` | histogram | `s` | |
//! | `db.client.connection.wait_time` | histogram | `s` | |
//! | `db.client.connection.use_time` | histogram | `s` | |
//! | `pool_core.connection.hold_time` | counter | `us` | `code.site` = `file:line` of the checkout |
//! | `pool_core.connection.checkouts` | counter | `{checkout}` | `code.site` |
//! | `pool_core.connection.discards` | counter | `{connection}` | `pool_core.discard.reason` |
//! | `pool_core.nested_checkout.refusals` | counter | `{checkout}` | |
//! | `pool_core.leak.warnings` | counter | `{warning}` | |
//! | `pool_core.statement.timeouts` | counter | `{timeout}` | |
//! | `pool_core.transaction.retries` | counter | `{retry}` | |
//! | `pool_core.shared.connections` | gauge | `{connection}` | |
//! | `pool_core.shared.in_flight` | gauge | `{statement}` | |
//!
//! Every instrument also carries `db.client.connection.pool.name` (the builder's `name`,
//! else `host:port`).
//!
//! Hold time by site is the total time connections checked out there were held
//! (`hold_time`, microseconds) with the number of checkouts that came back
//! (`checkouts`): their ratio is the mean hold, `rate(hold_time) / rate(checkouts)` in
//! PromQL.
//! Counters rather than a histogram per site: two series per site instead of one per
//! bucket, and no sample per checkout for the exporter to store.
//!
//! Cost on the checkout path: the gauges are published by the maintenance pass (at least
//! once a second), not at every change; hold times and waits are counted into
//! pool-local buckets, two per octave (±20 %), by an atomic add, and handed to the
//! recorder at the same pass as bucket midpoints with their counts: each site has its
//! own buckets (its count, and merged over the sites `use_time`) and its total, two
//! atomic adds per give-back. `create_time` and the other counters go to the recorder
//! at once.

#[cfg(feature = "metrics")]
mod imp {
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    use metrics::{Counter, Gauge, Histogram, SharedString, Unit};

    use crate::status::{DiscardReason, Site};

    const POOL: &str = "db.client.connection.pool.name";

    /// Buckets per octave of nanoseconds, and octaves kept (1 ns … about 18 min).
    const OCTAVES: usize = 40;
    const BUCKETS: usize = OCTAVES * 2;
    /// Checkout sites with a hold-time histogram of their own; further sites share one.
    const SITES: usize = 64;

    /// A histogram kept in the pool: a count per bucket, flushed to the recorder.
    struct Local {
        buckets: [AtomicU64; BUCKETS],
    }

    impl Local {
        fn new() -> Local {
            Local {
                buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            }
        }

        #[inline]
        fn record(&self, nanos: u64) {
            self.buckets[bucket_of(nanos)].fetch_add(1, Relaxed);
        }

        /// Moves the counts gathered since the last drain into `into`; returns how many.
        fn drain(&self, into: &mut [u64; BUCKETS]) -> u64 {
            let mut total = 0;
            for (b, sum) in self.buckets.iter().zip(into.iter_mut()) {
                let n = b.swap(0, Relaxed);
                *sum += n;
                total += n;
            }
            total
        }

        /// Hands the counts gathered since the last flush to `to`.
        fn flush(&self, to: &Histogram) {
            let mut counts = [0; BUCKETS];
            self.drain(&mut counts);
            record(&counts, to);
        }
    }

    /// Hands bucket counts to the recorder, as the buckets' midpoints.
    fn record(counts: &[u64; BUCKETS], to: &Histogram) {
        for (i, n) in counts.iter().enumerate() {
            if *n > 0 {
                to.record_many(midpoint_of(i), usize::try_from(*n).unwrap_or(usize::MAX));
            }
        }
    }

    /// One checkout site's holds: their total since the pool began (summed over the
    /// sites, the pool's `use_time` counter) and their histogram since the last flush
    /// (which also counts them, and merged over the sites is `use_time`). Two atomic adds
    /// per give-back.
    struct Holds {
        nanos: AtomicU64,
        buckets: Local,
    }

    impl Holds {
        fn new() -> Holds {
            Holds {
                nanos: AtomicU64::new(0),
                buckets: Local::new(),
            }
        }

        #[inline]
        fn record(&self, nanos: u64) {
            self.nanos.fetch_add(nanos, Relaxed);
            self.buckets.record(nanos);
        }

        fn is_empty(&self) -> bool {
            self.nanos.load(Relaxed) == 0
                && self.buckets.buckets.iter().all(|b| b.load(Relaxed) == 0)
        }
    }

    /// The recorder's instruments of one site, registered at its first flush.
    struct SiteHandles {
        hold_time: Counter,
        checkouts: Counter,
        /// Nanoseconds not yet handed over (the counter counts whole microseconds).
        carry: u64,
        /// The site's total at the last flush.
        flushed: u64,
    }

    impl SiteHandles {
        /// Registers the instruments of `site` (`None`: the sites beyond the table).
        fn new(pool: &SharedString, site: Option<Site>) -> SiteHandles {
            let site = site.map_or_else(
                || "other".to_owned(),
                |s| format!("{}:{}", s.file(), s.line()),
            );
            let labels = [
                metrics::Label::new(POOL, pool.clone()),
                metrics::Label::new("code.site", site),
            ];
            SiteHandles {
                hold_time: metrics::counter!("pool_core.connection.hold_time", labels.iter()),
                checkouts: metrics::counter!("pool_core.connection.checkouts", labels.iter()),
                carry: 0,
                flushed: 0,
            }
        }

        /// Hands over `holds`, adding their histogram to `uses`.
        fn flush(&mut self, holds: &Holds, uses: &mut [u64; BUCKETS]) {
            // The site's total only grows (it is also the pool's `use_time`): hand over
            // what came since the last flush.
            let total = holds.nanos.load(Relaxed);
            let nanos = total.wrapping_sub(self.flushed) + self.carry;
            self.flushed = total;
            self.carry = nanos % 1_000;
            self.hold_time.increment(nanos / 1_000);
            self.checkouts.increment(holds.buckets.drain(uses));
        }
    }

    /// The bucket of a duration: two per octave.
    /// The lowest bit is set first, so that 0 has an octave: 2 ns falls in the bucket of
    /// 3 ns (nothing that short is timed). No branch on the way.
    #[inline]
    pub(super) fn bucket_of(nanos: u64) -> usize {
        let n = nanos | 1;
        let octave = 63 - n.leading_zeros() as usize;
        // The bit below the top one, found one place up so that octave 0 needs no shift
        // by -1.
        let upper_half = (((n << 1) >> octave) & 1) as usize;
        (octave * 2 + upper_half).min(BUCKETS - 1)
    }

    /// The middle of a bucket, in seconds.
    pub(super) fn midpoint_of(bucket: usize) -> f64 {
        let base = 2f64.powi(i32::try_from(bucket / 2).unwrap_or(i32::MAX));
        let (low, high) = if bucket.is_multiple_of(2) {
            (base, base * 1.5)
        } else {
            (base * 1.5, base * 2.0)
        };
        (low + high) / 2.0 / 1e9
    }

    /// Hold times by checkout site: a lock-free table keyed by the site's address.
    struct Sites {
        keys: [AtomicUsize; SITES],
        sites: [OnceLock<Site>; SITES],
        holds: Box<[Holds; SITES]>,
        /// Sites beyond the table's capacity (`code.site` = `other`).
        overflow: Holds,
        /// The recorder's instruments of each site and of the overflow (last).
        handles: Mutex<Vec<Option<SiteHandles>>>,
    }

    impl Sites {
        fn new() -> Sites {
            Sites {
                keys: std::array::from_fn(|_| AtomicUsize::new(0)),
                sites: std::array::from_fn(|_| OnceLock::new()),
                holds: Box::new(std::array::from_fn(|_| Holds::new())),
                overflow: Holds::new(),
                handles: Mutex::new((0..=SITES).map(|_| None).collect()),
            }
        }

        /// The holds of `site`, claiming a free slot the first time.
        #[inline]
        fn of(&self, site: Site) -> &Holds {
            let key = std::ptr::from_ref(site.0) as usize;
            // `Location`s are 8-aligned and a few words apart: their addresses' low bits
            // spread them well enough.
            let start = key >> 3;
            for step in 0..SITES {
                let slot = (start + step) % SITES;
                match self.keys[slot].load(Acquire) {
                    k if k == key => return &self.holds[slot],
                    0 => match self.keys[slot].compare_exchange(0, key, AcqRel, Acquire) {
                        Ok(_) => {
                            let _ = self.sites[slot].set(site);
                            return &self.holds[slot];
                        }
                        Err(k) if k == key => return &self.holds[slot],
                        Err(_) => {}
                    },
                    _ => {}
                }
            }
            &self.overflow
        }
    }

    /// The instruments of one pool, registered once when it is built.
    pub(crate) struct Telemetry {
        name: SharedString,
        idle: Gauge,
        used: Gauge,
        pending: Gauge,
        max: Gauge,
        idle_max: Gauge,
        timeouts: Counter,
        create_time: Histogram,
        wait_time: Histogram,
        use_time: Histogram,
        discards: Vec<Counter>,
        nested: Counter,
        leaks: Counter,
        statement_timeouts: Counter,
        retries: Counter,
        /// The shared lane: its connections and statements in flight.
        shared: Gauge,
        in_flight: Gauge,
        /// Hold time per checkout site, gathered locally (see the module doc).
        hold: Sites,
        /// Waits, gathered locally.
        waits: Local,
    }

    fn describe() {
        use metrics::{describe_counter, describe_gauge, describe_histogram};
        describe_gauge!(
            "db.client.connection.count",
            Unit::Count,
            "The number of connections that are currently in the state described by db.client.connection.state"
        );
        describe_gauge!(
            "db.client.connection.idle.max",
            Unit::Count,
            "The maximum number of idle open connections allowed"
        );
        describe_gauge!(
            "db.client.connection.idle.min",
            Unit::Count,
            "The minimum number of idle open connections allowed"
        );
        describe_gauge!(
            "db.client.connection.max",
            Unit::Count,
            "The maximum number of open connections allowed"
        );
        describe_gauge!(
            "db.client.connection.pending_requests",
            Unit::Count,
            "The number of current pending requests for an open connection"
        );
        describe_counter!(
            "db.client.connection.timeouts",
            Unit::Count,
            "The number of connection timeouts that have occurred trying to obtain a connection from the pool"
        );
        describe_histogram!(
            "db.client.connection.create_time",
            Unit::Seconds,
            "The time it took to create a new connection"
        );
        describe_histogram!(
            "db.client.connection.wait_time",
            Unit::Seconds,
            "The time it took to obtain an open connection from the pool"
        );
        describe_histogram!(
            "db.client.connection.use_time",
            Unit::Seconds,
            "The time between borrowing a connection and returning it to the pool"
        );
        describe_counter!(
            "pool_core.connection.hold_time",
            Unit::Microseconds,
            "The total time connections checked out at code.site were held, counted when they come back"
        );
        describe_counter!(
            "pool_core.connection.checkouts",
            Unit::Count,
            "The checkouts at code.site that came back"
        );
        describe_counter!(
            "pool_core.connection.discards",
            Unit::Count,
            "Connections closed instead of reused, by reason"
        );
        describe_counter!(
            "pool_core.nested_checkout.refusals",
            Unit::Count,
            "Checkouts refused because the task already held a connection from the pool"
        );
        describe_counter!(
            "pool_core.leak.warnings",
            Unit::Count,
            "Warnings about a connection held longer than leak_threshold"
        );
        describe_counter!(
            "pool_core.statement.timeouts",
            Unit::Count,
            "Statements that passed their deadline and were cancelled"
        );
        describe_counter!(
            "pool_core.transaction.retries",
            Unit::Count,
            "Re-runs of a #[transactional(retry)] body after a serialization failure or deadlock"
        );
        describe_gauge!(
            "pool_core.shared.connections",
            Unit::Count,
            "Connections the shared lane holds for one-shot statements (counted in used)"
        );
        describe_gauge!(
            "pool_core.shared.in_flight",
            Unit::Count,
            "One-shot statements in flight on the shared lane's connections"
        );
    }

    /// A pool that is gone has no connections and no waiters, and its last holds are
    /// handed over.
    impl Drop for Telemetry {
        fn drop(&mut self) {
            self.publish(0, 0, 0);
        }
    }

    impl Telemetry {
        pub(crate) fn new(name: String, max_size: usize, min_idle: usize) -> Telemetry {
            describe();
            let name = SharedString::from(name);
            let gauge = |metric: &'static str| metrics::gauge!(metric, POOL => name.clone());
            let counter = |metric: &'static str| metrics::counter!(metric, POOL => name.clone());
            let histogram =
                |metric: &'static str| metrics::histogram!(metric, POOL => name.clone());
            let count = |state: &'static str| {
                metrics::gauge!(
                    "db.client.connection.count",
                    POOL => name.clone(),
                    "db.client.connection.state" => state
                )
            };
            let discards = DiscardReason::ALL
                .iter()
                .map(|r| {
                    metrics::counter!(
                        "pool_core.connection.discards",
                        POOL => name.clone(),
                        "pool_core.discard.reason" => r.key()
                    )
                })
                .collect();
            let t = Telemetry {
                idle: count("idle"),
                used: count("used"),
                pending: gauge("db.client.connection.pending_requests"),
                max: gauge("db.client.connection.max"),
                idle_max: gauge("db.client.connection.idle.max"),
                timeouts: counter("db.client.connection.timeouts"),
                create_time: histogram("db.client.connection.create_time"),
                wait_time: histogram("db.client.connection.wait_time"),
                use_time: histogram("db.client.connection.use_time"),
                discards,
                nested: counter("pool_core.nested_checkout.refusals"),
                leaks: counter("pool_core.leak.warnings"),
                statement_timeouts: counter("pool_core.statement.timeouts"),
                retries: counter("pool_core.transaction.retries"),
                shared: gauge("pool_core.shared.connections"),
                in_flight: gauge("pool_core.shared.in_flight"),
                hold: Sites::new(),
                waits: Local::new(),
                name: name.clone(),
            };
            gauge("db.client.connection.idle.min").set(min_idle as f64);
            t.resized(max_size);
            t.publish(0, 0, 0);
            t
        }

        /// Sets the gauges to the connections and waiters now, and hands the hold times
        /// gathered since the last call to the recorder.
        pub(crate) fn publish(&self, idle: usize, used: usize, pending: usize) {
            self.idle.set(idle as f64);
            self.used.set(used as f64);
            self.pending.set(pending as f64);
            let mut handles = self.hold.handles.lock().unwrap_or_else(|p| p.into_inner());
            let mut uses = [0; BUCKETS];
            for (slot, handle) in handles.iter_mut().enumerate() {
                // The last slot is the overflow's.
                let (site, holds) = match self.hold.sites.get(slot) {
                    Some(site) => match site.get() {
                        Some(site) => (Some(*site), &self.hold.holds[slot]),
                        None => continue,
                    },
                    None => (None, &self.hold.overflow),
                };
                if handle.is_none() && holds.is_empty() {
                    continue;
                }
                handle
                    .get_or_insert_with(|| SiteHandles::new(&self.name, site))
                    .flush(holds, &mut uses);
            }
            record(&uses, &self.use_time);
            self.waits.flush(&self.wait_time);
        }

        pub(crate) fn resized(&self, max_size: usize) {
            self.max.set(max_size as f64);
            // No separate cap on idle connections: all of them may be idle.
            self.idle_max.set(max_size as f64);
        }

        pub(crate) fn timed_out(&self, n: u64) {
            self.timeouts.increment(n);
        }

        pub(crate) fn created(&self, took: Duration) {
            self.create_time.record(took);
        }

        #[inline]
        pub(crate) fn waited(&self, took: Duration) {
            self.waits
                .record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        }

        /// A connection checked out at `site` came back after `held_nanos`.
        #[inline]
        pub(crate) fn used(&self, held_nanos: u64, site: Site) {
            self.hold.of(site).record(held_nanos);
        }

        /// The time connections were held, over the pool's life: the sites' totals (the
        /// pool's `use_time` counter, which is not kept twice).
        pub(crate) fn use_nanos(&self) -> Option<u64> {
            let sites = self.hold.holds.iter().chain([&self.hold.overflow]);
            Some(sites.fold(0_u64, |sum, h| sum.wrapping_add(h.nanos.load(Relaxed))))
        }

        pub(crate) fn discarded(&self, reason: DiscardReason) {
            if let Some(c) = self.discards.get(reason.index()) {
                c.increment(1);
            }
        }

        pub(crate) fn nested_refused(&self) {
            self.nested.increment(1);
        }

        pub(crate) fn leak_warned(&self) {
            self.leaks.increment(1);
        }

        pub(crate) fn statement_timed_out(&self) {
            self.statement_timeouts.increment(1);
        }

        pub(crate) fn retried(&self) {
            self.retries.increment(1);
        }

        /// The shared lane now (its keepers report every 50 ms).
        pub(crate) fn lane(&self, connections: usize, in_flight: usize) {
            self.shared.set(connections as f64);
            self.in_flight.set(in_flight as f64);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use std::time::Duration;

    use crate::status::{DiscardReason, Site};

    /// Without the `metrics` feature: nothing, at no cost.
    pub(crate) struct Telemetry;

    #[allow(clippy::unused_self)]
    impl Telemetry {
        pub(crate) fn new(_name: String, _max_size: usize, _min_idle: usize) -> Telemetry {
            Telemetry
        }
        #[inline(always)]
        pub(crate) fn resized(&self, _max_size: usize) {}
        #[inline(always)]
        pub(crate) fn timed_out(&self, _n: u64) {}
        #[inline(always)]
        pub(crate) fn created(&self, _took: Duration) {}
        #[inline(always)]
        pub(crate) fn waited(&self, _took: Duration) {}
        #[inline(always)]
        pub(crate) fn used(&self, _held_nanos: u64, _site: Site) {}
        #[inline(always)]
        pub(crate) fn use_nanos(&self) -> Option<u64> {
            None
        }
        #[inline(always)]
        pub(crate) fn discarded(&self, _reason: DiscardReason) {}
        #[inline(always)]
        pub(crate) fn nested_refused(&self) {}
        #[inline(always)]
        pub(crate) fn leak_warned(&self) {}
        #[inline(always)]
        pub(crate) fn statement_timed_out(&self) {}
        #[inline(always)]
        pub(crate) fn lane(&self, _connections: usize, _in_flight: usize) {}
    }
}

pub(crate) use imp::Telemetry;

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::imp::{bucket_of, midpoint_of};

    #[test]
    fn buckets_are_two_per_octave_and_midpoints_fall_inside() {
        for nanos in [
            3u64,
            5,
            100,
            1_000,
            1_499,
            1_500,
            999_999,
            1_000_000_000,
            60_000_000_000,
        ] {
            let mid = midpoint_of(bucket_of(nanos)) * 1e9;
            let ratio = mid / nanos as f64;
            assert!(
                (0.7..1.45).contains(&ratio),
                "{nanos} ns -> bucket midpoint {mid} ns"
            );
        }
        assert_eq!((bucket_of(0), bucket_of(1)), (0, 0));
        assert_eq!((bucket_of(2), bucket_of(3)), (3, 3));
        assert_eq!(bucket_of(u64::MAX), 79);
        assert_eq!(bucket_of(4), 4);
        assert_eq!(bucket_of(6), 5);
        assert!(bucket_of(1_400) < bucket_of(1_600));
    }
}
