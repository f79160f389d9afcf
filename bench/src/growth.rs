//! Growth under demand: how many server connections each pool keeps after a spike of
//! short requests and under sustained load, and what the requests waited. Every
//! connection is a server process, kept for `idle_timeout` (10 min in all three), so
//! connections opened for a spike that was over before they arrived are pure cost.
//!
//! Each pool starts with 5 open connections (`min_idle(5)`; deadpool, which has no
//! minimum, is warmed by 5 concurrent checkouts) and may grow to 10. Connections are
//! counted on the server (`pg_stat_activity`, by `application_name`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use crate::Plan;
use crate::stats::{median, percentile};

/// What one request does, the same for every pool.
const REQUEST: &str = "SELECT pg_sleep($1)";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    PoolCore,
    Deadpool,
    Bb8,
}

impl Peer {
    const ALL: [Peer; 3] = [Peer::PoolCore, Peer::Deadpool, Peer::Bb8];

    fn name(self) -> &'static str {
        match self {
            Peer::PoolCore => "pool-core",
            Peer::Deadpool => "deadpool",
            Peer::Bb8 => "bb8",
        }
    }
}

/// A load: `tasks` tasks each making `per_task` requests of `hold`, `rounds` times with
/// `pause` in between.
#[derive(Clone, Copy)]
struct Load {
    label: &'static str,
    tasks: usize,
    per_task: usize,
    hold: Duration,
    rounds: usize,
    pause: Duration,
}

const LOADS: [Load; 2] = [
    Load {
        label: "spike: 50 requests of 2 ms at once, 5 times, 200 ms apart",
        tasks: 50,
        per_task: 1,
        hold: Duration::from_millis(2),
        rounds: 5,
        pause: Duration::from_millis(200),
    },
    Load {
        label: "sustained: 30 tasks × 40 requests of 20 ms",
        tasks: 30,
        per_task: 40,
        hold: Duration::from_millis(20),
        rounds: 1,
        pause: Duration::ZERO,
    },
];

/// One pool under one load.
struct Outcome {
    /// Server connections open after the load.
    connections: i64,
    /// Checkout waits, nanoseconds, sorted.
    waits: Vec<u64>,
}

enum Pool {
    Core(pool_core::Pool),
    Deadpool(deadpool_postgres::Pool),
    Bb8(bb8::Pool<bb8_postgres::PostgresConnectionManager<NoTls>>),
}

impl Pool {
    async fn build(peer: Peer, config: &tokio_postgres::Config, app: &str) -> Pool {
        let mut config = config.clone();
        config.application_name(app);
        match peer {
            Peer::PoolCore => Pool::Core(
                pool_core::Pool::builder(config)
                    .min_idle(5)
                    .max_size(10)
                    .acquire_timeout(Duration::from_secs(60))
                    .build()
                    .unwrap(),
            ),
            Peer::Deadpool => {
                let manager = deadpool_postgres::Manager::from_config(
                    config,
                    NoTls,
                    deadpool_postgres::ManagerConfig {
                        recycling_method: deadpool_postgres::RecyclingMethod::Fast,
                    },
                );
                let pool = deadpool_postgres::Pool::builder(manager)
                    .max_size(10)
                    .build()
                    .unwrap();
                // No `min_idle`: five checkouts at once open five.
                let held = tokio::join!(pool.get(), pool.get(), pool.get(), pool.get(), pool.get());
                drop(held);
                Pool::Deadpool(pool)
            }
            Peer::Bb8 => {
                let manager = bb8_postgres::PostgresConnectionManager::new(config, NoTls);
                let pool = bb8::Pool::builder()
                    .min_idle(5)
                    .max_size(10)
                    .connection_timeout(Duration::from_secs(60))
                    .build(manager)
                    .await
                    .unwrap();
                Pool::Bb8(pool)
            }
        }
    }

    /// One request; returns how long the checkout waited.
    async fn request(&self, hold: f64) -> Duration {
        let started = Instant::now();
        match self {
            Pool::Core(pool) => {
                let mut db = pool.db();
                let mut conn = db.acquire().await.unwrap();
                let waited = started.elapsed();
                conn.execute(REQUEST, &[&hold]).await.unwrap();
                waited
            }
            Pool::Deadpool(pool) => {
                let conn = pool.get().await.unwrap();
                let waited = started.elapsed();
                conn.execute(REQUEST, &[&hold]).await.unwrap();
                waited
            }
            Pool::Bb8(pool) => {
                let conn = pool.get().await.unwrap();
                let waited = started.elapsed();
                conn.execute(REQUEST, &[&hold]).await.unwrap();
                waited
            }
        }
    }
}

async fn server_connections(admin: &tokio_postgres::Client, app: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0)
}

async fn run_one(peer: Peer, load: Load, config: &tokio_postgres::Config, rep: usize) -> Outcome {
    let (admin, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    let app = format!("bench-growth-{}-{rep}", peer.name());
    let pool = Arc::new(Pool::build(peer, config, &app).await);
    // Until the five are open (pool-core and bb8 open them in the background).
    let deadline = Instant::now() + Duration::from_secs(10);
    while server_connections(&admin, &app).await < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut waits = Vec::new();
    for round in 0..load.rounds {
        if round > 0 {
            tokio::time::sleep(load.pause).await;
        }
        let tasks: Vec<_> = (0..load.tasks)
            .map(|_| {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move {
                    let mut waits = Vec::with_capacity(load.per_task);
                    for _ in 0..load.per_task {
                        let waited = pool.request(load.hold.as_secs_f64()).await;
                        waits.push(u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX));
                    }
                    waits
                })
            })
            .collect();
        for task in tasks {
            waits.extend(task.await.unwrap());
        }
    }
    // Connects still under way when the load ended count too: let them land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let connections = server_connections(&admin, &app).await;
    drop(pool);
    waits.sort_unstable();
    Outcome { connections, waits }
}

/// Runs every load on every pool, interleaved, and returns the report's section.
pub(crate) fn run(plan: &Plan, config: &tokio_postgres::Config) -> String {
    let rt = crate::run::runtime(2).unwrap();
    let reps = plan.reps.min(3);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Growth under demand\n\n\
         Each pool starts with 5 connections open and may grow to 10 (deadpool has no \
         minimum: it is warmed by 5 concurrent checkouts). Connections are counted on the \
         server after the load; every one is a server process kept for `idle_timeout`. \
         Medians of {reps} interleaved runs; waits are checkout waits over all requests of \
         the run.\n\n\
         | load | pool | connections after | p50 wait | p99 wait |\n|---|---|---:|---:|---:|"
    );
    for load in LOADS {
        let mut outcomes: Vec<(Peer, Vec<Outcome>)> =
            Peer::ALL.iter().map(|&p| (p, Vec::new())).collect();
        for rep in 0..reps {
            for (peer, runs) in outcomes.iter_mut() {
                let outcome = rt.block_on(run_one(*peer, load, config, rep));
                eprintln!(
                    "growth {} {} rep {}: {} connections",
                    load.label,
                    peer.name(),
                    rep + 1,
                    outcome.connections
                );
                runs.push(outcome);
            }
        }
        for (peer, runs) in &outcomes {
            let connections: Vec<f64> = runs.iter().map(|o| o.connections as f64).collect();
            let wait = |q| -> Vec<f64> {
                runs.iter()
                    .map(|o| percentile(&o.waits, q) as f64)
                    .collect()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                load.label,
                peer.name(),
                median(&connections),
                crate::report::dur(median(&wait(50.0))),
                crate::report::dur(median(&wait(99.0))),
            );
        }
    }
    out
}
