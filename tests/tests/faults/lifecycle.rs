//! Leak warnings under load, and `close()` with work in flight.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_core::Error;
use tests::faults::explain::Category;
use tests::faults::health::Figures;
use tests::faults::ledger::Write;
use tests::faults::proxy::Accept;
use tokio::time::Instant;

use crate::rig::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Connections held past `leak_threshold` while the workload runs: each such checkout
/// is reported exactly once, with its site, even when its backend dies while held; a
/// checkout returned in time is not reported.
#[tokio::test(flavor = "current_thread")]
async fn leak_warning_exactly_once() {
    let _serial = serial().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    // The current-thread runtime runs the pool's background task on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);
    let settings = Settings {
        max_size: 5,
        workers: 3,
        ..Settings::default()
    };
    let mut rig = Rig::new("leak-warning", Target::Shared, settings, |b| {
        b.leak_threshold(Duration::from_millis(300))
    })
    .await;
    let mut figures = Figures::new(&rig.name);
    let admin = rig.client().await;
    let sampler = rig.sampler();
    let work = rig.workload();
    let pool = rig.pool.clone();
    let long = tokio::spawn(async move {
        let mut db = pool.db();
        let mut conn = db.acquire().await.unwrap(); // LEAK_A
        for _ in 0..12 {
            conn.query("SELECT 1", &[]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let pool = rig.pool.clone();
    let (pid_tx, pid_rx) = tokio::sync::oneshot::channel();
    let killed = tokio::spawn(async move {
        let mut db = pool.db();
        let mut conn = db.acquire().await.unwrap(); // LEAK_B
        pid_tx.send(conn.backend_pid()).unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        conn.query("SELECT 1", &[]).await.map(drop)
    });
    let pool = rig.pool.clone();
    let brief = tokio::spawn(async move {
        let mut db = pool.db();
        let _conn = db.acquire().await.unwrap(); // NOT_A_LEAK
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let pid = pid_rx.await.unwrap();
    sampler.mark("3 checkouts: 2 long, 1 brief");
    tokio::time::sleep(Duration::from_millis(300)).await;
    sampler.mark("leak threshold (300 ms)");
    tokio::time::sleep(Duration::from_millis(150)).await;
    sampler.mark("one leaked backend terminated");
    admin
        .execute("SELECT pg_terminate_backend($1, 5000)", &[&pid])
        .await
        .unwrap();
    long.await.unwrap();
    let lost = killed.await.unwrap().unwrap_err();
    brief.await.unwrap();
    let report = work.stop().await;
    let health = rig.health(&mut figures, "full health").await;
    let sampled = sampler.stop().await;
    let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("possible connection leak"))
        .collect();
    let source = include_str!("lifecycle.rs");
    let site = |marker: &str| {
        let line = source.lines().position(|l| l.contains(marker)).unwrap() + 1;
        format!("lifecycle.rs:{line}:")
    };
    let count = |marker: &str| {
        warnings
            .iter()
            .filter(|w| w.contains(&site(marker)))
            .count()
    };
    figures.add(
        "warnings: held 1.2 s / held 1 s, backend killed / held 0.2 s / total",
        format!(
            "{} / {} / {} / {}",
            count("// LEAK_A"),
            count("// LEAK_B"),
            count("// NOT_A_LEAK"),
            warnings.len()
        ),
    );
    figures.add("the killed leaker's error", &lost);
    assert!(lost.is_closed(), "{lost}");
    let root = tests::faults::explain::explain(&lost).unwrap_or_else(|why| panic!("{why}"));
    assert!(
        root.root.contains("terminating connection"),
        "{}",
        root.root
    );
    assert_eq!(count("// LEAK_A"), 1, "{out}");
    assert_eq!(count("// LEAK_B"), 1, "{out}");
    assert_eq!(count("// NOT_A_LEAK"), 0, "{out}");
    assert_eq!(
        warnings.len() as u64,
        rig.pool.status().counters.leaks,
        "{out}"
    );
    assert!(health < Duration::from_secs(5));
    rig.check(&mut figures, &report, &sampled).await;
}

/// `close()` while transactions run, tasks wait and a slow connect is in flight: work in
/// flight finishes and commits, waiters and new acquires get `Closed` at once, `close()`
/// returns when the last connection is back (within `close_timeout`), and no backend is
/// left on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_work_in_flight() {
    let _serial = serial().await;
    let close_timeout = Duration::from_secs(3);
    let mut rig = Rig::new(
        "close-with-work-in-flight",
        Target::Shared,
        Settings::default(),
        |b| b.close_timeout(close_timeout),
    )
    .await;
    let mut figures = Figures::new(&rig.name);
    let admin = rig.client().await;
    let sampler = rig.sampler();
    let work = rig.workload();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A transaction that is still running when close() is called.
    let pool = rig.pool.clone();
    let ledger = Arc::clone(&rig.ledger);
    let (begun_tx, begun_rx) = tokio::sync::oneshot::channel();
    let long = tokio::spawn(async move {
        let mut write = Write::start(&ledger);
        let id = write.id();
        let mut db = pool.db();
        let mut conn = db.acquire().await?;
        let mut tx = conn.begin().await?;
        tx.execute("INSERT INTO ledger (id, worker) VALUES ($1, 77)", &[&id])
            .await?;
        let _ = begun_tx.send(());
        tx.query("SELECT pg_sleep(0.8)", &[]).await?;
        write.commit_sent();
        match tx.commit().await {
            Ok(()) => {
                write.acked();
                Ok(())
            }
            Err(e) => {
                write.failed(false);
                Err(e)
            }
        }
    });
    begun_rx.await.unwrap();
    // A connection being opened, slowly, when close() is called.
    rig.proxy
        .set_accept(Accept::Slow(Duration::from_millis(400)))
        .await;
    rig.terminate(&admin, true).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = rig.pool.status();
    let started = Instant::now();
    rig.pool.close().await;
    let took = started.elapsed();
    rig.watchdog.observe("close", took, close_timeout);
    let after = rig.pool.status();
    let refused_at_once = {
        let t = Instant::now();
        let r = rig.pool.db().acquire().await.map(drop);
        (r, t.elapsed())
    };
    let long = long.await.unwrap();
    let report = work.stop().await;
    let gone = eventually(Duration::from_secs(2), || async {
        rig.backends(&admin, None).await.is_empty()
    })
    .await;
    let sampled = sampler.stop().await;
    figures.add(
        "when close() was called",
        format!(
            "{} in use, {} connecting, {} waiting",
            before.in_use, before.connecting, before.waiting
        ),
    );
    figures.add("close() took", format!("{} ms", took.as_millis()));
    figures.add("size after close()", after.size);
    figures.add(
        "acquire after close()",
        format!("{:?} in {:?}", refused_at_once.0, refused_at_once.1),
    );
    figures.add("the transaction in flight", format!("{long:?}"));
    assert!(long.is_ok(), "work in flight did not finish: {long:?}");
    assert!(matches!(refused_at_once.0, Err(Error::Closed)));
    assert!(refused_at_once.1 < Duration::from_millis(50));
    assert_eq!(after.size, 0, "{after}");
    assert!(took < close_timeout, "{took:?}");
    assert!(
        gone,
        "backends left after close: {:?}",
        rig.backends(&admin, None).await
    );
    assert!(report.errors_of(Category::Closed) > 0, "{report}");
    assert_categories(&report, &[Category::Closed, Category::Broken]);
    rig.check(&mut figures, &report, &sampled).await;
}
