//! Load: an exhausted pool with 25,000 waiters (FIFO, and every timeout explained), a
//! connection spike while connects are slow, and `max_lifetime` with jitter under load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_core::Error;
use tests::faults::explain::{Category, explain};
use tests::faults::health::Figures;
use tests::faults::proxy::Accept;
use tokio::time::Instant;

use crate::rig::*;

/// (arrival ticket, `Ok((service ticket, served at))` or `Err(timed out at)`)
type Entry = (u64, Result<(u64, Instant), Instant>);

/// 25,000 tasks ask a pool of 4 for a connection within one second, each willing to wait
/// 3 s; each served one holds its connection for a short statement. Those served are served in arrival order;
/// the others time out at their deadline with an error naming who holds the connections.
/// The current-thread runtime makes arrival order exact.
#[tokio::test(flavor = "current_thread")]
async fn exhaustion_and_fifo_with_25000_waiters() {
    let _serial = serial().await;
    const WAITERS: usize = 25_000;
    let settings = Settings {
        acquire: Duration::from_secs(3),
        ..Settings::default()
    };
    let rig = Rig::new("25000-waiters", Target::Shared, settings, |b| b).await;
    let mut figures = Figures::new(&rig.name);
    rig.warm().await;
    let sampler = rig.sampler();
    let watchdog = Arc::clone(&rig.watchdog);
    let arrivals = Arc::new(AtomicU64::new(0));
    let services = Arc::new(AtomicU64::new(0));
    let log: Arc<Mutex<Vec<Entry>>> = Arc::new(Mutex::new(Vec::with_capacity(WAITERS)));
    let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    sampler.mark("storm starts (250 tasks / 10 ms)");
    let mut tasks = Vec::with_capacity(WAITERS);
    // The storm arrives within one second (250 every 10 ms), so at its height some
    // 20,000 tasks wait at once, and their deadlines fall as they arrived.
    for batch in 0..WAITERS / 250 {
        if batch > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tasks.extend((0..250).map(|_| {
            let pool = rig.pool.clone();
            let watchdog = Arc::clone(&watchdog);
            let (arrivals, services, log, errors) = (
                Arc::clone(&arrivals),
                Arc::clone(&services),
                Arc::clone(&log),
                Arc::clone(&errors),
            );
            let budget = rig.settings.acquire;
            tokio::spawn(async move {
                let arrival = arrivals.fetch_add(1, Ordering::Relaxed);
                let mut db = pool.db();
                match watchdog.call("acquire", budget, db.acquire()).await {
                    Ok(Ok(mut conn)) => {
                        let served = services.fetch_add(1, Ordering::Relaxed);
                        log.lock()
                            .unwrap()
                            .push((arrival, Ok((served, Instant::now()))));
                        if let Err(e) = conn.query("SELECT pg_sleep(0.001)", &[]).await {
                            errors.lock().unwrap().push(format!("statement: {e}"));
                        }
                    }
                    Ok(Err(e)) => {
                        log.lock().unwrap().push((arrival, Err(Instant::now())));
                        match explain(&e) {
                            Ok(x) if x.category == Category::AcquireTimeout => {
                                let holders = e.as_timeout().map_or(0, |t| t.holders().len());
                                if holders == 0 || holders > 4 {
                                    errors
                                        .lock()
                                        .unwrap()
                                        .push(format!("{holders} holders named: {e}"));
                                }
                            }
                            Ok(x) => errors.lock().unwrap().push(format!("{}: {e}", x.category)),
                            Err(why) => errors.lock().unwrap().push(why),
                        }
                    }
                    Err(_) => {}
                }
            })
        }));
    }
    sampler.mark(format!("{WAITERS} arrived"));
    sampler.mark_at(
        started + rig.settings.acquire,
        "the first arrivals' deadline (3 s)",
    );
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let sampled = sampler.stop().await;
    let mut log = std::mem::take(&mut *log.lock().unwrap());
    log.sort_by_key(|(arrival, _)| *arrival);
    let served = log.iter().filter(|(_, r)| r.is_ok()).count();
    let timed_out = log.len() - served;
    // FIFO: service order follows arrival order among the served...
    let mut overtaken = 0;
    let mut last_service = None;
    for (_, r) in &log {
        if let Ok((order, _)) = r {
            if last_service.is_some_and(|l| *order < l) {
                overtaken += 1;
            }
            last_service = Some(*order);
        }
    }
    // ...and nobody was served while an earlier arrival was still waiting to time out.
    let mut served_before_earlier_timeout = 0;
    let mut earliest_later_service: Option<Instant> = None;
    for (_, r) in log.iter().rev() {
        match r {
            Ok((_, at)) => {
                earliest_later_service = Some(earliest_later_service.map_or(*at, |e| e.min(*at)));
            }
            Err(timed_out_at) => {
                if earliest_later_service
                    .is_some_and(|s| s < *timed_out_at - Duration::from_millis(5))
                {
                    served_before_earlier_timeout += 1;
                }
            }
        }
    }
    let status = rig.pool.status();
    figures.add("waiters", WAITERS);
    figures.add(
        "served / timed out",
        format!("{served} / {timed_out} in {} ms", took.as_millis()),
    );
    figures.add("served out of arrival order", overtaken);
    figures.add(
        "later arrivals served before an earlier one timed out",
        served_before_earlier_timeout,
    );
    figures.add("waiting after the storm", status.waiting);
    let errors = errors.lock().unwrap().clone();
    assert_eq!(log.len(), WAITERS);
    assert!(
        served > 100 && timed_out > 100,
        "the window did not exhaust the pool: {served} served, {timed_out} timed out"
    );
    assert_eq!(overtaken, 0, "FIFO violated");
    assert_eq!(
        served_before_earlier_timeout, 0,
        "FIFO violated across timeouts"
    );
    assert!(
        errors.is_empty(),
        "{} bad errors, first: {}",
        errors.len(),
        errors[0]
    );
    assert_eq!(status.waiting, 0, "{status}");
    assert_eq!(status.counters.timeouts as usize, timed_out);
    rig.health(&mut figures, "full health after the storm")
        .await;
    rig.check(&mut figures, &Default::default(), &sampled).await;
}

