//! First come, first served: with 4 connections and 64 tasks, nobody waits while later
//! arrivals are served.

use std::sync::{Arc, Mutex};

use crate::common::*;

#[tokio::test]
async fn waiters_are_served_in_arrival_order() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(4).build().unwrap();
    // Open all four connections first so arrival order is not muddied by connects.
    {
        let mut db = pool.db();
        let _set = db.acquire_many(4).await.unwrap();
    }
    // (arrival ticket, service ticket) of every acquire. On the current-thread runtime
    // taking the arrival ticket and joining the queue happen in one poll.
    let log = Arc::new(Mutex::new(Vec::new()));
    let tickets = Arc::new(Mutex::new((0u64, 0u64)));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let pool = pool.clone();
            let log = Arc::clone(&log);
            let tickets = Arc::clone(&tickets);
            tokio::spawn(async move {
                let mut db = pool.db();
                for _ in 0..20 {
                    let arrival = {
                        let mut t = tickets.lock().unwrap();
                        t.0 += 1;
                        t.0
                    };
                    let mut conn = db.acquire().await.unwrap();
                    let served = {
                        let mut t = tickets.lock().unwrap();
                        t.1 += 1;
                        t.1
                    };
                    log.lock().unwrap().push((arrival, served));
                    conn.query("SELECT 1", &[]).await.unwrap();
                    // The returning task immediately asks again: it must queue behind
                    // everyone already waiting instead of barging in.
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 64 * 20);
    // Service order sorted by arrival: count, for each acquire, how many later arrivals
    // were served before it.
    let mut by_arrival: Vec<(u64, u64)> = log.clone();
    by_arrival.sort();
    let mut worst = 0;
    for (i, &(_, served)) in by_arrival.iter().enumerate() {
        let overtaken_by = by_arrival[i + 1..]
            .iter()
            .filter(|&&(_, s)| s < served)
            .count();
        worst = worst.max(overtaken_by);
    }
    eprintln!(
        "fairness: worst overtaking {worst}, {}",
        pool.status().counters.waits
    );
    assert!(
        worst <= pool.max_size(),
        "a waiter was overtaken by {worst} later arrivals"
    );
    let status = pool.status();
    assert!(
        status.counters.waits > 0,
        "the test never made anyone wait: {status}"
    );
}
