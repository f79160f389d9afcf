//! Metrics (feature `metrics`): after a scripted workload on the real server — acquires,
//! a wait, a timeout, a leak, a discard, a statement timeout, a nested checkout, a
//! retried transaction — every instrument has OpenTelemetry's name, unit and
//! attributes, and the value the workload implies (and `status()` agrees with).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use pool_core::{Error, PooledConn, Tx, transactional};

use crate::common::{eventually, setup};

const POOL: &str = "db.client.connection.pool.name";

/// A recorder that keeps every value (reading does not reset them), with the units
/// the descriptions gave.
struct Recorded {
    registry: Registry<Key, AtomicStorage>,
    units: Mutex<HashMap<String, Unit>>,
}

struct Installed(&'static Recorded);

impl Recorder for Installed {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

impl Installed {
    fn describe(&self, key: KeyName, unit: Option<Unit>) {
        if let Some(unit) = unit {
            self.0
                .units
                .lock()
                .unwrap()
                .insert(key.as_str().to_owned(), unit);
        }
    }
}

/// The process-wide recorder, installed once (other tests' pools may record into it
/// too; every lookup here filters by this test's pool name).
fn recorded() -> &'static Recorded {
    static RECORDED: OnceLock<&'static Recorded> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let recorded: &'static Recorded = Box::leak(Box::new(Recorded {
            registry: Registry::atomic(),
            units: Mutex::new(HashMap::new()),
        }));
        metrics::set_global_recorder(Installed(recorded)).expect("no other global recorder");
        recorded
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One instrument as recorded.
#[derive(Debug)]
struct Seen {
    kind: Kind,
    unit: Option<Unit>,
    values: Vec<f64>,
}

type Seens = HashMap<(String, Vec<(String, String)>), Seen>;

/// The instruments of pool `name`, by metric name and the labels other than the name.
fn seen(name: &str) -> Seens {
    let r = recorded();
    let units = r.units.lock().unwrap().clone();
    let mut out = HashMap::new();
    let mut add = |key: Key, kind: Kind, values: Vec<f64>| {
        let labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        if !labels.iter().any(|(k, v)| k == POOL && v == name) {
            return;
        }
        let others = labels.into_iter().filter(|(k, _)| k != POOL).collect();
        let metric = key.name().to_owned();
        let unit = units.get(&metric).copied();
        out.insert((metric, others), Seen { kind, unit, values });
    };
    for (key, c) in r.registry.get_counter_handles() {
        add(key, Kind::Counter, vec![c.load(Ordering::SeqCst) as f64]);
    }
    for (key, g) in r.registry.get_gauge_handles() {
        add(
            key,
            Kind::Gauge,
            vec![f64::from_bits(g.load(Ordering::SeqCst))],
        );
    }
    for (key, h) in r.registry.get_histogram_handles() {
        add(key, Kind::Histogram, h.data());
    }
    out
}

fn values(s: &Seens, kind: Kind, metric: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    let key = (
        metric.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>(),
    );
    match s.get(&key) {
        Some(seen) if seen.kind == kind => seen.values.clone(),
        other => panic!("{metric} {labels:?} as {kind:?}: {other:?}"),
    }
}

fn gauge(s: &Seens, metric: &str, labels: &[(&str, &str)]) -> f64 {
    values(s, Kind::Gauge, metric, labels)[0]
}

fn counter(s: &Seens, metric: &str, labels: &[(&str, &str)]) -> u64 {
    values(s, Kind::Counter, metric, labels)[0] as u64
}

fn histogram(s: &Seens, metric: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    values(s, Kind::Histogram, metric, labels)
}

#[transactional(retry = 2, backoff_ms = 1)]
async fn conflicted_once(tx: &mut Tx, attempts: &AtomicU32) -> Result<(), Error> {
    if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
        tx.batch_execute(
            "DO $$ BEGIN RAISE EXCEPTION 'simulated conflict' USING ERRCODE = '40001'; END $$",
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instrument_has_its_name_unit_attributes_and_value() {
    recorded();
    let (_tdb, builder) = setup().await;
    let name = format!("metrics-test-{}", std::process::id());
    let pool = builder
        .name(name.as_str())
        .max_size(2)
        .acquire_timeout(Duration::from_millis(300))
        .leak_threshold(Duration::from_millis(100))
        .build()
        .unwrap();

    let mut db = pool.db();
    let mut a = db.acquire().await.unwrap();
    let site_a = format!("{}:{}", file!(), line!() - 1);
    a.execute("SELECT 1", &[]).await.unwrap();
    // A nested checkout in the same task is refused (and counted).
    let mut db2 = pool.db();
    assert!(matches!(
        db2.acquire().await,
        Err(Error::NestedCheckout { .. })
    ));
    // The second connection, held by another task; a third request waits, then times out.
    let (tx_hold, rx_hold) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut db = pool.db();
            let _b = db.acquire().await.unwrap();
            let _ = rx_hold.await;
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            pool.status().in_use == 2
        })
        .await
    );
    let timed_out = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.db().acquire().await.map(drop) })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            pool.status().waiting == 1
        })
        .await
    );
    // The gauges are published by the maintenance pass (every 25 ms with this
    // leak_threshold).
    let state = "db.client.connection.state";
    assert!(
        eventually(Duration::from_secs(5), || async {
            let s = seen(&name);
            gauge(&s, "db.client.connection.count", &[(state, "used")]) == 2.0
                && gauge(&s, "db.client.connection.count", &[(state, "idle")]) == 0.0
                && gauge(&s, "db.client.connection.pending_requests", &[]) == 1.0
        })
        .await,
        "{:?} / {}",
        seen(&name),
        pool.status()
    );
    let err = timed_out.await.unwrap().unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // A waiter that is served: it waits until the holder lets go.
    let served = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut db = pool.db();
            let c = db.acquire().await.unwrap();
            drop(c);
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            pool.status().waiting == 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    tx_hold.send(()).unwrap();
    holder.await.unwrap();
    served.await.unwrap();
    // `a` (and the other task's connection) held past leak_threshold: warnings.
    assert!(
        eventually(Duration::from_secs(5), || async {
            pool.status().counters.leaks >= 1
        })
        .await
    );
    // A statement past its deadline.
    assert!(
        a.execute("SELECT pg_sleep(2)", &[])
            .timeout(Duration::from_millis(50))
            .await
            .is_err()
    );
    PooledConn::release(a);
    // A transaction retried once after a serialization failure.
    let attempts = AtomicU32::new(0);
    conflicted_once(&mut db, &attempts).await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    // Discards: drain retires the idle connections.
    assert!(
        eventually(Duration::from_secs(5), || async {
            pool.status().in_use == 0
        })
        .await
    );
    pool.drain().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            pool.status().counters.discarded_retired >= 1
        })
        .await
    );

    // Until the replacements drain opened have landed: a quiet pool.
    assert!(
        eventually(Duration::from_secs(5), || async {
            let s = pool.status();
            s.connecting == 0 && s.in_use == 0
        })
        .await
    );
    // And a maintenance pass after that, which publishes what it sees.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = seen(&name);
    let status = pool.status();
    let c = status.counters.clone();
    // Gauges agree with status().
    let used = (status.in_use) as f64;
    assert_eq!(
        gauge(&s, "db.client.connection.count", &[(state, "used")]),
        used,
        "{status}"
    );
    assert_eq!(
        gauge(&s, "db.client.connection.count", &[(state, "idle")]),
        status.idle as f64,
        "{status}"
    );
    assert_eq!(gauge(&s, "db.client.connection.pending_requests", &[]), 0.0);
    assert_eq!(gauge(&s, "db.client.connection.max", &[]), 2.0);
    assert_eq!(gauge(&s, "db.client.connection.idle.max", &[]), 2.0);
    assert_eq!(gauge(&s, "db.client.connection.idle.min", &[]), 0.0);
    // Counters agree with the pool's own.
    assert_eq!(counter(&s, "db.client.connection.timeouts", &[]), 1);
    assert_eq!(c.timeouts, 1);
    assert_eq!(counter(&s, "pool_core.nested_checkout.refusals", &[]), 1);
    assert_eq!(counter(&s, "pool_core.leak.warnings", &[]), c.leaks);
    assert!(c.leaks >= 1);
    assert_eq!(counter(&s, "pool_core.statement.timeouts", &[]), 1);
    assert_eq!(counter(&s, "pool_core.transaction.retries", &[]), 1);
    let reason = "pool_core.discard.reason";
    assert_eq!(
        counter(&s, "pool_core.connection.discards", &[(reason, "retired")]),
        c.discarded_retired
    );
    assert_eq!(
        counter(&s, "pool_core.connection.discards", &[(reason, "broken")]),
        c.discarded_broken
    );
    // Histograms, in seconds.
    let created = histogram(&s, "db.client.connection.create_time", &[]);
    assert_eq!(created.len() as u64, c.created, "{status}");
    assert!(created.iter().all(|t| *t > 0.0 && *t < 10.0), "{created:?}");
    let waits = histogram(&s, "db.client.connection.wait_time", &[]);
    assert!(
        waits.iter().any(|t| *t >= 0.04),
        "the served waiter waited 50 ms: {waits:?}"
    );
    let uses = histogram(&s, "db.client.connection.use_time", &[]);
    assert!(uses.len() >= 4, "{uses:?}");
    // Hold time by site: the total (µs) and the count of checkouts that came back.
    let at_a = [("code.site", site_a.as_str())];
    assert_eq!(counter(&s, "pool_core.connection.checkouts", &at_a), 1);
    let held_a = counter(&s, "pool_core.connection.hold_time", &at_a);
    assert!(
        held_a >= 100_000,
        "`a` was held past the 100 ms leak threshold: {held_a} µs"
    );
    // Every checkout is counted at its site, and the sites' totals add up to use_time.
    let total = |metric: &str| -> (usize, u64) {
        let per_site: Vec<u64> = s
            .iter()
            .filter(|((m, _), _)| m == metric)
            .map(|(_, seen)| seen.values[0] as u64)
            .collect();
        (per_site.len(), per_site.iter().sum())
    };
    let (sites, checkouts) = total("pool_core.connection.checkouts");
    assert_eq!(checkouts, uses.len() as u64, "{sites} sites");
    let (_, held_us) = total("pool_core.connection.hold_time");
    let used_us = u64::try_from(pool.status().counters.use_time.as_micros()).unwrap();
    // Each site's counter drops the sub-microsecond rest it has not handed over yet.
    assert!(
        used_us - held_us <= sites as u64,
        "hold_time by site {held_us} µs, use_time {used_us} µs"
    );
    // Units and kinds, from the descriptions.
    for ((metric, _), seen) in &s {
        let want = if metric == "pool_core.connection.hold_time" {
            Unit::Microseconds
        } else if metric.ends_with("_time") {
            Unit::Seconds
        } else {
            Unit::Count
        };
        assert_eq!(seen.unit, Some(want), "{metric}");
    }
    for metric in [
        "db.client.connection.count",
        "db.client.connection.idle.max",
        "db.client.connection.idle.min",
        "db.client.connection.max",
        "db.client.connection.pending_requests",
        "db.client.connection.timeouts",
        "db.client.connection.create_time",
        "db.client.connection.wait_time",
        "db.client.connection.use_time",
        "pool_core.connection.hold_time",
        "pool_core.connection.checkouts",
        "pool_core.connection.discards",
        "pool_core.nested_checkout.refusals",
        "pool_core.leak.warnings",
        "pool_core.statement.timeouts",
        "pool_core.transaction.retries",
        "pool_core.shared.connections",
        "pool_core.shared.in_flight",
    ] {
        assert!(s.keys().any(|(m, _)| m == metric), "{metric} missing");
    }
}

