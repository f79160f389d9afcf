//! The shared lane: `Db` one-shots pipelined on shared connections, against the real
//! server — results, errors of one statement not touching its neighbours, deadlines
//! without cancel requests, dropped futures, server connection counts, and checkouts
//! next to the lane.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pool_core::{Error, Pool, TimeoutKind};

use crate::common::*;

/// The most of our backends seen at once while `work` runs.
async fn most_backends<F: std::future::Future>(
    admin: &tokio_postgres::Client,
    dbname: &str,
    work: F,
) -> (F::Output, usize) {
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = async {
        while !done.load(Ordering::Relaxed) {
            let n = backends(admin, dbname).await.len();
            most.fetch_max(n, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let work = async {
        let out = work.await;
        done.store(true, Ordering::Relaxed);
        out
    };
    let (out, ()) = tokio::join!(work, watch);
    (out, most.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shots_share_connections_within_max_size() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    let pool = builder.max_size(2).shared_lane(true).build().unwrap();
    let (results, most) = most_backends(&admin, tdb.name(), async {
        let tasks: Vec<_> = (0..200_i64)
            .map(|t| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut db = pool.db();
                    let mut sum = 0_i64;
                    for k in 0..20_i64 {
                        let v: i64 = db
                            .query_one("SELECT $1::int8 + $2::int8", &[&t, &k])
                            .await
                            .unwrap()
                            .get(0);
                        assert_eq!(v, t + k);
                        sum += v;
                    }
                    sum
                })
            })
            .collect();
        let mut all = 0_i64;
        for t in tasks {
            all += t.await.unwrap();
        }
        all
    })
    .await;
    let want: i64 = (0..200_i64)
        .map(|t| (0..20).map(|k| t + k).sum::<i64>())
        .sum();
    assert_eq!(results, want);
    assert!(most <= 2, "{most} server connections for a pool of 2");
    let status = pool.status();
    let lane = status.lane.clone().unwrap();
    assert_eq!(lane.statements, 4000, "{status}");
    // No checkout was needed for any of them: only the lane's own, one per connection.
    assert!(
        status.counters.acquires <= 2,
        "the lane checked out {} times for 2 connections: {status}",
        status.counters.acquires
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_one_shot_affects_no_neighbour() {
    let (tdb, builder) = setup().await;
    tdb.batch_execute("CREATE TABLE u (id int PRIMARY KEY)")
        .await;
    let pool = builder.max_size(1).shared_lane(true).build().unwrap();
    let failures = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..300_i32)
        .map(|i| {
            let (pool, failures) = (pool.clone(), Arc::clone(&failures));
            tokio::spawn(async move {
                let mut db = pool.db();
                let res = match i % 100 {
                    // Division by zero, a unique violation, a refused type.
                    7 => db.query_one("SELECT 1 / 0", &[]).await.map(drop),
                    8 => db.execute("INSERT INTO u VALUES (1)", &[]).await.map(drop),
                    9 => db.query_one("SELECT $1::int4", &[&"x"]).await.map(drop),
                    _ => db
                        .query_one("SELECT $1::int4 * 2", &[&i])
                        .await
                        .map(|r| assert_eq!(r.get::<_, i32>(0), i * 2)),
                };
                if res.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // 3 divisions by zero, 3 bad types, and all inserts of 1 but the first.
    assert_eq!(failures.load(Ordering::Relaxed), 3 + 3 + 2);
    let status = pool.status();
    assert_eq!(status.lane.as_ref().unwrap().lost, 0, "{status}");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_statement_past_its_deadline_is_abandoned_not_cancelled() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    // One shared connection, so the slow statement and the fast ones share it; the
    // server cuts the slow one at the pool's statement_timeout.
    let pool = builder
        .max_size(1)
        .statement_timeout(Duration::from_secs(2))
        .shared_lane(true)
        .shared_in_flight(1024)
        .build()
        .unwrap();
    let mut warm = pool.db();
    warm.query_one("SELECT 1", &[]).await.unwrap();
    let pid_before = backends(&admin, tdb.name()).await;
    assert_eq!(pid_before.len(), 1);
    let slow = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut db = pool.db();
            db.query("SELECT pg_sleep(10)", &[])
                .timeout(Duration::from_millis(100))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fast: Vec<_> = (0..1000_i32)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut db = pool.db();
                db.query_one("SELECT $1::int4", &[&i])
                    .await
                    .map(|r| r.get::<_, i32>(0))
            })
        })
        .collect();
    let err = slow.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Timeout(t) if t.kind() == TimeoutKind::Statement),
        "{err}"
    );
    // It says what happened to it: abandoned beside others, ended by the server.
    assert!(err.to_string().contains("on a shared connection"), "{err}");
    assert_eq!(pool.status().counters.statement_timeouts, 1);
    let mut ok = 0;
    for (i, f) in fast.into_iter().enumerate() {
        assert_eq!(f.await.unwrap().unwrap(), i32::try_from(i).unwrap());
        ok += 1;
    }
    assert_eq!(ok, 1000);
    // The same backend is still in service, idle, and no cancel reached it: the
    // server's own statement_timeout ended the sleep.
    let after = backends(&admin, tdb.name()).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].0, pid_before[0].0);
    let mut db = pool.db();
    assert_eq!(
        db.query_one("SELECT 41 + 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        42
    );
    let lane = pool.status().lane.unwrap();
    assert_eq!(lane.lost, 0);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_one_shot_leaves_the_shared_connection_in_sync() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).shared_lane(true).build().unwrap();
    let mut db = pool.db();
    for i in 0..50_i32 {
        // Dropped after sending: its response is discarded when it comes.
        let dropped = tokio::time::timeout(
            Duration::from_millis(1),
            db.query("SELECT pg_sleep(0.01), $1::int4", &[&i]),
        )
        .await;
        assert!(dropped.is_err());
        let v: i32 = db
            .query_one("SELECT $1::int4 + 1000", &[&i])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, i + 1000, "a response went to the wrong statement");
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_is_served_while_the_lane_holds_every_connection() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    let pool = builder
        .max_size(2)
        .acquire_timeout(Duration::from_secs(3))
        .shared_lane(true)
        .build()
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..32)
        .map(|_| {
            let (pool, stop) = (pool.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut db = pool.db();
                while !stop.load(Ordering::Relaxed) {
                    db.query_one("SELECT 1", &[]).await.unwrap();
                }
            })
        })
        .collect();
    let grown = eventually(Duration::from_secs(5), || async {
        pool.status().lane.is_some_and(|l| l.connections == 2)
    })
    .await;
    assert!(grown, "{}", pool.status());
    // A checkout in the middle of that load: the lane gives a connection back.
    let mut db = pool.db();
    let started = tokio::time::Instant::now();
    let mut conn = db.acquire().await.unwrap();
    let waited = started.elapsed();
    conn.query_one("SELECT 1", &[]).await.unwrap();
    assert!(backends(&admin, tdb.name()).await.len() <= 2);
    drop(conn);
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    eprintln!("[lane] a checkout under lane load waited {waited:?}");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_lane_one_shots_check_out() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(2).shared_lane(false).build().unwrap();
    let mut db = pool.db();
    for _ in 0..10 {
        db.query_one("SELECT 1", &[]).await.unwrap();
    }
    let status = pool.status();
    assert!(status.lane.is_none());
    assert_eq!(status.counters.acquires, 10, "{status}");
    // A per-call deadline longer than the pool's, or none, also checks out; the lane is
    // on by default.
    let pool = Pool::builder(_tdb.config())
        .statement_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut db = pool.db();
    db.query("SELECT pg_sleep(1.2)", &[])
        .timeout(Duration::from_secs(3))
        .await
        .unwrap();
    db.query("SELECT 1", &[]).no_timeout().await.unwrap();
    let status = pool.status();
    assert_eq!(status.counters.acquires, 2, "{status}");
    assert_eq!(status.lane.as_ref().unwrap().statements, 0);
    pool.close().await;
}

