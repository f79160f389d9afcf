//! Backends terminated by the server (`pg_terminate_backend`): while idle in the pool,
//! and in the middle of a statement.

use std::time::Duration;

use tests::faults::explain::Category;
use tests::faults::health::Figures;
use tests::faults::workload::WorkloadReport;
use tokio::time::Instant;

use crate::rig::*;

/// Every error the workload saw is a lost connection whose root cause is the server
/// terminating the backend.
fn assert_only_terminations(report: &WorkloadReport) {
    assert_eq!(
        report.error_count(),
        report.errors_of(Category::Broken),
        "{report}"
    );
    assert_roots(
        report,
        &["57P01", "terminating connection", "connection closed"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_backends_terminated() {
    let _serial = serial().await;
    let mut rig = Rig::new(
        "idle-backends-terminated",
        Target::Shared,
        Settings::default(),
        |b| b.validate_after_idle(Duration::from_millis(200)),
    )
    .await;
    let mut figures = Figures::new(&rig.name);
    let admin = rig.client().await;
    let sampler = rig.sampler();
    rig.warm().await;
    // Phase 1: every idle backend is terminated; the pool must replace them without a
    // single error reaching a caller.
    let killed = rig.terminate(&admin, true).await;
    assert_eq!(killed as usize, rig.settings.max_size);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let work = rig.workload();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let quiet = work.stop().await;
    figures.add("phase 1: idle backends terminated", killed);
    figures.add("phase 1: errors reaching callers", quiet.error_count());
    assert_eq!(quiet.error_count(), 0, "{quiet}");
    // Phase 2: idle backends are terminated every 100 ms while the workload runs. A
    // connection killed between its last check and its first statement surfaces as a
    // lost connection naming the server's reason.
    let work = rig.workload();
    let until = Instant::now() + Duration::from_secs(2);
    let mut kills = 0;
    while Instant::now() < until {
        kills += rig.terminate(&admin, true).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    work.signal_stop();
    let health = rig
        .health(&mut figures, "full health after the last kill")
        .await;
    let report = work.stop().await;
    figures.add("phase 2: idle backends terminated", kills);
    figures.add("phase 2: errors reaching callers", report.error_count());
    let sampled = sampler.stop().await;
    assert!(health < Duration::from_secs(5));
    assert_only_terminations(&report);
    rig.check(&mut figures, &report, &sampled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_terminated_mid_query() {
    let _serial = serial().await;
    let mut rig = Rig::new(
        "backend-terminated-mid-query",
        Target::Shared,
        Settings::default(),
        |b| b,
    )
    .await;
    let mut figures = Figures::new(&rig.name);
    let admin = rig.client().await;
    let sampler = rig.sampler();
    let mut config = rig.workload_config();
    config.mix.short_sleep = 4;
    config.mix.big_read = 2;
    let work = rig.workload_with(config);
    let until = Instant::now() + Duration::from_secs(3);
    let mut kills = 0;
    while Instant::now() < until {
        let active = rig.backends(&admin, Some("active")).await;
        if let Some(pid) = rig.rng.pick(&active) {
            let done: bool = admin
                .query_one("SELECT pg_terminate_backend($1, 5000)", &[pid])
                .await
                .unwrap()
                .get(0);
            kills += i64::from(done);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    work.signal_stop();
    let health = rig
        .health(&mut figures, "full health after the last kill")
        .await;
    let report = work.stop().await;
    let sampled = sampler.stop().await;
    figures.add("backends terminated mid-statement", kills);
    assert!(
        kills >= 5,
        "only {kills} backends were caught mid-statement"
    );
    assert!(health < Duration::from_secs(5));
    assert!(report.errors_of(Category::Broken) >= 1, "{report}");
    assert_only_terminations(&report);
    rig.check(&mut figures, &report, &sampled).await;
}
