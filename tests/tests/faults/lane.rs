//! The shared lane under network faults: its shared connections reset (RST) or
//! blackholed while one-shots are in flight on them. Every one-shot finishes within its
//! deadline (the watchdog), one sent on a lost connection says it was sent, the lane
//! replaces its connections, and the server ends up with no more than `max_size`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pool_core::Error;
use tests::faults::proxy::Fault;

use crate::rig::*;

/// The tasks of [`load`], what succeeded and the errors, `kind: message`.
struct Load {
    handles: Vec<tokio::task::JoinHandle<()>>,
    ok: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
}

/// One-shots from `tasks` tasks until `stop`.
fn load(rig: &Rig, tasks: usize, stop: &Arc<AtomicBool>) -> Load {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let budget = rig.settings.acquire + rig.settings.statement;
    let handles = (0..tasks)
        .map(|t| {
            let (pool, watchdog, stop) = (
                rig.pool.clone(),
                Arc::clone(&rig.watchdog),
                Arc::clone(stop),
            );
            let (ok, errors) = (Arc::clone(&ok), Arc::clone(&errors));
            tokio::spawn(async move {
                let mut db = pool.db();
                let mut i = t as i64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let res = watchdog
                        .call(
                            "lane one-shot",
                            budget,
                            db.query_one("SELECT $1::int8", &[&i]),
                        )
                        .await;
                    match res {
                        Ok(Ok(row)) => {
                            assert_eq!(
                                row.get::<_, i64>(0),
                                i,
                                "an answer went to the wrong statement"
                            );
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => {
                            let kind = match &e {
                                Error::Broken { .. } => "broken",
                                Error::Timeout(_) => "timeout",
                                _ => "other",
                            };
                            errors.lock().unwrap().push(format!("{kind}: {e}"));
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    Load {
        handles,
        ok,
        errors,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_connections_reset_or_blackholed_under_one_shots() {
    let _serial = serial().await;
    let settings = Settings {
        statement: Duration::from_secs(1),
        ..Settings::default()
    };
    let rig = Rig::new("lane-rst-blackhole", Target::Shared, settings, |b| {
        b.shared_lane(true)
    })
    .await;
    for (fault, label) in [(Fault::Rst, "rst"), (Fault::Blackhole, "blackhole")] {
        let stop = Arc::new(AtomicBool::new(false));
        let Load {
            handles,
            ok,
            errors,
        } = load(&rig, 32, &stop);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = ok.load(Ordering::Relaxed);
        assert!(before > 0, "no one-shot succeeded before the fault");
        let hit = rig.proxy.set_existing(fault);
        // Let the lane notice, replace its connections and run again.
        let recovered = eventually(Duration::from_secs(5), || async {
            ok.load(Ordering::Relaxed) > before + 1000
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.await.unwrap();
        }
        let errors = errors.lock().unwrap().clone();
        eprintln!(
            "[lane-{label}] {hit} links hit; {} ok; {} errors: {:?}",
            ok.load(Ordering::Relaxed),
            errors.len(),
            errors.iter().take(3).collect::<Vec<_>>()
        );
        assert!(
            recovered,
            "the lane did not recover after {label}: {}",
            rig.pool.status()
        );
        for e in &errors {
            match fault {
                // Sent on a lost connection: says so.
                Fault::Rst => assert!(e.starts_with("broken") && e.contains("was sent"), "{e}"),
                // Nothing answers: the deadline, the pool's statement_timeout.
                _ => assert!(e.starts_with("timeout") || e.starts_with("broken"), "{e}"),
            }
        }
        assert!(!errors.is_empty(), "{label} failed nothing in flight");
        rig.proxy.heal().await;
    }
    let lane = rig.pool.status().lane.unwrap();
    assert!(lane.lost >= 1, "{lane:?}");
    let report = rig.watchdog.report();
    assert!(report.overruns.is_empty(), "{report}");
    // Server-side: no more of our backends than max_size once the old ones are gone.
    let admin = rig.client().await;
    let settled = eventually(Duration::from_secs(10), || async {
        rig.backends(&admin, None).await.len() <= rig.settings.max_size
    })
    .await;
    assert!(settled, "{:?}", rig.backends(&admin, None).await);
    rig.pool.close().await;
}
