//! `SOAK_SECS=N`: a seeded random mix of every fault for N seconds, under the workload,
//! with the sampler and the watchdog, each fault healed and full health checked within
//! 5 s. The seed is printed; `FAULTS_SEED=<seed>` replays the same sequence of faults.
//!
//! Without `SOAK_SECS` (as in CI) it runs a short soak of [`DEFAULT_SECS`] with the fixed
//! seed [`DEFAULT_SEED`], so every run exercises the mix and does so reproducibly.

use std::collections::BTreeMap;
use std::time::Duration;

use tests::faults::health::{Figures, full_health};
use tests::faults::proxy::{Accept, Fault};
use tests::faults::rng::Rng;
use tests::harness::PrivateCluster;
use tokio::time::Instant;

use crate::rig::*;

/// The length of the soak when `SOAK_SECS` is not set.
const DEFAULT_SECS: u64 = 5;
/// The seed of the soak when neither `SOAK_SECS` nor `FAULTS_SEED` is set.
const DEFAULT_SEED: u64 = 20_261_122;

const FAULTS: [&str; 14] = [
    "kill idle backends",
    "kill busy backends",
    "fast restart",
    "immediate restart",
    "stopped postmaster",
    "blackholed links",
    "latency",
    "bandwidth cap",
    "reset after K bytes",
    "closed links",
    "refused connects",
    "deaf connects",
    "slow connects",
    "total partition",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() {
    let requested = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| *s > 0);
    let secs = requested.unwrap_or(DEFAULT_SECS);
    let _serial = serial().await;
    let cluster = PrivateCluster::builder()
        .setting("synchronous_commit", "on")
        .start()
        .await
        .unwrap();
    let settings = Settings {
        max_size: 6,
        workers: 8,
        statement: Duration::from_secs(1),
        ..Settings::default()
    };
    let mut rig = Rig::new("soak", Target::Cluster(Box::new(cluster)), settings, |b| {
        b.max_lifetime(Duration::from_secs(20))
    })
    .await;
    if requested.is_none() && std::env::var_os("FAULTS_SEED").is_none() {
        rig.seed = DEFAULT_SEED;
        rig.rng = Rng::new(DEFAULT_SEED);
    }
    eprintln!(
        "soak: {secs} s, seed {} (replay with FAULTS_SEED={})",
        rig.seed, rig.seed
    );
    let mut figures = Figures::new(&rig.name);
    let mut admin = rig.client().await;
    let sampler = rig.sampler();
    let work = rig.workload();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut injected: BTreeMap<&str, u32> = BTreeMap::new();
    let mut worst_recovery = Duration::ZERO;
    let mut step = 0;
    while Instant::now() < until {
        step += 1;
        let kind = rig.rng.below(FAULTS.len() as u64) as usize;
        let name = FAULTS[kind];
        let hold = rig
            .rng
            .duration(Duration::from_millis(300), Duration::from_millis(2000));
        eprintln!("soak step {step}: {name} for {hold:?}");
        *injected.entry(name).or_default() += 1;
        let links = rig.proxy.links();
        // A restart ends the admin connection too.
        if admin.is_closed() || admin.simple_query("SELECT 1").await.is_err() {
            admin = rig.client().await;
        }
        match kind {
            0 => {
                rig.terminate(&admin, true).await;
            }
            1 => {
                for pid in rig.backends(&admin, Some("active")).await {
                    let _ = admin
                        .execute("SELECT pg_terminate_backend($1)", &[&pid])
                        .await;
                }
            }
            2 => {
                rig.cluster().stop_fast().await.unwrap();
                tokio::time::sleep(hold / 2).await;
                rig.cluster().start().await.unwrap();
            }
            3 => {
                rig.cluster().stop_immediate().await.unwrap();
                tokio::time::sleep(hold / 2).await;
                rig.cluster().start().await.unwrap();
            }
            4 => {
                rig.cluster().pause().unwrap();
                rig.terminate(&admin, false).await;
                tokio::time::sleep(hold).await;
                rig.cluster().resume().unwrap();
            }
            5 => {
                rig.proxy.set_existing(Fault::Blackhole);
                tokio::time::sleep(hold).await;
            }
            6 => {
                rig.proxy.set_all(Fault::Latency {
                    one_way: Duration::from_millis(100),
                    jitter: Duration::from_millis(20),
                });
                tokio::time::sleep(hold).await;
            }
            7 => {
                rig.proxy.set_all(Fault::Bandwidth {
                    bytes_per_sec: 128 * 1024,
                });
                tokio::time::sleep(hold).await;
            }
            8 => {
                for link in &links {
                    if rig.rng.chance(0.5) {
                        let bytes = rig.rng.below(200_000);
                        rig.proxy.set_link(link.id, Fault::RstAfter { bytes });
                    }
                }
                tokio::time::sleep(hold).await;
            }
            9 => {
                for link in &links {
                    if rig.rng.chance(0.5) {
                        rig.proxy.set_link(link.id, Fault::Fin);
                    }
                }
            }
            10..=12 => {
                let mode = match kind {
                    10 => Accept::Refuse,
                    11 => Accept::Deaf,
                    _ => Accept::Slow(Duration::from_millis(300)),
                };
                rig.proxy.set_accept(mode).await;
                rig.terminate(&admin, false).await;
                tokio::time::sleep(hold).await;
            }
            _ => {
                rig.proxy.set_existing(Fault::Blackhole);
                rig.proxy.set_accept(Accept::Deaf).await;
                tokio::time::sleep(hold).await;
            }
        }
        // Reachable again: back to full health within 5 s, under the workload.
        rig.proxy.heal().await;
        let recovery = match full_health(&rig.pool, Duration::from_secs(5)).await {
            Ok(d) => d,
            Err(e) => {
                work.signal_stop();
                panic!("soak step {step} ({name}), seed {}: {e}", rig.seed);
            }
        };
        worst_recovery = worst_recovery.max(recovery);
        let pause = rig
            .rng
            .duration(Duration::from_millis(200), Duration::from_millis(1000));
        tokio::time::sleep(pause).await;
    }
    let report = work.stop().await;
    let sampled = sampler.stop().await;
    figures.add("seed", rig.seed);
    figures.add("faults injected", format!("{step}: {injected:?}"));
    figures.add(
        "slowest return to full health",
        format!("{} ms", worst_recovery.as_millis()),
    );
    rig.check(&mut figures, &report, &sampled).await;
}
