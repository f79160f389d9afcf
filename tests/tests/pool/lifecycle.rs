//! Close, leak warnings, acquire_many, status.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_core::Error;

use crate::common::*;

#[tokio::test]
async fn close_refuses_new_work_and_waits_for_connections_in_use() {
    let (tdb, builder) = setup().await;
    let admin = tdb.admin().await;
    let pool = builder.max_size(2).build().unwrap();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let holder_pool = pool.clone();
    let holder = tokio::spawn(async move {
        let mut db = holder_pool.db();
        let mut conn = db.acquire().await.unwrap();
        let _ = release_rx.await;
        conn.query("SELECT 1", &[]).await.map(drop)
    });
    while pool.status().in_use < 1 {
        tokio::task::yield_now().await;
    }
    // A waiter is woken with Closed rather than left hanging.
    let blocked_pool = pool.clone();
    let other = pool.clone();
    let mut db = other.db();
    let _second = db.acquire().await.unwrap();
    let waiter = tokio::spawn(async move { blocked_pool.db().acquire().await.map(drop) });
    while pool.status().waiting < 1 {
        tokio::task::yield_now().await;
    }
    let closer_pool = pool.clone();
    let closer = tokio::spawn(async move { closer_pool.close().await });
    assert!(matches!(waiter.await.unwrap(), Err(Error::Closed)));
    while !pool.is_closed() {
        tokio::task::yield_now().await;
    }
    assert!(matches!(pool.db().acquire().await, Err(Error::Closed)));
    assert!(
        !closer.is_finished(),
        "close() must wait for connections in use"
    );
    // Work in flight finishes normally.
    release_tx.send(()).unwrap();
    holder.await.unwrap().unwrap();
    drop(_second);
    closer.await.unwrap();
    assert_eq!(pool.status().size, 0);
    let gone = eventually(Duration::from_secs(3), || async {
        backends(&admin, tdb.name()).await.is_empty()
    })
    .await;
    assert!(gone, "backends left after close");
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);
impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_leaked_connection_is_reported_once_with_its_checkout_site() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    // The current-thread runtime runs the pool's background task on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);
    let (_tdb, builder) = setup().await;
    see_every_callsite();
    let pool = builder
        .max_size(1)
        .leak_threshold(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut db = pool.db();
    let conn = db.acquire().await.unwrap(); // LEAK_SITE
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(conn);
    let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("possible connection leak"))
        .collect();
    assert_eq!(warnings.len(), 1, "{out}");
    let line = include_str!("lifecycle.rs")
        .lines()
        .position(|l| l.contains("// LEAK_SITE"))
        .unwrap()
        + 1;
    assert!(
        warnings[0].contains(&format!("lifecycle.rs:{line}:")),
        "{}",
        warnings[0]
    );
    assert_eq!(pool.status().counters.leaks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_many_is_all_or_nothing_so_pairs_never_deadlock() {
    let (_tdb, builder) = setup().await;
    // Three connections, tasks that each need two: holding one while waiting for the
    // second would deadlock as soon as two tasks hold one each.
    let pool = builder
        .max_size(3)
        .acquire_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut db = pool.db();
                for _ in 0..10 {
                    let mut set = db.acquire_many(2).await?;
                    let [a, b] = set.array_mut::<2>().unwrap();
                    let params: &[&(dyn pool_core::ToSql + Sync)] = &[&i];
                    let (x, y) = tokio::try_join!(
                        a.query_one("SELECT $1::int", params),
                        b.query_one("SELECT $1::int + 1", params)
                    )?;
                    assert_eq!(x.get::<_, i32>(0) + 1, y.get::<_, i32>(0));
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let status = pool.status();
    assert_eq!(status.in_use, 0);
    assert!(status.size <= 3);
    assert_eq!(status.counters.acquires, 12 * 10 * 2);
}

#[tokio::test]
async fn status_displays_as_a_table() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(3).build().unwrap();
    let mut db = pool.db();
    let _c = db.acquire().await.unwrap();
    let shown = pool.status().to_string();
    for word in [
        "size", "max_size", "idle", "in use", "waiting", "acquires", "timeouts", "nested", "leaks",
    ] {
        assert!(shown.contains(word), "{shown}");
    }
    assert_eq!(pool.holders().len(), 1);
    assert!(pool.holders()[0].to_string().contains("lifecycle.rs"));
}

/// A connection that dies while it waits in a partly gathered `acquire_many` set is
/// replaced before the set is handed out, and the task never holds part of a set while
/// waiting for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_many_never_hands_out_a_connection_that_died_while_gathered() {
    let (tdb, builder) = setup().await;
    let admin = tdb.admin().await;
    let pool = builder.max_size(2).build().unwrap();
    let (release1, released1) = tokio::sync::oneshot::channel::<()>();
    let (release2, released2) = tokio::sync::oneshot::channel::<()>();
    let (pid_tx, mut pids) = tokio::sync::mpsc::unbounded_channel();
    for (holder, released) in [(1, released1), (2, released2)] {
        let pool = pool.clone();
        let pid_tx = pid_tx.clone();
        tokio::spawn(async move {
            let mut db = pool.db();
            let conn = db.acquire().await.unwrap();
            pid_tx.send((holder, conn.backend_pid())).unwrap();
            let _ = released.await;
        });
    }
    let (a, b) = (pids.recv().await.unwrap(), pids.recv().await.unwrap());
    // The connection of holder 1, which is released first.
    let first = if a.0 == 1 { a.1 } else { b.1 };
    let waiter_pool = pool.clone();
    let waiter = tokio::spawn(async move {
        let mut db = waiter_pool.db();
        let mut set = db.acquire_many(2).await?;
        let mut seen = Vec::new();
        for conn in set.iter_mut() {
            seen.push(
                conn.query_one("SELECT pg_backend_pid()", &[])
                    .await?
                    .get::<_, i32>(0),
            );
        }
        Ok::<_, Error>(seen)
    });
    while pool.status().waiting < 1 {
        tokio::task::yield_now().await;
    }
    // Holder 1's connection goes into the waiter's partial set; it dies there; then
    // holder 2's completes the set.
    release1.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&first])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    release2.send(()).unwrap();
    let seen = waiter
        .await
        .unwrap()
        .expect("the set must be handed out usable");
    assert_eq!(seen.len(), 2);
    assert!(!seen.contains(&first), "the dead connection was handed out");
    assert!(pool.status().counters.discarded_broken >= 1);
}
