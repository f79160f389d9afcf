//! PgBouncer in transaction mode (started by the test from the `pgbouncer` package):
//! consecutive transactions of one client run on different server connections, so named
//! prepared statements and session state do not carry over.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use pool_core::Pool;
use tests::faults::explain::chain;
use tests::faults::health::Figures;
use tests::faults::ledger::{self, Ledger};
use tests::faults::pgbouncer::PgBouncer;
use tests::faults::sampler::{Sampler, SamplerConfig};
use tests::faults::watchdog::Watchdog;
use tests::faults::workload::{Workload, WorkloadConfig};
use tests::harness::test_db;

use crate::rig::*;

/// Many tasks run parameterised statements through PgBouncer; returns the errors.
async fn hammer(pool: &Pool, tasks: usize, rounds: i32) -> Vec<String> {
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let pool = pool.clone();
            let errors = Arc::clone(&errors);
            tokio::spawn(async move {
                let mut db = pool.db();
                for i in 0..rounds {
                    let res = async {
                        let mut conn = db.acquire().await?;
                        let n: i32 = conn.query_one("SELECT $1::int + 1", &[&i]).await?.get(0);
                        assert_eq!(n, i + 1);
                        let s: String = conn
                            .query_one("SELECT $1::text || $2::text", &[&"a", &format!("{t}")])
                            .await?
                            .get(0);
                        assert_eq!(s, format!("a{t}"));
                        Ok::<_, pool_core::Error>(())
                    }
                    .await;
                    if let Err(e) = res {
                        errors.lock().unwrap().push(chain(&e));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    Arc::try_unwrap(errors).unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_transaction_mode() {
    // PgBouncer is optional on a developer's machine: without it this one test says so
    // and passes; under CI (which installs it) its absence is a failure.
    if let Err(why) = tests::faults::pgbouncer::binary() {
        assert!(std::env::var_os("CI").is_none(), "{why}");
        // Straight to stderr, past the test harness's capture, so the line is seen.
        let _ = writeln!(
            std::io::stderr(),
            "pgbouncer_transaction_mode did not run: {why}"
        );
        return;
    }
    let _serial = serial().await;
    let server = tests::harness::server().await.unwrap();
    let port = server.config().get_ports().first().copied().unwrap_or(5432);
    // Two server connections for everything: consecutive transactions of a client land
    // on either.
    let bouncer = PgBouncer::start(port, 2, &["postgres"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tdb = test_db().await;
    tdb.batch_execute(ledger::CREATE_TABLE).await;
    let mut figures = Figures::new("pgbouncer-transaction-mode");
    let seed = seed("pgbouncer-transaction-mode");
    // Without the option, named statements break, cache or no cache.
    for capacity in [256, 0] {
        let pool = Pool::builder(bouncer.config(tdb.name(), "postgres"))
            .max_size(6)
            .statement_cache_capacity(capacity)
            .build()
            .unwrap();
        let errors = hammer(&pool, 6, 30).await;
        figures.add(
            &format!("default statement handling, statement_cache_capacity({capacity})"),
            format!(
                "{} of 360 statements failed, e.g. {:?}",
                errors.len(),
                errors.first()
            ),
        );
        assert!(
            errors.iter().any(|e| e.contains("26000")),
            "named statements unexpectedly survived transaction pooling: {errors:?}"
        );
        pool.close().await;
    }
    // The leaked named statements are still on those server connections: start afresh.
    drop(bouncer);
    let bouncer = PgBouncer::start(port, 2, &["postgres"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The first PgBouncer's server connections ended with it, but their backends take a
    // moment to exit (longer on a loaded machine): the sampler below counts backends.
    let admin = tdb.connect().await;
    let old_gone = eventually(Duration::from_secs(30), || async {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&tdb.name()],
            )
            .await
            .unwrap()
            .get(0);
        n == 0
    })
    .await;
    assert!(old_gone, "the first PgBouncer's backends did not exit");
    drop(admin);
    // With the option, everything runs.
    let app = "faults-pgbouncer";
    let pool = Pool::builder(bouncer.config(tdb.name(), "postgres"))
        .application_name(app)
        .max_size(6)
        .acquire_timeout(Duration::from_secs(2))
        .statement_timeout(Duration::from_secs(2))
        .pgbouncer_transaction_mode(true)
        .build()
        .unwrap();
    let errors = hammer(&pool, 6, 30).await;
    figures.add(
        "pgbouncer_transaction_mode: 360 statements",
        format!("{} failed", errors.len()),
    );
    assert!(errors.is_empty(), "{errors:?}");
    // One-shots go on the shared lane too: a statement's first run checks out (its
    // parameter types are asked there), later runs are pipelined unnamed, each its own
    // transaction, so consecutive ones may land on either server connection.
    let texts = [
        "SELECT $1::int4 * 2",
        "SELECT $1::text || 'x'",
        "SELECT 1 / $1::int4",
    ];
    {
        let mut db = pool.db();
        db.query_one(texts[0], &[&1_i32]).await.unwrap();
        db.query_one(texts[1], &[&"1"]).await.unwrap();
        db.query_one(texts[2], &[&1_i32]).await.unwrap();
    }
    let before = pool.status();
    let tasks: Vec<_> = (0..200_i32)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut db = pool.db();
                let n: i32 = db.query_one(texts[0], &[&i]).await?.get(0);
                let s: String = db.query_one(texts[1], &[&i.to_string()]).await?.get(0);
                let affected = db.execute(texts[0], &[&i]).await?;
                // A failing neighbour fails alone.
                let zero = db.query_one(texts[2], &[&0_i32]).await.map(drop);
                Ok::<_, pool_core::Error>((n, s, affected, zero))
            })
        })
        .collect();
    for (i, t) in (0_i32..).zip(tasks) {
        let (n, s, affected, zero) = t.await.unwrap().unwrap_or_else(|e| panic!("{}", chain(&e)));
        assert_eq!(
            (n, s.as_str(), affected),
            (i * 2, format!("{i}x").as_str(), 1)
        );
        let e = zero.unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("22012"), "{}", chain(&e));
    }
    let after = pool.status();
    let lane = after.lane.as_ref().unwrap();
    let on_lane = lane.statements - before.lane.as_ref().map_or(0, |l| l.statements);
    figures.add(
        "one-shots on the shared lane",
        format!(
            "{on_lane} of 800, {} checkouts meanwhile",
            after.counters.acquires - before.counters.acquires
        ),
    );
    assert_eq!(on_lane, 800, "{after}");
    let ledger = Arc::new(Ledger::new());
    let watchdog = Arc::new(Watchdog::new(pool.clone()));
    let mut sampler_config = SamplerConfig::new(tdb.config(), tdb.name(), app, 2);
    sampler_config.application_name = None;
    sampler_config.map_holders = false;
    let sampler = Sampler::start(pool.clone(), sampler_config, None);
    let mut config = WorkloadConfig::new(Duration::from_secs(2), Duration::from_secs(2), seed);
    config.workers = 8;
    // Session advisory locks are refused in this mode (checked below); server pids are
    // PgBouncer's choice.
    config.mix.session_lock = 0;
    config.check_backend_pid = false;
    let work = Workload::start(
        pool.clone(),
        config,
        Arc::clone(&ledger),
        Arc::clone(&watchdog),
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let report = work.stop().await;
    // What stays refused, and what works instead.
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let refusals = [
        conn.set("work_mem", "7MB").await.map(drop),
        conn.prepare("SELECT 1").await.map(drop),
        conn.try_advisory_lock(1).await.map(drop),
        conn.query("SELECT $1::int", &[]).await.map(drop),
    ];
    for r in &refusals {
        assert!(matches!(r, Err(pool_core::Error::Refused { .. })), "{r:?}");
    }
    figures.add(
        "refused: SET",
        format!("{}", refusals[0].as_ref().unwrap_err()),
    );
    {
        let mut tx = conn.begin().await.unwrap();
        tx.set_local("work_mem", "7MB").await.unwrap();
        let got: String = tx
            .query_one("SELECT current_setting('work_mem')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, "7MB");
        assert!(tx.try_advisory_xact_lock(1).await.unwrap());
        tx.commit().await.unwrap();
    }
    // The parameter-type questions left no named statement on the server connections.
    let mut leftovers = 0;
    for _ in 0..10 {
        let n: i64 = conn
            .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
            .await
            .unwrap()
            .get(0);
        leftovers += n;
    }
    drop(conn);
    let sampled = sampler.stop().await;
    let verified = ledger.verify(&tdb.connect().await).await.unwrap();
    let calls = watchdog.report();
    figures.add("ledger", &verified);
    figures.add("calls", &calls);
    figures.add("invariants", &sampled);
    figures.add("workload", &report);
    figures.add("named statements left on server connections", leftovers);
    figures.print();
    assert_eq!(report.error_count(), 0, "{report}");
    assert!(report.ok > 50, "{report}");
    assert!(verified.is_consistent(), "{verified}");
    assert!(calls.overruns.is_empty(), "{}", calls.overruns.join("\n"));
    assert!(sampled.violations.is_empty(), "{:?}", sampled.violations);
    assert!(
        report.bad_handouts.is_empty() && report.unexplained.is_empty(),
        "{report}"
    );
    assert_eq!(leftovers, 0);
    assert!(sampled.max_server_backends <= 2, "{sampled}");
    pool.close().await;
    drop(bouncer);
}
