//! The network misbehaves between the pool and the server: established connections
//! blackholed (a partition), 200 ms of latency and a bandwidth cap, connections reset
//! after K bytes of a result or closed.

use std::time::Duration;

use pool_core::{Db, Error};
use tests::faults::explain::{Category, explain};
use tests::faults::health::Figures;
use tests::faults::proxy::{Accept, Fault};
use tests::faults::watchdog::Watchdog;
use tokio::time::Instant;

use crate::rig::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_established_connections() {
    let _serial = serial().await;
    let settings = Settings {
        statement: Duration::from_secs(1),
        ..Settings::default()
    };
    let mut rig = Rig::new("blackholed-connections", Target::Shared, settings, |b| b).await;
    let mut figures = Figures::new(&rig.name);
    let sampler = rig.sampler();
    let work = rig.workload();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Every established connection stops forwarding; new ones get through.
    let ok_before = work.report().ok;
    let partitioned = rig.proxy.set_existing(Fault::Blackhole);
    let cut = Instant::now();
    let mut first_success = None;
    while cut.elapsed() < Duration::from_millis(3500) {
        if first_success.is_none() && work.report().ok > ok_before + 1 {
            first_success = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    work.signal_stop();
    let health = rig
        .health(&mut figures, "full health (partition still in place)")
        .await;
    let report = work.stop().await;
    figures.add("links blackholed", partitioned);
    figures.add(
        "first success after the cut",
        format!("{} ms", first_success.map_or(u128::MAX, |d| d.as_millis())),
    );
    assert!(
        first_success.is_some(),
        "no operation succeeded after the cut: {report}"
    );
    assert!(health < Duration::from_secs(5));
    // The partition heals: the old backends hear their clients have gone.
    rig.proxy.heal().await;
    let admin = rig.client().await;
    let settled = eventually(Duration::from_secs(5), || async {
        rig.backends(&admin, None).await.len() <= rig.settings.max_size
    })
    .await;
    assert!(settled, "partitioned backends never went away");
    let sampled = sampler.stop().await;
    assert!(report.error_count() > 0, "{report}");
    assert_categories(
        &report,
        &[
            Category::StatementTimeout,
            Category::Broken,
            Category::AcquireTimeout,
        ],
    );
    rig.check(&mut figures, &report, &sampled).await;
}

/// The first call after the fault: it must end within its deadline (else the watchdog
/// fails it), as a statement timeout.
async fn first_call_times_out<T: std::fmt::Debug>(
    watchdog: &Watchdog,
    label: &str,
    statement: Duration,
    call: impl Future<Output = Result<T, Error>>,
) {
    let first = watchdog
        .call(label, statement, call)
        .await
        .expect("the first statement overran")
        .unwrap_err();
    assert_eq!(
        explain(&first).unwrap().category,
        Category::StatementTimeout,
        "{first}"
    );
}

/// Ends the fault and checks that the pool serves a working connection again.
async fn heal_and_answer(rig: &Rig, db: &mut Db) {
    rig.proxy.heal().await;
    db.acquire()
        .await
        .unwrap()
        .query_one("SELECT 1", &[])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_after_a_timeout_keeps_its_own_deadline_during_a_partition() {
    let _serial = serial().await;
    let settings = Settings {
        max_size: 1,
        statement: Duration::from_millis(300),
        connect: Duration::from_secs(1),
        ..Settings::default()
    };
    let rig = Rig::new("partition-deadlines", Target::Shared, settings, |b| b).await;
    let mut figures = Figures::new(&rig.name);
    let watchdog = &rig.watchdog;
    let statement = rig.settings.statement;
    let mut db = rig.pool.db();
    let mut errors = Vec::new();
    // A total partition: established connections blackholed, new ones (the cancel
    // request) never answered.
    let partition = || async {
        rig.proxy.set_existing(Fault::Blackhole);
        rig.proxy.set_accept(Accept::Deaf).await;
    };
    {
        let mut conn = db.acquire().await.unwrap();
        partition().await;
        first_call_times_out(watchdog, "query", statement, conn.execute("SELECT 1", &[])).await;
        // The next call on the same connection must fail within its own deadline too,
        // not wait out the recovery of the first (cancel request + drain).
        let started = Instant::now();
        let second = watchdog
            .call("next query", statement, conn.execute("SELECT 1", &[]))
            .await;
        figures.add(
            "next query after a timed-out one",
            format!("{} ms: {second:?}", started.elapsed().as_millis()),
        );
        // It never reached the server, and says so rather than claiming a cancel.
        let Ok(Err(e)) = second else {
            panic!("the next query should time out waiting for the recovery: {second:?}")
        };
        assert!(e.to_string().contains("before it was sent"), "{e}");
        errors.push(e);
    }
    heal_and_answer(&rig, &mut db).await;
    {
        let mut conn = db.acquire().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        partition().await;
        first_call_times_out(watchdog, "insert", statement, tx.execute("SELECT 1", &[])).await;
        let started = Instant::now();
        let second = watchdog.call("rollback", statement, tx.rollback()).await;
        figures.add(
            "rollback after a timed-out statement",
            format!("{} ms: {second:?}", started.elapsed().as_millis()),
        );
        if let Ok(Err(e)) = second {
            errors.push(e);
        }
    }
    heal_and_answer(&rig, &mut db).await;
    // A slow network instead: the interrupted statement's recovery (cancel request,
    // drain, probe) succeeds, but takes several round trips.
    rig.proxy.set_all(Fault::Latency {
        one_way: Duration::from_millis(60),
        jitter: Duration::ZERO,
    });
    {
        let mut conn = db.acquire().await.unwrap();
        first_call_times_out(
            watchdog,
            "slow query",
            statement,
            conn.execute("SELECT pg_sleep(1)", &[]),
        )
        .await;
        let started = Instant::now();
        let second = watchdog
            .call(
                "next query on a slow link",
                statement,
                conn.execute("SELECT 1", &[]),
            )
            .await;
        figures.add(
            "next query after a timed-out one, 120 ms round trips",
            format!("{} ms: {second:?}", started.elapsed().as_millis()),
        );
        if let Ok(Err(e)) = second {
            errors.push(e);
        }
    }
    rig.proxy.heal().await;
    let report = watchdog.report();
    figures.add("calls", &report);
    figures.print();
    for e in &errors {
        let explained = explain(e).unwrap_or_else(|why| panic!("{why}"));
        assert!(
            matches!(
                explained.category,
                Category::Broken | Category::StatementTimeout
            ),
            "{e}"
        );
    }
    assert!(report.overruns.is_empty(), "{}", report.overruns.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_200ms_and_a_bandwidth_cap_cause_no_spurious_evictions() {
    let _serial = serial().await;
    let settings = Settings {
        acquire: Duration::from_secs(4),
        connect: Duration::from_secs(3),
        statement: Duration::from_secs(3),
        ..Settings::default()
    };
    let mut rig = Rig::new("latency-and-bandwidth", Target::Shared, settings, |b| b).await;
    let mut figures = Figures::new(&rig.name);
    // 200 ms round trips (100 ms ± 20 ms each way), from the first handshake on.
    rig.proxy.set_all(Fault::Latency {
        one_way: Duration::from_millis(100),
        jitter: Duration::from_millis(20),
    });
    let sampler = rig.sampler();
    let work = rig.workload();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let slow = work.stop().await;
    figures.add("200 ms round trips", &slow);
    // 256 KiB/s each way: a 200 KB result takes most of a second.
    rig.proxy.set_all(Fault::Bandwidth {
        bytes_per_sec: 256 * 1024,
    });
    let mut config = rig.workload_config();
    config.mix.big_read = 4;
    let work = rig.workload_with(config);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    work.signal_stop();
    let health = rig
        .health(&mut figures, "full health on the capped link")
        .await;
    let capped = work.stop().await;
    figures.add("256 KiB/s", &capped);
    let sampled = sampler.stop().await;
    let status = rig.pool.status();
    figures.add(
        "connections created / discarded",
        format!(
            "{} / {}",
            status.counters.created,
            status.counters.discarded()
        ),
    );
    assert!(health < Duration::from_secs(5));
    assert_eq!(slow.error_count(), 0, "{slow}");
    assert_eq!(capped.error_count(), 0, "{capped}");
    assert!(
        slow.ok >= 5 && capped.ok >= 5,
        "too little work done:\n{slow}\n{capped}"
    );
    // No connection was evicted for being slow.
    assert_eq!(status.counters.discarded(), 0, "{status}");
    assert!(
        status.counters.created <= rig.settings.max_size as u64,
        "{status}"
    );
    let mut all = slow;
    all.merge(capped);
    rig.check(&mut figures, &all, &sampled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reset_after_k_bytes_or_closed_mid_result() {
    let _serial = serial().await;
    let mut rig = Rig::new(
        "reset-after-k-bytes",
        Target::Shared,
        Settings::default(),
        |b| b,
    )
    .await;
    let mut figures = Figures::new(&rig.name);
    let sampler = rig.sampler();
    let mut config = rig.workload_config();
    config.mix.big_read = 4;
    let work = rig.workload_with(config);
    let until = Instant::now() + Duration::from_secs(3);
    let (mut resets, mut fins) = (0, 0);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let links = rig.proxy.links();
        let Some(link) = rig.rng.pick(&links) else {
            continue;
        };
        // Mostly resets somewhere inside the next result (200 KB for a big read), some
        // immediate resets and orderly closes.
        let fault = match rig.rng.below(10) {
            0 => Fault::Rst,
            1 | 2 => Fault::Fin,
            _ => Fault::RstAfter {
                bytes: rig.rng.below(250_000),
            },
        };
        if matches!(fault, Fault::Fin) {
            fins += 1;
        } else {
            resets += 1;
        }
        rig.proxy.set_link(link.id, fault);
    }
    work.signal_stop();
    let health = rig
        .health(&mut figures, "full health after the last reset")
        .await;
    let report = work.stop().await;
    let sampled = sampler.stop().await;
    let proxy = rig.proxy.counters();
    figures.add(
        "faults injected",
        format!(
            "{resets} resets armed ({} fired), {fins} closes ({} fired)",
            proxy.resets, proxy.fins
        ),
    );
    assert!(health < Duration::from_secs(5));
    assert!(proxy.resets >= 5, "{proxy:?}");
    assert!(report.errors_of(Category::Broken) > 0, "{report}");
    assert_categories(&report, &[Category::Broken, Category::AcquireTimeout]);
    rig.check(&mut figures, &report, &sampled).await;
}