#[test]
fn lane_settings_are_checked() {
    let url = "postgres://postgres@127.0.0.1/app";
    for (builder, field) in [
        (
            Pool::builder(url).shared_lane(true).shared_connections(0),
            "shared_connections",
        ),
        (
            Pool::builder(url).shared_lane(true).shared_in_flight(0),
            "shared_in_flight",
        ),
        (
            Pool::builder(url)
                .max_size(2)
                .shared_lane(true)
                .shared_connections(3),
            "shared_connections",
        ),
    ] {
        match builder.build() {
            Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected a config error on {field}, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_changing_calls_are_refused_as_one_shots_at_run_time() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).shared_lane(true).build().unwrap();
    let mut db = pool.db();
    for sql in [
        "SELECT set_config('search_path', 'x', false)",
        "SELECT set_config('search_path', 'x', true)",
        "SELECT pg_advisory_lock(42)",
        "SELECT pg_try_advisory_lock(42)",
        "SELECT pg_advisory_lock_shared(42)",
        "SELECT pg_advisory_unlock_all()",
        "SELECT pg_advisory_xact_lock(42)",
        "SELECT currval('s')",
        "SELECT lastval()",
        "SELECT setseed(0.5)",
        "SELECT dblink_connect('peer', 'dbname=x')",
        "SET search_path = x",
        "LISTEN jobs",
        "PREPARE p AS SELECT 1",
        "CREATE TEMP TABLE tt (a int)",
        "SELECT * INTO TEMP tt2 FROM generate_series(1, 2)",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "SELECT 1 FOR UPDATE",
        "DISCARD ALL",
    ] {
        let err = db.query(sql, &[]).await.unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{sql}: {err}");
    }
    // What leaves nothing behind runs.
    db.query("SELECT pg_notify('jobs', 'x')", &[])
        .await
        .unwrap();
    assert_eq!(pool.status().counters.acquires, 1, "{}", pool.status());
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lane_takes_connections_through_the_hooks() {
    let (_tdb, builder) = setup().await;
    let looks = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&looks);
    let pool = builder
        .max_size(2)
        .acquire_timeout(Duration::from_secs(3))
        .before_acquire(move |_conn| {
            // The first connection offered to anyone is refused.
            let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move { Ok(!first) })
        })
        .build()
        .unwrap();
    let mut db = pool.db();
    // A waiter stranded by the refusal would fail at acquire_timeout.
    for _ in 0..100 {
        db.query_one("SELECT 1", &[]).await.unwrap();
    }
    let status = pool.status();
    assert_eq!(status.counters.discarded_rejected, 1, "{status}");
    assert_eq!(status.lane.as_ref().unwrap().statements, 100, "{status}");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_connection_killed_mid_flight_fails_only_what_was_sent_on_it() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    let pool = builder
        .max_size(1)
        .shared_lane(true)
        .shared_in_flight(1024)
        .build()
        .unwrap();
    let mut warm = pool.db();
    warm.query_one("SELECT 1", &[]).await.unwrap();
    let pid = backends(&admin, tdb.name()).await[0].0;
    // Statements in flight on the shared connection when its backend is terminated.
    let tasks: Vec<_> = (0..200_i32)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut db = pool.db();
                // The first holds the connection busy; the others queue behind it.
                let sql = if i == 0 {
                    "SELECT $1::int4 FROM pg_sleep(0.5)"
                } else {
                    "SELECT $1::int4"
                };
                db.query_one(sql, &[&i]).await.map(|r| r.get::<_, i32>(0))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let (mut lost, mut ok) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                // Each says it was sent (it may have run), and why the connection went.
                assert!(matches!(e, Error::Broken { .. }), "{e}");
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text.push_str(&format!(": {s}"));
                    source = s.source();
                }
                assert!(text.contains("was sent"), "{text}");
                assert!(text.contains("terminating connection"), "{text}");
                lost += 1;
            }
        }
    }
    assert!(lost > 0, "the terminated backend failed nothing");
    eprintln!("[lane] backend terminated: {lost} in-flight one-shots failed, {ok} succeeded");
    // The lane replaces the connection: the next one-shots run on a new backend.
    let mut db = pool.db();
    for i in 0..20_i32 {
        let v: i32 = db.query_one("SELECT $1::int4", &[&i]).await.unwrap().get(0);
        assert_eq!(v, i);
    }
    let after = backends(&admin, tdb.name()).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0].0, pid);
    let lane = pool.status().lane.unwrap();
    assert!(lane.lost >= 1, "{lane:?}");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lanes_long_held_connections_are_not_reported_as_leaks() {
    let (_tdb, builder) = setup().await;
    let pool = builder
        .max_size(2)
        .leak_threshold(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut db = pool.db();
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < until {
        db.query_one("SELECT 1", &[]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = pool.status();
    assert!(status.lane.as_ref().unwrap().connections >= 1, "{status}");
    assert_eq!(status.counters.leaks, 0, "{status}");
    // A checkout held too long is still reported.
    let mut other = pool.db();
    let held = other.acquire().await.unwrap();
    let warned = eventually(Duration::from_secs(5), || async {
        pool.status().counters.leaks == 1
    })
    .await;
    assert!(warned, "{}", pool.status());
    drop(held);
    pool.close().await;
}
