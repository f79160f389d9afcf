//! Behaviours taken from the test suites of psycopg_pool, pgxpool and HikariCP, on the
//! real server: refilling `min_idle` after an outage and at start, hooks that cannot
//! hand out a transaction, every rollback on return counted, refusals counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pool_core::{Error, Pool};
use tests::faults::proxy::{Accept, Fault, FaultProxy};

use crate::common::{eventually, setup};

/// A proxy in front of the test database, and a builder pointed through it.
async fn through_proxy() -> (tests::harness::TestDb, FaultProxy, pool_core::Builder) {
    let (tdb, _) = setup().await;
    let direct = tdb.config();
    let port = direct.get_ports().first().copied().unwrap_or(5432);
    let proxy = FaultProxy::to_port(port).await.unwrap();
    let builder = Pool::builder(proxy.config(&direct))
        .acquire_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_millis(500))
        .statement_timeout(Duration::from_secs(10));
    (tdb, proxy, builder)
}

#[tokio::test]
async fn min_idle_is_refilled_after_an_outage_without_any_request() {
    let (_tdb, proxy, builder) = through_proxy().await;
    let pool = builder
        .min_idle(4)
        .max_size(8)
        .validate_after_idle(Duration::ZERO)
        .build()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            pool.status().idle == 4
        })
        .await,
        "min_idle not reached at start: {}",
        pool.status()
    );
    // The outage: new connections refused, the existing ones reset.
    proxy.set_accept(Accept::Refuse).await;
    proxy.set_existing(Fault::Rst);
    assert!(
        eventually(Duration::from_secs(10), || async {
            pool.status().idle == 0
        })
        .await,
        "the dead connections were not noticed: {}",
        pool.status()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.heal().await;
    // No request is made: the pool refills in the background.
    let refilled = eventually(Duration::from_secs(10), || async {
        pool.status().idle == 4
    })
    .await;
    assert!(
        refilled,
        "min_idle(4) not refilled after the outage: {}",
        pool.status()
    );
}

#[tokio::test]
async fn min_idle_is_filled_as_the_pool_is_built() {
    let (_tdb, builder) = setup().await;
    let pool = builder.min_idle(3).build().unwrap();
    // Right away, not at the first maintenance pass: the connects are under way.
    let s = pool.status();
    assert_eq!(s.connecting + s.idle, 3, "{s}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            pool.status().idle == 3
        })
        .await
    );
}

#[tokio::test]
async fn a_hook_that_leaves_a_transaction_open_never_hands_it_out() {
    let (tdb, builder) = setup().await;
    tdb.connect()
        .await
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .unwrap();
    let first = Arc::new(AtomicBool::new(true));
    let hooked = Arc::new(AtomicUsize::new(0));
    let (f, h) = (Arc::clone(&first), Arc::clone(&hooked));
    let pool = builder
        .max_size(1)
        .after_connect(move |conn| {
            let leave_open = f.swap(false, Ordering::SeqCst);
            h.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if leave_open {
                    // A transaction the hook forgets: its `Tx` is never dropped.
                    let tx = conn.begin().await?;
                    std::mem::forget(tx);
                }
                Ok(())
            })
        })
        .build()
        .unwrap();
    let mut db = pool.db();
    {
        let mut conn = db.acquire().await.unwrap();
        assert!(
            !conn.in_transaction(),
            "handed out inside the hook's transaction"
        );
        let mut tx = conn.begin().await.unwrap();
        tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
        tx.commit().await.unwrap();
    }
    // The acknowledged write is there, seen from another session.
    let n: i64 = tdb
        .connect()
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "a committed row vanished");
    assert_eq!(
        hooked.load(Ordering::SeqCst),
        2,
        "the bad connection was not replaced"
    );
    assert_eq!(
        pool.status().counters.discarded_hook,
        1,
        "{}",
        pool.status()
    );
}

#[tokio::test]
async fn a_rollback_on_return_is_counted_when_no_tx_destructor_ran() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    {
        let mut conn = db.acquire().await.unwrap();
        let tx = conn.begin().await.unwrap();
        std::mem::forget(tx);
        assert!(conn.in_transaction());
    }
    // The pool rolls it back while cleaning; that is a rollback on return too.
    let counted = eventually(Duration::from_secs(5), || async {
        pool.status().counters.rollbacks_on_return == 1
    })
    .await;
    assert!(counted, "{}", pool.status());
    let conn = db.acquire().await.unwrap();
    assert!(!conn.in_transaction());
}

#[tokio::test]
async fn requests_refused_by_max_waiting_are_counted() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).max_waiting(1).build().unwrap();
    let mut db = pool.db();
    let _held = db.acquire().await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut db = pool.db();
            db.acquire().await.map(drop)
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            pool.status().waiting == 1
        })
        .await
    );
    // From another task: this one holds a connection, and would be refused as nested.
    let refused = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.db().acquire().await.map(drop) })
            .await
            .unwrap()
    };
    assert!(
        matches!(refused, Err(Error::TooManyWaiters { .. })),
        "{refused:?}"
    );
    assert_eq!(
        pool.status().counters.waiting_refused,
        1,
        "{}",
        pool.status()
    );
    waiter.abort();
}

#[tokio::test]
async fn use_time_adds_up_the_time_connections_were_held() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    assert_eq!(pool.status().counters.use_time, Duration::ZERO);
    {
        let _conn = db.acquire().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let used = pool.status().counters.use_time;
    assert!(used >= Duration::from_millis(50), "{used:?}");
}
