//! The server goes away and comes back: restarts under load, a server absent when the
//! pool is built, refused logins, a server that accepts but never answers, and a stopped
//! postmaster.

use std::time::Duration;

use pool_core::{Error, Pool};
use tests::faults::explain::{Category, explain};
use tests::faults::health::Figures;
use tests::faults::proxy::Accept;
use tests::faults::workload::WorkloadReport;
use tests::harness::PrivateCluster;
use tokio::time::Instant;

use crate::rig::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_fast_and_immediate_under_load() {
    let _serial = serial().await;
    // Durable commits: an immediate shutdown is a crash, and an acked commit must survive
    // it (the harness's default `synchronous_commit = off` would lose the last ones).
    let cluster = PrivateCluster::builder()
        .setting("synchronous_commit", "on")
        .start()
        .await
        .unwrap();
    let mut rig = Rig::new(
        "server-restart-under-load",
        Target::Cluster(Box::new(cluster)),
        Settings::default(),
        |b| b,
    )
    .await;
    let mut figures = Figures::new(&rig.name);
    let sampler = rig.sampler();
    let mut all = WorkloadReport::default();
    for immediate in [false, true] {
        let mode = if immediate { "immediate" } else { "fast" };
        let work = rig.workload();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let down = Instant::now();
        sampler.mark(format!("stop ({mode})"));
        if immediate {
            rig.cluster().stop_immediate().await.unwrap();
        } else {
            rig.cluster().stop_fast().await.unwrap();
        }
        // Down for a moment with the workload knocking.
        tokio::time::sleep(Duration::from_millis(500)).await;
        rig.cluster().start().await.unwrap();
        sampler.mark("started");
        figures.add(
            &format!("{mode} restart: server unreachable for"),
            format!("{} ms", down.elapsed().as_millis()),
        );
        // Keep the load on for a moment after the server is back, then measure.
        tokio::time::sleep(Duration::from_millis(300)).await;
        work.signal_stop();
        let health = rig
            .health(
                &mut figures,
                &format!("{mode} restart: full health after reachable (+300 ms of load)"),
            )
            .await;
        assert!(health < Duration::from_millis(4700));
        let report = work.stop().await;
        figures.add(&format!("{mode} restart: workload"), &report);
        all.merge(report);
    }
    let sampled = sampler.stop().await;
    assert!(
        all.error_count() > 0,
        "the restarts were not noticed: {all}"
    );
    rig.check(&mut figures, &all, &sampled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_absent_at_build_time() {
    let _serial = serial().await;
    let settings = Settings {
        acquire: Duration::from_millis(600),
        ..Settings::default()
    };
    let mut rig = Rig::new(
        "server-absent-at-build-time",
        Target::Shared,
        settings,
        |b| b,
    )
    .await;
    let mut figures = Figures::new(&rig.name);
    // Nothing listens: connecting is refused.
    rig.proxy.set_accept(Accept::Refuse).await;
    // The eager constructor reports the refusal at once.
    let started = Instant::now();
    let err = Pool::builder(rig.proxy.config(&rig.direct))
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_err();
    let took = started.elapsed();
    figures.add(
        "Pool::connect against a closed port",
        format!("{err} ({} ms)", took.as_millis()),
    );
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let sampler = rig.sampler();
    // The lazy pool's callers time out, and every timeout carries the refusal.
    let work = rig.workload();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let absent = work.stop().await;
    figures.add("while absent", &absent);
    assert!(absent.ok == 0 && absent.error_count() > 0, "{absent}");
    assert_eq!(
        absent.error_count(),
        absent.errors_of(Category::AcquireTimeout),
        "{absent}"
    );
    for root in absent.roots.keys() {
        assert!(
            root.starts_with("last connect:") && root.to_lowercase().contains("refused"),
            "an acquire timeout without the refusal as its cause: {root}"
        );
    }
    // The server appears.
    rig.proxy.set_accept(Accept::Forward).await;
    let health = rig
        .health(&mut figures, "full health after the server appeared")
        .await;
    assert!(health < Duration::from_secs(5));
    let work = rig.workload();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = work.stop().await;
    assert_eq!(after.error_count(), 0, "{after}");
    let sampled = sampler.stop().await;
    let mut all = after;
    all.merge(absent);
    rig.check(&mut figures, &all, &sampled).await;
}

/// `host all <role> 127.0.0.1/32 <method>` lines ahead of the cluster's trust rules.
pub(crate) fn require_passwords(cluster: &PrivateCluster, rules: &[(&str, &str)]) {
    let path = cluster.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&path).unwrap();
    let mut new: String = rules
        .iter()
        .map(|(role, method)| format!("host all {role} 127.0.0.1/32 {method}\n"))
        .collect();
    new.push_str(&old);
    // Rewriting the file in place keeps its owner (the server's OS user).
    std::fs::write(&path, new).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_reports_the_real_cause() {
    let _serial = serial().await;
    let cluster = PrivateCluster::start_default().await.unwrap();
    {
        let admin = connect(&cluster.config()).await;
        admin
            .batch_execute(
                "CREATE ROLE app LOGIN PASSWORD 'right'; \
                 SET password_encryption = 'md5'; \
                 CREATE ROLE app_md5 LOGIN PASSWORD 'right'",
            )
            .await
            .unwrap();
    }
    require_passwords(&cluster, &[("app", "scram-sha-256"), ("app_md5", "md5")]);
    // `set` reloads the configuration (SIGHUP) and waits until it is in force.
    cluster
        .set("password_encryption", "scram-sha-256")
        .await
        .unwrap();
    let settings = Settings {
        login: Some(("app".to_owned(), Some("right".to_owned()))),
        ..Settings::default()
    };
    let mut rig = Rig::new(
        "auth-failure",
        Target::Cluster(Box::new(cluster)),
        settings,
        |b| b,
    )
    .await;
    let mut figures = Figures::new(&rig.name);
    let admin = rig.client().await;
    admin
        .batch_execute("GRANT ALL ON ledger TO app, app_md5")
        .await
        .unwrap();
    // Wrong or missing passwords: reported at once, with the server's reason, long
    // before the 10 s acquire deadline.
    for (user, password, expect) in [
        ("app", Some("wrong"), "28P01"),
        ("app_md5", Some("wrong"), "28P01"),
        ("app", None, "password missing"),
    ] {
        let mut config = rig.proxy.config(&rig.direct);
        config.user(user);
        if let Some(p) = password {
            config.password(p);
        }
        let pool = Pool::builder(config)
            .acquire_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let started = Instant::now();
        let err = pool.db().acquire().await.map(drop).unwrap_err();
        let took = started.elapsed();
        let explained = explain(&err).unwrap_or_else(|e| panic!("{e}"));
        figures.add(
            &format!("{user} with password {password:?}"),
            format!(
                "{} in {} ms: {}",
                explained.category,
                took.as_millis(),
                explained.root
            ),
        );
        assert_eq!(explained.category, Category::Connect, "{err}");
        let code = err.code().map(|c| c.code().to_owned()).unwrap_or_default();
        assert!(
            code == expect || explained.root.contains(expect),
            "{user}: expected {expect}, got {err:#?}"
        );
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    // The right password works; then it changes under a running pool.
    let sampler = rig.sampler();
    let work = rig.workload();
    tokio::time::sleep(Duration::from_millis(700)).await;
    admin
        .batch_execute("ALTER ROLE app PASSWORD 'changed'")
        .await
        .unwrap();
    let killed = rig.terminate(&admin, false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let changed = work.report();
    figures.add("backends terminated after the password change", killed);
    admin
        .batch_execute("ALTER ROLE app PASSWORD 'right'")
        .await
        .unwrap();
    work.signal_stop();
    let health = rig
        .health(&mut figures, "full health after the password was restored")
        .await;
    assert!(health < Duration::from_secs(5));
    let report = work.stop().await;
    assert!(changed.error_count() > 0, "{changed}");
    assert_roots(
        &report,
        &[
            "28P01",
            "password authentication failed",
            "terminating connection",
        ],
    );
    let sampled = sampler.stop().await;
    rig.check(&mut figures, &report, &sampled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deaf_startup_and_stopped_postmaster() {
    let _serial = serial().await;
    let cluster = PrivateCluster::start_default().await.unwrap();
    let settings = Settings {
        connect: Duration::from_millis(500),
        acquire: Duration::from_millis(1500),
        ..Settings::default()
    };
    let mut rig = Rig::new(
        "deaf-startup-and-stopped-postmaster",
        Target::Cluster(Box::new(cluster)),
        settings,
        |b| b,
    )
    .await;
    let mut figures = Figures::new(&rig.name);
    let admin = rig.client().await;
    let sampler = rig.sampler();
    let mut all = WorkloadReport::default();
    for stopped in [false, true] {
        let phase = if stopped {
            "stopped postmaster"
        } else {
            "deaf startup"
        };
        let work = rig.workload();
        tokio::time::sleep(Duration::from_millis(500)).await;
        sampler.mark(if stopped {
            "postmaster stopped, backends killed"
        } else {
            "connects deaf, backends killed"
        });
        if stopped {
            rig.cluster().pause().unwrap();
        } else {
            rig.proxy.set_accept(Accept::Deaf).await;
        }
        // Existing connections die; every new one hangs in its handshake.
        let killed = rig.terminate(&admin, false).await;
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let during = work.report();
        if stopped {
            rig.cluster().resume().unwrap();
        } else {
            rig.proxy.set_accept(Accept::Forward).await;
        }
        sampler.mark("answers again");
        work.signal_stop();
        let health = rig
            .health(
                &mut figures,
                &format!("{phase}: full health after it answers again"),
            )
            .await;
        assert!(health < Duration::from_secs(5));
        let report = work.stop().await;
        figures.add(&format!("{phase}: backends terminated"), killed);
        figures.add(&format!("{phase}: workload"), &report);
        assert!(during.errors_of(Category::AcquireTimeout) > 0, "{during}");
        // Handshakes still hanging when it answers again are reset (the proxy closes its
        // deaf sockets; a resumed postmaster finds their clients gone).
        assert_roots(
            &report,
            &[
                "connecting timed out",
                "57P01",
                "terminating connection",
                "connection reset",
            ],
        );
        all.merge(report);
    }
    let sampled = sampler.stop().await;
    rig.check(&mut figures, &all, &sampled).await;
}