/// What a pool gathered is handed over when it closes, and when it is dropped: the
/// maintenance pass that publishes it has stopped by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_or_dropped_pool_publishes_its_last_figures() {
    recorded();
    for close in [true, false] {
        let (_tdb, builder) = setup().await;
        let name = format!("metrics-last-{close}-{}", std::process::id());
        let pool = builder.name(name.as_str()).max_size(2).build().unwrap();
        let mut db = pool.db();
        let conn = db.acquire().await.unwrap();
        let site = format!("{}:{}", file!(), line!() - 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(conn);
        if close {
            pool.close().await;
        } else {
            drop(db);
            drop(pool);
        }
        // Well within the maintenance period (1 s): only the last publication can
        // have handed these over.
        let published = eventually(Duration::from_millis(300), || async {
            let s = seen(&name);
            s.contains_key(&(
                "pool_core.connection.checkouts".to_owned(),
                vec![("code.site".to_owned(), site.clone())],
            )) && gauge(
                &s,
                "db.client.connection.count",
                &[("db.client.connection.state", "used")],
            ) == 0.0
        })
        .await;
        let s = seen(&name);
        assert!(published, "close = {close}: {s:?}");
        let at = [("code.site", site.as_str())];
        assert_eq!(counter(&s, "pool_core.connection.checkouts", &at), 1);
        assert_eq!(histogram(&s, "db.client.connection.use_time", &[]).len(), 1);
    }
}
