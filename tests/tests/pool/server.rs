//! The server goes away, refuses us, or never answers.

use std::time::Duration;

use pool_core::tokio_postgres::error::SqlState;
use pool_core::{Error, Pool, TimeoutKind};
use tests::harness::PrivateCluster;

#[tokio::test]
async fn a_refused_login_is_reported_at_once_not_as_a_timeout() {
    let server = tests::harness::server().await.unwrap();
    let mut config = server.config();
    config.user("no_such_role");
    let pool = Pool::builder(config)
        .acquire_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let acquire = pool.db().acquire().await.map(drop);
    // Fails with the server's reason long before the 60 s acquire timeout.
    let err = acquire.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    );
    // Pool::connect reports it too.
    let mut config = server.config();
    config.user("no_such_role");
    assert!(matches!(
        Pool::connect(config).await,
        Err(Error::Connect { .. })
    ));
}

#[tokio::test]
async fn connect_timeout_covers_a_server_that_accepts_but_never_answers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let deaf = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket); // accept, keep open, say nothing
        }
    });
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let err = Pool::builder(url.as_str())
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        err.as_timeout().map(|t| t.kind()),
        Some(TimeoutKind::Connect),
        "{err}"
    );
    // Through the pool: the acquire times out and says the connects time out.
    let pool = Pool::builder(url.as_str())
        .connect_timeout(Duration::from_millis(200))
        .acquire_timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let err = pool.db().acquire().await.map(drop).unwrap_err();
    let last = err
        .as_timeout()
        .and_then(|t| t.last_connect_error())
        .expect("no connect error recorded");
    assert_eq!(
        last.as_timeout().map(|t| t.kind()),
        Some(TimeoutKind::Connect),
        "{last}"
    );
    deaf.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_refills_after_a_server_restart_without_a_retry_storm() {
    let cluster = PrivateCluster::start_default().await.unwrap();
    let pool = Pool::builder(cluster.config())
        .max_size(16)
        .acquire_timeout(Duration::from_secs(15))
        .validate_after_idle(Duration::ZERO)
        .build()
        .unwrap();
    {
        let mut db = pool.db();
        let _set = db.acquire_many(16).await.unwrap();
    }
    cluster.stop_fast().await.unwrap();
    // Thirty-two tasks want connections while the server is down.
    let waiters: Vec<_> = (0..32)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut db = pool.db();
                let mut conn = db.acquire().await?;
                conn.query_one("SELECT 1", &[]).await.map(drop)
            })
        })
        .collect();
    // The first wave (every connect task in flight when the server vanished) may fail
    // together; after that the pool must settle into one probe per backoff period.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first_wave = pool.status().counters.connect_failures;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let steady = pool.status().counters.connect_failures - first_wave;
    cluster.start().await.unwrap();
    for w in waiters {
        w.await
            .unwrap()
            .expect("a waiter failed after the server came back");
    }
    // With backoff doubling from 25 ms to a 1 s cap, one probe at a time makes about two
    // attempts between 1 s and 3 s, however many tasks wait. Without the probe gate every
    // connect task tries in each period.
    assert!(first_wave >= 1, "the pool did not try to reconnect");
    assert!(
        first_wave <= 16 + 8,
        "{first_wave} attempts in the first second"
    );
    assert!(
        steady <= 5,
        "{steady} connect attempts in 2 s of outage: a retry storm"
    );
    assert!(steady >= 1, "the pool stopped trying: {steady}");
    let mut db = pool.db();
    let mut set = db
        .acquire_many(16)
        .await
        .expect("not back to full strength");
    for conn in set.iter_mut() {
        conn.query_one("SELECT 1", &[]).await.unwrap();
    }
}

/// A password provider is asked for each new connection; one that fails or hangs is
/// reported as what it is, never as a bare timeout.
#[tokio::test]
async fn the_password_provider_is_asked_per_connection_and_its_failures_are_named() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::common::setup;

    let (_tdb, builder) = setup().await;
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&asked);
    let pool = builder
        .max_size(3)
        .password_provider(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok("unused-with-trust".to_owned()) }
        })
        .build()
        .unwrap();
    let mut db = pool.db();
    drop(db.acquire_many(3).await.unwrap());
    assert_eq!(asked.load(Ordering::SeqCst), 3);

    let (_tdb, builder) = setup().await;
    let err = builder
        .password_provider(|| async { Err("vault is sealed".into()) })
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, pool_core::Error::Credentials { .. }), "{err}");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("vault is sealed"), "{chain}");

    let (_tdb, builder) = setup().await;
    let err = builder
        .connect_timeout(std::time::Duration::from_millis(400))
        .password_provider(std::future::pending)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, pool_core::Error::Credentials { .. }), "{err}");
    assert!(err.to_string().contains("did not answer"), "{err}");
    assert!(!err.is_timeout(), "reported as a bare timeout: {err}");
}