/// A spike of demand while every connect takes 300 ms: the pool opens no more
/// connections than there are tasks waiting for one, never one per retry or per poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_spike_with_slow_connects() {
    let _serial = serial().await;
    let settings = Settings {
        max_size: 32,
        acquire: Duration::from_secs(3),
        ..Settings::default()
    };
    let rig = Rig::new("spike-slow-connects", Target::Shared, settings, |b| b).await;
    let mut figures = Figures::new(&rig.name);
    rig.proxy
        .set_accept(Accept::Slow(Duration::from_millis(300)))
        .await;
    let sampler = rig.sampler();
    let watchdog = Arc::clone(&rig.watchdog);
    let peak = Arc::new(AtomicU64::new(0));
    let active = Arc::new(AtomicU64::new(0));
    let run = |n: usize, hold: Duration, budget: Duration| {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let pool = rig.pool.clone();
                let watchdog = Arc::clone(&watchdog);
                let (peak, active) = (Arc::clone(&peak), Arc::clone(&active));
                tokio::spawn(async move {
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let mut db = pool.db();
                    let res = watchdog
                        .call(
                            "acquire",
                            budget,
                            tokio::time::timeout(budget, db.acquire()),
                        )
                        .await;
                    let out = match res {
                        Ok(Ok(Ok(mut conn))) => conn
                            .query("SELECT pg_sleep($1::float8)", &[&hold.as_secs_f64()])
                            .await
                            .map(drop),
                        Ok(Ok(Err(e))) => Err(e),
                        _ => Err(Error::Closed),
                    };
                    active.fetch_sub(1, Ordering::SeqCst);
                    out
                })
            })
            .collect::<Vec<_>>();
        async move {
            let mut failures = 0;
            for t in tasks {
                if t.await.unwrap().is_err() {
                    failures += 1;
                }
            }
            failures
        }
    };
    // Spike 1: 10 tasks at once, each needing a connection for 50 ms.
    sampler.mark("10 tasks, connects take 300 ms");
    let failures = run(10, Duration::from_millis(50), rig.settings.acquire).await;
    let created_1 = rig.pool.status().counters.created;
    figures.add(
        "spike of 10: created / failures",
        format!("{created_1} / {failures}"),
    );
    assert_eq!(failures, 0);
    assert!(
        created_1 <= 10,
        "created {created_1} connections for 10 tasks"
    );
    // Spike 2: 10 more at once find 10 idle connections: nothing new is opened.
    sampler.mark("10 more");
    let failures = run(10, Duration::from_millis(50), rig.settings.acquire).await;
    let created_2 = rig.pool.status().counters.created;
    figures.add("second spike of 10: created", created_2 - created_1);
    assert_eq!(failures, 0);
    assert_eq!(
        created_2, created_1,
        "connections opened while enough were idle"
    );
    // Spike 3: 60 tasks at once, 30 of which give up after 100 ms (before any connect
    // finishes); the pool may not open more than max_size, nor more than were waiting.
    peak.store(0, Ordering::SeqCst);
    sampler.mark("60 tasks, 30 give up at 100 ms");
    let patient = run(30, Duration::from_millis(20), rig.settings.acquire);
    let impatient = run(30, Duration::from_millis(20), Duration::from_millis(100));
    let (failed_patient, _) = tokio::join!(patient, impatient);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = rig.pool.status();
    let created_3 = status.counters.created - created_2;
    let waiting_peak = peak.load(Ordering::SeqCst);
    figures.add(
        "spike of 60 (30 give up at 100 ms): created / peak concurrent demand / size",
        format!("{created_3} / {waiting_peak} / {}", status.size),
    );
    assert_eq!(failed_patient, 0);
    assert!(status.size <= 32, "{status}");
    assert!(
        created_3 + 10 <= waiting_peak,
        "created {created_3} new connections for a peak demand of {waiting_peak} with 10 idle"
    );
    rig.proxy.set_accept(Accept::Forward).await;
    rig.health(&mut figures, "full health").await;
    let sampled = sampler.stop().await;
    rig.check(&mut figures, &Default::default(), &sampled).await;
}

