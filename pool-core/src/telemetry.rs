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
//! | `pool_core.connection.hold_time` | histogram | `s` | `code.site` = `file:line` of the checkout |
//! | `pool_core.connection.discards` | counter | `{connection}` | `pool_core.discard.reason` |
//! | `pool_core.nested_checkout.refusals` | counter | `{checkout}` | |
//! | `pool_core.leak.warnings` | counter | `{warning}` | |
//! | `pool_core.statement.timeouts` | counter | `{timeout}` | |
//! | `pool_core.transaction.retries` | counter | `{retry}` | |
//!
//! Every instrument also carries `db.client.connection.pool.name` (the builder's `name`,
//! else `host:port`).

#[cfg(feature = "metrics")]
mod imp {
    use std::collections::HashMap;
    use std::sync::RwLock;
    use std::time::Duration;

    use metrics::{Counter, Gauge, Histogram, SharedString, Unit};

    use crate::status::{DiscardReason, Site};

    const POOL: &str = "db.client.connection.pool.name";

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
        /// Hold time per checkout site, by the site's address.
        hold: RwLock<HashMap<usize, Histogram>>,
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
        describe_histogram!(
            "pool_core.connection.hold_time",
            Unit::Seconds,
            "The time between borrowing a connection and returning it, by checkout site (code.site)"
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
                hold: RwLock::new(HashMap::new()),
                name: name.clone(),
            };
            gauge("db.client.connection.idle.min").set(min_idle as f64);
            t.resized(max_size);
            t.state(0, 0, 0);
            t
        }

        /// The connections and waiters now (after every change, under the pool's lock).
        #[inline]
        pub(crate) fn state(&self, idle: usize, used: usize, pending: usize) {
            self.idle.set(idle as f64);
            self.used.set(used as f64);
            self.pending.set(pending as f64);
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
            self.wait_time.record(took);
        }

        /// A connection checked out at `site` came back after `held`.
        #[inline]
        pub(crate) fn used(&self, held: Duration, site: Site) {
            self.use_time.record(held);
            let key = std::ptr::from_ref(site.0) as usize;
            let known = self
                .hold
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .map(|h| h.record(held))
                .is_some();
            if !known {
                let h = metrics::histogram!(
                    "pool_core.connection.hold_time",
                    POOL => self.name.clone(),
                    "code.site" => format!("{}:{}", site.file(), site.line())
                );
                h.record(held);
                self.hold
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, h);
            }
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
        pub(crate) fn used(&self, _held: Duration, _site: Site) {}
        #[inline(always)]
        pub(crate) fn discarded(&self, _reason: DiscardReason) {}
        #[inline(always)]
        pub(crate) fn nested_refused(&self) {}
        #[inline(always)]
        pub(crate) fn leak_warned(&self) {}
        #[inline(always)]
        pub(crate) fn statement_timed_out(&self) {}
        #[inline(always)]
        pub(crate) fn retried(&self) {}
    }
}

pub(crate) use imp::Telemetry;
