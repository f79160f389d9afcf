//! The server's own limits and what borrowers leave behind: session state reset under
//! faults, the server's idle timeouts, and `max_connections` reached.

use std::sync::Arc;
use std::time::Duration;

use tests::faults::explain::{Category, explain, sqlstate};
use tests::faults::health::Figures;
use tests::faults::ledger::Write;
use tests::faults::workload::{WorkloadReport, record_error};
use tests::harness::PrivateCluster;
use tokio::time::Instant;

use crate::rig::*;

/// Every borrower dirties its session (SET, search_path, temp table, LISTEN, advisory
/// lock, PREPARE) and then returns normally, is cancelled mid-statement, or loses its
/// backend. Every next borrower finds a clean session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_is_reset_under_faults() {
    let _serial = serial().await;
    let settings = Settings {
        max_size: 3,
        ..Settings::default()
    };
    let rig = Rig::new("session-state-reset", Target::Shared, settings, |b| b).await;
    let mut figures = Figures::new(&rig.name);
    let admin = Arc::new(rig.client().await);
    let sampler = rig.sampler();
    let report = Arc::new(std::sync::Mutex::new(WorkloadReport::default()));
    let until = Instant::now() + Duration::from_secs(3);
    let mut rng = tests::faults::rng::Rng::new(rig.seed);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let pool = rig.pool.clone();
            let admin = Arc::clone(&admin);
            let report = Arc::clone(&report);
            let watchdog = Arc::clone(&rig.watchdog);
            let statement = rig.settings.statement;
            let acquire = rig.settings.acquire;
            let mut rng = rng.fork();
            tokio::spawn(async move {
                let mut db = pool.db();
                let (mut checked, mut dirty, mut killed, mut dropped) = (0u64, Vec::new(), 0u64, 0u64);
                while Instant::now() < until {
                    let mut conn = match watchdog.call("acquire", acquire, db.acquire()).await {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => {
                            record_error(&report, &e);
                            continue;
                        }
                        Err(_) => continue,
                    };
                    let pid = conn.backend_pid();
                    // What the previous borrower left behind, if anything.
                    let probe = conn
                        .query_one(
                            "SELECT current_setting('work_mem'), current_setting('search_path'), \
                             to_regclass('pg_temp.scratch') IS NULL, \
                             (SELECT count(*) FROM pg_listening_channels()), \
                             (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()), \
                             (SELECT count(*) FROM pg_prepared_statements WHERE name = 'mine')",
                            &[],
                        )
                        .await;
                    match probe {
                        Ok(row) => {
                            checked += 1;
                            let state = (
                                row.get::<_, String>(0),
                                row.get::<_, String>(1),
                                row.get::<_, bool>(2),
                                row.get::<_, i64>(3),
                                row.get::<_, i64>(4),
                                row.get::<_, i64>(5),
                            );
                            let clean = ("4MB".to_owned(), "\"$user\", public".to_owned(), true, 0, 0, 0);
                            if state != clean {
                                dirty.push(format!("backend {pid} handed out with {state:?}"));
                            }
                        }
                        Err(e) => {
                            record_error(&report, &e);
                            continue;
                        }
                    }
                    // Dirty everything.
                    let dirtied = async {
                        conn.set("work_mem", "7MB").await?;
                        conn.batch_execute("SET search_path TO pg_catalog").await?;
                        conn.batch_execute("CREATE TEMP TABLE scratch (x int)").await?;
                        conn.listen("events").await?;
                        conn.query("SELECT pg_advisory_lock(42 + pg_backend_pid())", &[]).await?;
                        conn.batch_execute("PREPARE mine AS SELECT 1").await?;
                        Ok::<_, pool_core::Error>(())
                    };
                    if let Ok(Err(e)) = watchdog.call("dirty the session", statement * 6, dirtied).await {
                        record_error(&report, &e);
                    }
                    match rng.below(4) {
                        // Cancelled in the middle of a statement.
                        0 => {
                            dropped += 1;
                            let _ = tokio::time::timeout(
                                rng.duration(Duration::ZERO, Duration::from_millis(3)),
                                conn.query("SELECT pg_sleep(0.01)", &[]),
                            )
                            .await;
                        }
                        // The backend dies while the session is dirty.
                        1 => {
                            killed += 1;
                            let _ = admin
                                .execute("SELECT pg_terminate_backend($1, 5000)", &[&pid])
                                .await;
                        }
                        _ => {}
                    }
                    drop(conn);
                }
                (checked, dirty, killed, dropped)
            })
        })
        .collect();
    let (mut checked, mut dirty, mut killed, mut dropped) = (0, Vec::new(), 0, 0);
    for t in tasks {
        let (c, d, k, x) = t.await.unwrap();
        checked += c;
        dirty.extend(d);
        killed += k;
        dropped += x;
    }
    let health = rig.health(&mut figures, "full health").await;
    let sampled = sampler.stop().await;
    let status = rig.pool.status();
    figures.add(
        "borrowers checked / dirty",
        format!("{checked} / {}", dirty.len()),
    );
    figures.add(
        "dirty sessions returned / cancelled mid-statement / backend killed",
        format!(
            "{} resets / {dropped} / {killed}",
            status.counters.resets_on_return
        ),
    );
    assert!(health < Duration::from_secs(5));
    assert!(checked > 50, "{checked}");
    let mut report = Arc::try_unwrap(report).unwrap().into_inner().unwrap();
    report.bad_handouts.extend(dirty);
    rig.check(&mut figures, &report, &sampled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_idle_timeouts() {
    let _serial = serial().await;
    let cluster = PrivateCluster::builder()
        .setting("idle_session_timeout", "500ms")
        .setting("idle_in_transaction_session_timeout", "300ms")
        .start()
        .await
        .unwrap();
    // Validating connections idle longer than 200 ms (below the server's 500 ms) keeps
    // idle sessions the server ended from reaching callers.
    let mut rig = Rig::new(
        "server-idle-timeouts",
        Target::Cluster(Box::new(cluster)),
        Settings::default(),
        |b| b.validate_after_idle(Duration::from_millis(200)),
    )
    .await;
    let mut figures = Figures::new(&rig.name);
    let sampler = rig.sampler();
    // idle_session_timeout: bursts of work separated by idle gaps longer than 500 ms.
    let mut bursts = WorkloadReport::default();
    for _ in 0..3 {
        let work = rig.workload();
        tokio::time::sleep(Duration::from_millis(400)).await;
        bursts.merge(work.stop().await);
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let ended_idle = rig.pool.status().counters.discarded();
    figures.add(
        "idle_session_timeout 500 ms: sessions the server ended",
        ended_idle,
    );
    figures.add("idle_session_timeout 500 ms: workload", &bursts);
    assert!(
        ended_idle >= 4,
        "the server ended no idle session: {}",
        rig.pool.status()
    );
    assert_eq!(bursts.error_count(), 0, "{bursts}");
    // idle_in_transaction_session_timeout: a borrower dawdles 600 ms inside its
    // transaction; the server ends the session, and the caller is told why.
    let work = rig.workload();
    let mut caught = Vec::new();
    let mut db = rig.pool.db();
    for _ in 0..3 {
        let mut write = Write::start(&rig.ledger);
        let id = write.id();
        let res = async {
            let mut conn = db.acquire().await?;
            let mut tx = conn.begin().await?;
            tx.execute("INSERT INTO ledger (id, worker) VALUES ($1, 99)", &[&id])
                .await?;
            tokio::time::sleep(Duration::from_millis(600)).await;
            tx.execute("INSERT INTO ledger (id, worker) VALUES ($1, 99)", &[&-id])
                .await?;
            write.commit_sent();
            tx.commit().await
        }
        .await;
        match res {
            Ok(()) => {
                write.acked();
                panic!(
                    "a transaction idle for 600 ms survived idle_in_transaction_session_timeout"
                );
            }
            Err(e) => {
                write.failed(false);
                caught.push(e);
            }
        }
    }
    work.signal_stop();
    let health = rig.health(&mut figures, "full health").await;
    let report = work.stop().await;
    for e in &caught {
        let explained = explain(e).unwrap_or_else(|why| panic!("{why}"));
        figures.add(
            "a transaction idle for 600 ms",
            format!("{}: {}", explained.category, explained.root),
        );
        assert_eq!(explained.category, Category::Broken, "{e}");
        assert_eq!(
            sqlstate(e).as_deref(),
            Some("25P03"),
            "the server's reason is lost: {e:#?}"
        );
    }
    let sampled = sampler.stop().await;
    assert!(health < Duration::from_secs(5));
    let mut all = bursts;
    all.merge(report);
    rig.check(&mut figures, &all, &sampled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_reached() {
    let _serial = serial().await;
    // 10 connections, 3 of them reserved for superusers: 7 for `app`.
    let cluster = PrivateCluster::builder()
        .setting("max_connections", "10")
        .setting("superuser_reserved_connections", "3")
        .start()
        .await
        .unwrap();
    connect(&cluster.config())
        .await
        .batch_execute("CREATE ROLE app LOGIN")
        .await
        .unwrap();
    let settings = Settings {
        login: Some(("app".to_owned(), None)),
        acquire: Duration::from_secs(1),
        ..Settings::default()
    };
    let mut rig = Rig::new(
        "max-connections",
        Target::Cluster(Box::new(cluster)),
        settings,
        |b| b,
    )
    .await;
    let mut figures = Figures::new(&rig.name);
    rig.client()
        .await
        .batch_execute("GRANT ALL ON ledger TO app")
        .await
        .unwrap();
    // Another client of the server takes all 7 slots.
    let mut hog_config = rig.direct.clone();
    hog_config.user("app");
    let mut hogs = Vec::new();
    for _ in 0..7 {
        hogs.push(connect(&hog_config).await);
    }
    let sampler = rig.sampler();
    let limit_named = |report: &WorkloadReport| {
        report
            .roots
            .keys()
            .filter(|root| root.contains("too many clients") || root.contains("reserved"))
            .count()
    };
    // Phase 1: no slot at all. Every acquire times out, naming the server's limit.
    let work = rig.workload();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let full = work.stop().await;
    figures.add("all 7 slots taken", &full);
    assert_eq!(full.ok, 0, "{full}");
    assert_eq!(
        full.error_count(),
        full.errors_of(Category::AcquireTimeout),
        "{full}"
    );
    assert!(
        full.error_count() > 0 && limit_named(&full) == full.roots.len(),
        "{full}"
    );
    // Phase 2: two slots free. The pool works with two connections and keeps asking,
    // without a retry storm, for the two it lacks.
    hogs.truncate(5);
    let failures_before = rig.pool.status().counters.connect_failures;
    let work = rig.workload();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let attempts = rig.pool.status().counters.connect_failures - failures_before;
    // Phase 3: the other client goes away.
    drop(hogs);
    work.signal_stop();
    let health = rig
        .health(&mut figures, "full health after the slots were freed")
        .await;
    let partial = work.stop().await;
    let sampled = sampler.stop().await;
    figures.add("5 of 7 slots taken", &partial);
    figures.add("connect attempts refused in those 2 s", attempts);
    assert!(
        partial.ok > 0,
        "the pool did not work with its 2 slots: {partial}"
    );
    assert!(health < Duration::from_secs(5));
    // Backoff from 25 ms doubling to a 1 s cap after each success: about 7 in 2 s, one
    // probe at a time however many tasks wait.
    assert!(
        attempts <= 10,
        "{attempts} connect attempts in 2 s against a full server"
    );
    let mut report = full;
    report.merge(partial);
    rig.check(&mut figures, &report, &sampled).await;
}
