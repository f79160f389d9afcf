//! Read replicas on real servers: a primary and streaming replicas (`pg_basebackup -R`)
//! as private clusters. Reads spread over the replicas; writes are refused on the read
//! side (by the types, the classifier and the server); a task reads its own writes
//! however slow replication is; a replica paused (`pg_wal_replay_pause()`) beyond the
//! lag bound, stopped or not a standby is passed over; the primary fails over to a
//! promoted replica under a ledger of writes. Every read runs under the watchdog.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pool_core::{Conn, Error, Pool, ReplicaFallback, with_conn};
use tests::faults::watchdog::Watchdog;
use tests::harness::PrivateCluster;
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::rig::*;

/// A primary and its streaming replicas.
struct Topology {
    primary: PrivateCluster,
    replicas: Vec<PrivateCluster>,
}

impl Topology {
    /// A primary with `n` replicas, each started with `replica_settings`.
    async fn start(n: usize, replica_settings: &[(&str, &str)]) -> Topology {
        let primary = PrivateCluster::builder()
            .setting("wal_level", "replica")
            .start()
            .await
            .unwrap();
        let admin = connect(&primary.config()).await;
        admin
            .batch_execute("CREATE TABLE item (id bigint PRIMARY KEY, note text)")
            .await
            .unwrap();
        let mut replicas = Vec::new();
        for _ in 0..n {
            let mut builder = PrivateCluster::builder();
            for (k, v) in replica_settings {
                builder = builder.setting(*k, *v);
            }
            replicas.push(builder.start_replica_of(&primary).await.unwrap());
        }
        Topology { primary, replicas }
    }

    fn builder(&self) -> pool_core::Builder {
        let mut b = Pool::builder(self.primary.url())
            .max_size(4)
            .acquire_timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(1));
        for r in &self.replicas {
            b = b.replica(r.url());
        }
        if self.replicas.is_empty() {
            b
        } else {
            b.replica_sample_interval(Duration::from_millis(20))
        }
    }
}

/// The primary's WAL insert position, and whether `replica` has replayed it.
async fn replayed(primary: &Client, replica: &Client) -> bool {
    let at: String = primary
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{at}'::pg_lsn");
    replica
        .query_one(sql.as_str(), &[])
        .await
        .unwrap()
        .get::<_, bool>(0)
}

/// Waits until the pool sees every replica usable.
async fn all_usable(pool: &Pool) {
    let ok = eventually(Duration::from_secs(10), || async {
        pool.replica_status().iter().all(|r| r.usable)
    })
    .await;
    assert!(ok, "replicas not usable: {:?}", pool.replica_status());
}