/// Connections reach `max_lifetime` (1 s, less up to 12.5 % jitter) under load: they are
/// replaced without a caller noticing, and not all at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_with_jitter_under_load() {
    let _serial = serial().await;
    let mut rig = Rig::new(
        "max-lifetime-jitter",
        Target::Shared,
        Settings::default(),
        |b| b.max_lifetime(Duration::from_secs(1)),
    )
    .await;
    let mut figures = Figures::new(&rig.name);
    let admin = rig.client().await;
    let sampler = rig.sampler();
    let work = rig.workload();
    // Track each backend's life from the server's side.
    let mut seen: std::collections::HashMap<i32, (Instant, Instant)> = Default::default();
    let until = Instant::now() + Duration::from_millis(4500);
    while Instant::now() < until {
        let now = Instant::now();
        for pid in rig.backends(&admin, None).await {
            seen.entry(pid).or_insert((now, now)).1 = now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    work.signal_stop();
    let health = rig.health(&mut figures, "full health").await;
    let report = work.stop().await;
    let sampled = sampler.stop().await;
    let last_sample = seen.values().map(|(_, l)| *l).max().unwrap();
    let mut lifetimes: Vec<u128> = seen
        .values()
        .filter(|(_, last)| *last < last_sample)
        .map(|(first, last)| (*last - *first).as_millis())
        .collect();
    lifetimes.sort_unstable();
    let status = rig.pool.status();
    figures.add(
        "connections replaced (expired)",
        status.counters.discarded_expired,
    );
    figures.add("observed lifetimes (ms)", format!("{lifetimes:?}"));
    assert!(health < Duration::from_secs(5));
    assert_eq!(report.error_count(), 0, "{report}");
    assert!(status.counters.discarded_expired >= 8, "{status}");
    assert!(lifetimes.len() >= 8, "{lifetimes:?}");
    let spread = lifetimes[lifetimes.len() - 1] - lifetimes[0];
    figures.add("lifetime spread (ms)", spread);
    assert!(
        spread >= 20,
        "connections expire in lockstep: {lifetimes:?}"
    );
    assert!(
        lifetimes[lifetimes.len() - 1] <= 1000 + 300,
        "a connection outlived max_lifetime by far: {lifetimes:?}"
    );
    rig.check(&mut figures, &report, &sampled).await;
}