#[with_conn]
async fn insert_through(conn: &mut Conn, id: i64) -> Result<u64, Error> {
    conn.execute("INSERT INTO item VALUES ($1, 'x')", &[&id])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_spread_over_replicas_and_writes_are_refused_there() {
    let _serial = serial().await;
    let topo = Topology::start(2, &[]).await;
    let pool = topo.builder().connect().await.unwrap();
    all_usable(&pool).await;
    let names: Vec<String> = pool.replica_status().into_iter().map(|r| r.name).collect();
    let watchdog = Watchdog::new(pool.clone());
    let mut read = pool.read_db();
    let mut served: HashMap<Option<String>, u32> = HashMap::new();
    for _ in 0..200 {
        let mut conn = watchdog
            .call("read.acquire", Duration::from_secs(2), read.acquire())
            .await
            .unwrap()
            .unwrap();
        let standby: bool = conn
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap()
            .get(0);
        // Where the pool says it is, the server agrees.
        assert_eq!(standby, conn.replica().is_some());
        *served.entry(conn.replica().map(str::to_owned)).or_default() += 1;
    }
    for name in &names {
        let n = served.get(&Some(name.clone())).copied().unwrap_or(0);
        assert!(
            n >= 40,
            "replica {name} served {n} of 200 reads: {served:?}"
        );
    }
    assert_eq!(
        served.get(&None),
        None,
        "reads went to the primary: {served:?}"
    );

    // A write as a string is refused before it is sent, with what to do.
    let err = read
        .query("INSERT INTO item VALUES (1, 'x')", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Refused { reason, .. } if reason.contains("pool.db()")),
        "{err}"
    );
    let err = read.query("SELECT nextval('s')", &[]).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    // A function the classifier cannot see into: the server refuses it (read-only).
    let admin = connect(&topo.primary.config()).await;
    admin
        .batch_execute(
            "CREATE FUNCTION sneaky() RETURNS bigint LANGUAGE sql AS \
             $$ INSERT INTO item VALUES (424242, 'sneaky') RETURNING id $$",
        )
        .await
        .unwrap();
    let replica = connect(&topo.replicas[0].config()).await;
    assert!(eventually(Duration::from_secs(10), || replayed(&admin, &replica)).await);
    let err = read.query("SELECT sneaky()", &[]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("25006"), "{err}");
    // A `#[with_conn]` function given the read side writes nowhere either.
    let err = insert_through(&mut read, 7).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("25006"), "{err}");
    // A transaction on the read side is READ ONLY.
    let mut conn = read.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let ro: String = tx
        .query_one("SHOW transaction_read_only", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ro, "on");
    tx.rollback().await.unwrap();
    drop(conn);
    let none: i64 = admin
        .query_one("SELECT count(*) FROM item", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(none, 0, "a write went through the read side");
    let report = watchdog.report();
    assert!(report.overruns.is_empty(), "{report}");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replicas_reads_go_to_the_primary_read_only() {
    let _serial = serial().await;
    let topo = Topology::start(0, &[]).await;
    let pool = topo.builder().build().unwrap();
    let mut read = pool.read_db();
    let mut conn = read.acquire().await.unwrap();
    assert_eq!(conn.replica(), None);
    let ro: String = conn
        .query_one("SHOW default_transaction_read_only", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ro, "on");
    drop(conn);
    let err = insert_through(&mut read, 1).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("25006"), "{err}");
    // The primary's connection went back clean: a writer reusing it can write.
    let mut db = pool.db();
    db.execute("INSERT INTO item VALUES (1, 'x')", &[])
        .await
        .unwrap();
    assert_eq!(pool.status().size, 1, "{}", pool.status());
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reads_its_own_writes_however_slow_replication_is() {
    let _serial = serial().await;
    // Every commit is replayed 30 ms late.
    let topo = Topology::start(1, &[("recovery_min_apply_delay", "30ms")]).await;
    let pool = topo.builder().max_size(8).connect().await.unwrap();
    all_usable(&pool).await;
    let watchdog = Arc::new(Watchdog::new(pool.clone()));
    let (stale, on_replica, on_primary) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let tasks: Vec<_> = (0..20_i64)
        .map(|t| {
            let (pool, watchdog) = (pool.clone(), Arc::clone(&watchdog));
            let (stale, on_replica, on_primary) = (
                Arc::clone(&stale),
                Arc::clone(&on_replica),
                Arc::clone(&on_primary),
            );
            tokio::spawn(async move {
                let mut db = pool.db();
                let mut read = pool.read_db();
                for round in 0..25_i64 {
                    for k in 0..20_i64 {
                        let id = t * 1_000_000 + round * 100 + k;
                        db.execute("INSERT INTO item VALUES ($1, 'x')", &[&id])
                            .await
                            .unwrap();
                        // At once: the write must be there.
                        let mut conn = watchdog
                            .call("read.acquire", Duration::from_secs(2), read.acquire())
                            .await
                            .unwrap()
                            .unwrap();
                        let found = conn
                            .query_opt("SELECT id FROM item WHERE id = $1", &[&id])
                            .await
                            .unwrap();
                        if found.is_none() {
                            stale.fetch_add(1, Ordering::Relaxed);
                        }
                        let counter = if conn.replica().is_some() {
                            &on_replica
                        } else {
                            &on_primary
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    // A moment later the replica has it, and serves the task again.
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    let last = t * 1_000_000 + round * 100 + 19;
                    let mut conn = read.acquire().await.unwrap();
                    let found = conn
                        .query_opt("SELECT id FROM item WHERE id = $1", &[&last])
                        .await
                        .unwrap();
                    if found.is_none() {
                        stale.fetch_add(1, Ordering::Relaxed);
                    }
                    if conn.replica().is_some() {
                        on_replica.fetch_add(1, Ordering::Relaxed);
                    } else {
                        on_primary.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (stale, on_replica, on_primary) = (
        stale.load(Ordering::Relaxed),
        on_replica.load(Ordering::Relaxed),
        on_primary.load(Ordering::Relaxed),
    );
    eprintln!(
        "[read-your-writes] 10,000 write-then-read + 500 later reads: {on_replica} on the replica, \
         {on_primary} on the primary, {stale} stale"
    );
    assert_eq!(stale, 0, "a task did not see its own write");
    assert!(
        on_replica >= 100,
        "the later reads did not go back to the replica: {on_replica}"
    );
    let report = watchdog.report();
    assert!(report.overruns.is_empty(), "{report}");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_lag_bound_is_passed_over_until_it_catches_up() {
    let _serial = serial().await;
    let topo = Topology::start(1, &[]).await;
    let strict = topo
        .builder()
        .max_replica_lag(Duration::from_millis(300))
        .replica_fallback(ReplicaFallback::Fail)
        .connect()
        .await
        .unwrap();
    let lenient = topo
        .builder()
        .max_replica_lag(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    all_usable(&strict).await;
    all_usable(&lenient).await;
    let replica = connect(&topo.replicas[0].config()).await;
    replica
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    // Writes keep coming on the primary, so the paused replica falls behind.
    let admin = Arc::new(connect(&topo.primary.config()).await);
    let writer = {
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            for id in 0_i64.. {
                admin
                    .execute("INSERT INTO item VALUES ($1, 'w')", &[&id])
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    for pool in [&strict, &lenient] {
        let behind = eventually(Duration::from_secs(5), || async {
            pool.replica_status().iter().all(|r| !r.usable)
        })
        .await;
        assert!(behind, "{:?}", pool.replica_status());
    }
    let status = &strict.replica_status()[0];
    assert!(
        status
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("behind")),
        "{status:?}"
    );
    assert!(
        status.lag.is_some_and(|l| l > Duration::from_millis(300)),
        "{status:?}"
    );
    // Strict: the read fails and says why; lenient: it goes to the primary.
    let err = strict.read_db().query("SELECT 1", &[]).await.unwrap_err();
    assert!(
        matches!(&err, Error::NoReplica { why, .. } if why.contains("behind")),
        "{err}"
    );
    let mut read = lenient.read_db();
    let conn = read.acquire().await.unwrap();
    assert_eq!(conn.replica(), None);
    drop(conn);
    // Replay resumes: the replica catches up and serves again.
    let paused_at = Instant::now();
    replica
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    all_usable(&strict).await;
    eprintln!(
        "[replica-lag] usable again {} ms after replay resumed",
        paused_at.elapsed().as_millis()
    );
    let mut read = strict.read_db();
    let conn = read.acquire().await.unwrap();
    assert!(conn.replica().is_some());
    drop(conn);
    writer.abort();
    strict.close().await;
    lenient.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_continue_while_a_replica_is_stopped_and_restarted() {
    let _serial = serial().await;
    let topo = Topology::start(1, &[]).await;
    let pool = topo.builder().connect().await.unwrap();
    all_usable(&pool).await;
    let watchdog = Arc::new(Watchdog::new(pool.clone()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counts = Arc::new(std::sync::Mutex::new((0_u64, 0_u64, Vec::<String>::new())));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (pool, watchdog, stop, counts) = (
                pool.clone(),
                Arc::clone(&watchdog),
                Arc::clone(&stop),
                Arc::clone(&counts),
            );
            tokio::spawn(async move {
                let mut read = pool.read_db();
                while !stop.load(Ordering::Relaxed) {
                    let res = watchdog
                        .call("read.query_one", Duration::from_secs(2), async {
                            let mut conn = read.acquire().await?;
                            let on_replica = conn.replica().is_some();
                            conn.query_one("SELECT 1", &[]).await.map(|_| on_replica)
                        })
                        .await
                        .unwrap();
                    {
                        let mut c = counts.lock().unwrap();
                        match res {
                            Ok(true) => c.0 += 1,
                            Ok(false) => c.1 += 1,
                            Err(e) => c.2.push(e.to_string()),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    topo.replicas[0].stop_fast().await.unwrap();
    let down = eventually(Duration::from_secs(5), || async {
        pool.replica_status().iter().all(|r| !r.usable)
    })
    .await;
    assert!(down, "{:?}", pool.replica_status());
    let before = counts.lock().unwrap().1;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = counts.lock().unwrap().1 - before;
    assert!(
        during > 0,
        "no read went to the primary while the replica was down"
    );
    topo.replicas[0].start().await.unwrap();
    all_usable(&pool).await;
    let back = counts.lock().unwrap().0;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        counts.lock().unwrap().0 > back,
        "reads did not return to the replica"
    );
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    let (on_replica, on_primary, errors) = counts.lock().unwrap().clone();
    eprintln!(
        "[replica-restart] {on_replica} reads on the replica, {on_primary} on the primary, {} errors: {errors:?}",
        errors.len()
    );
    // Only reads already on the replica's connections when it stopped may fail, and they
    // say the connection was lost.
    assert!(errors.len() <= 4, "{errors:?}");
    for e in &errors {
        assert!(
            e.contains("connection") || e.contains("terminat") || e.contains("shut"),
            "{e}"
        );
    }
    let report = watchdog.report();
    assert!(report.overruns.is_empty(), "{report}");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_is_a_primary_is_refused_with_a_clear_error() {
    let _serial = serial().await;
    let topo = Topology::start(0, &[]).await;
    let err = Pool::builder(topo.primary.url())
        .replica(topo.primary.url())
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config { field: "replica", problem, .. } if problem.contains("not a standby")),
        "{err}"
    );
    // Built lazily instead, the status says why and reads fall back to the primary.
    let pool = Pool::builder(topo.primary.url())
        .replica(topo.primary.url())
        .replica_sample_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let said = eventually(Duration::from_secs(5), || async {
        pool.replica_status()[0]
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("not a standby"))
    })
    .await;
    assert!(said, "{:?}", pool.replica_status());
    let mut read = pool.read_db();
    assert_eq!(read.acquire().await.unwrap().replica(), None);
    pool.close().await;

    // A replica URL naming several hosts: a host that is a primary is passed over at
    // connect (libpq's `target_session_attrs=standby`), and the standby is used.
    let replica = PrivateCluster::builder()
        .start_replica_of(&topo.primary)
        .await
        .unwrap();
    let hosts = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres",
        topo.primary.port(),
        replica.port()
    );
    let pool = Pool::builder(topo.primary.url())
        .replica(hosts.as_str())
        .replica_sample_interval(Duration::from_millis(20))
        .connect()
        .await
        .unwrap();
    let mut read = pool.read_db();
    let mut conn = read.acquire().await.unwrap();
    assert!(conn.replica().is_some());
    let port: i32 = conn
        .query_one("SELECT current_setting('port')::int4", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(port, i32::from(replica.port()));
    drop(conn);
    pool.close().await;
}

/// How many rows the ledger table has.
async fn acked_rows(client: &Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM item", &[])
        .await
        .unwrap()
        .get(0)
}

/// How the old primary leaves in a failover.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Leaves {
    /// It stops (immediate shutdown: a crash).
    Stops,
    /// It stays up but answers writes with 25006 (`default_transaction_read_only`), as a
    /// demoted primary does.
    Demoted,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_fails_over_to_a_promoted_replica_under_writes() {
    failover_under_writes(Leaves::Stops).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_primary_answering_25006_is_left_for_the_promoted_replica() {
    failover_under_writes(Leaves::Demoted).await;
}

async fn failover_under_writes(leaves: Leaves) {
    let _serial = serial().await;
    // Durable commits: a commit acked by the old primary must be on the replica.
    let primary = PrivateCluster::builder()
        .setting("synchronous_commit", "on")
        .start()
        .await
        .unwrap();
    connect(&primary.config())
        .await
        .batch_execute("CREATE TABLE item (id bigint PRIMARY KEY, note text)")
        .await
        .unwrap();
    let replica = PrivateCluster::builder()
        .start_replica_of(&primary)
        .await
        .unwrap();
    // Synchronous replication: an acked commit is on the replica too.
    let admin = connect(&primary.config()).await;
    admin
        .batch_execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        .await
        .unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    drop(admin);
    let both = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres target_session_attrs=read-write",
        primary.port(),
        replica.port()
    );
    let pool = Pool::builder(both.as_str())
        .max_size(4)
        .acquire_timeout(Duration::from_secs(3))
        .connect_timeout(Duration::from_secs(1))
        .replica(replica.url())
        .replica_sample_interval(Duration::from_millis(20))
        .connect()
        .await
        .unwrap();
    let watchdog = Arc::new(Watchdog::new(pool.clone()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let last_ack = Arc::new(std::sync::Mutex::new(Instant::now()));
    let writers: Vec<_> = (0..3_i64)
        .map(|w| {
            let (pool, watchdog, stop, acked, failed, last_ack) = (
                pool.clone(),
                Arc::clone(&watchdog),
                Arc::clone(&stop),
                Arc::clone(&acked),
                Arc::clone(&failed),
                Arc::clone(&last_ack),
            );
            tokio::spawn(async move {
                let mut db = pool.db();
                let mut id = w * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    id += 1;
                    let res = watchdog
                        .call(
                            "db.execute",
                            Duration::from_secs(3),
                            db.execute("INSERT INTO item VALUES ($1, 'w')", &[&id]),
                        )
                        .await
                        .unwrap();
                    match res {
                        Ok(_) => {
                            acked.lock().unwrap().push(id);
                            *last_ack.lock().unwrap() = Instant::now();
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect();
    let reads = Arc::new(AtomicU64::new(0));
    let read_errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let (pool, stop, reads, read_errors) = (
            pool.clone(),
            Arc::clone(&stop),
            Arc::clone(&reads),
            Arc::clone(&read_errors),
        );
        tokio::spawn(async move {
            let mut read = pool.read_db();
            while !stop.load(Ordering::Relaxed) {
                match read.query_one("SELECT count(*) FROM item", &[]).await {
                    Ok(_) => {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => read_errors.lock().unwrap().push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = acked.lock().unwrap().len();
    assert!(before > 0, "no write was acked before the failover");
    // The primary goes away (or turns read-only); the replica is promoted.
    let failover = Instant::now();
    match leaves {
        Leaves::Stops => primary.stop_immediate().await.unwrap(),
        Leaves::Demoted => primary
            .set("default_transaction_read_only", "on")
            .await
            .unwrap(),
    }
    let reads_at_stop = reads.load(Ordering::Relaxed);
    replica.promote().await.unwrap();
    let promoted = Instant::now();
    // Writes resume on the promoted replica (an ack after the promotion is its).
    let resumed = eventually(Duration::from_secs(10), || async {
        *last_ack.lock().unwrap() > promoted
    })
    .await;
    let took = failover.elapsed();
    let after_promotion = promoted.elapsed();
    assert!(resumed, "writes did not resume after the failover");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    reader.await.unwrap();
    let reads_after = reads.load(Ordering::Relaxed) - reads_at_stop;
    // No acked write lost: every one is on the promoted server.
    let survivor = connect(&replica.config()).await;
    let acked = acked.lock().unwrap().clone();
    let ids: Vec<i64> = survivor
        .query("SELECT id FROM item", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let on_server: std::collections::HashSet<i64> = ids.iter().copied().collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !on_server.contains(id)).collect();
    let read_errors = read_errors.lock().unwrap().clone();
    if leaves == Leaves::Demoted {
        // Server-side truth: the pool keeps no connection to the demoted host.
        let old = connect(&primary.config()).await;
        let left = eventually(Duration::from_secs(5), || async {
            let n: i64 = old
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pool-core'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            n == 0
        })
        .await;
        assert!(
            left,
            "the pool still has connections to the demoted primary"
        );
    }
    eprintln!(
        "[failover, old primary {leaves:?}] writes resumed {} ms after the primary left ({} ms after the promotion); \
         {} acked ({before} before), {} failed, {} rows on the new primary, {reads_after} reads after it left, {} read errors",
        took.as_millis(),
        after_promotion.as_millis(),
        acked.len(),
        failed.load(Ordering::Relaxed),
        acked_rows(&survivor).await,
        read_errors.len()
    );
    assert!(lost.is_empty(), "acked writes lost: {lost:?}");
    assert!(
        took < Duration::from_secs(5),
        "writes resumed after {took:?}"
    );
    assert!(reads_after > 0, "reads stopped with the primary");
    let report = watchdog.report();
    assert!(report.overruns.is_empty(), "{report}");
    pool.close().await;
}
