//! Several hosts in one configuration (`host=a,b`): each is tried under its own
//! `connect_timeout`, as in libpq, so a first host that accepts and never answers does
//! not keep the pool from the second.

use std::time::{Duration, Instant};

use pool_core::{Pool, TimeoutKind};
use tests::faults::{Accept, FaultProxy};
use tokio_postgres::config::Host;

use crate::common::*;

/// The test database's server: host name and port.
fn server(base: &tokio_postgres::Config) -> (String, u16) {
    match (base.get_hosts().first(), base.get_ports().first()) {
        (Some(Host::Tcp(h)), Some(p)) => (h.clone(), *p),
        other => panic!("the test server is not on TCP: {other:?}"),
    }
}

/// `base`'s user and database on `hosts`, tried in this order.
fn on_hosts(hosts: &[(String, u16)], base: &tokio_postgres::Config) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    for (host, port) in hosts {
        config.host(host).port(*port);
    }
    if let Some(user) = base.get_user() {
        config.user(user);
    }
    if let Some(password) = base.get_password() {
        config.password(password);
    }
    if let Some(db) = base.get_dbname() {
        config.dbname(db);
    }
    config
}

async fn deaf_proxy(port: u16) -> FaultProxy {
    let proxy = FaultProxy::to_port(port).await.unwrap();
    proxy.set_accept(Accept::Deaf).await;
    proxy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deaf_first_host_does_not_use_up_the_second_hosts_budget() {
    let (tdb, _) = setup().await;
    let admin = tdb.connect().await;
    let base = tdb.config();
    let real = server(&base);
    let deaf = deaf_proxy(real.1).await;
    let connect_timeout = Duration::from_millis(500);
    let hosts = [("127.0.0.1".to_owned(), deaf.port()), real];
    let pool = Pool::builder(on_hosts(&hosts, &base))
        .connect_timeout(connect_timeout)
        .acquire_timeout(Duration::from_secs(5))
        .max_size(1)
        .build()
        .unwrap();
    let mut db = pool.db();
    let started = Instant::now();
    let mut conn = db.acquire().await.unwrap_or_else(|e| {
        panic!(
            "the second host was not tried after {:?}: {e}",
            started.elapsed()
        )
    });
    let took = started.elapsed();
    // The first host had its whole budget (it was reached), then the second answered.
    assert!(took >= connect_timeout, "{took:?}");
    assert_eq!(deaf.counters().deaf, 1);
    let pid = conn.backend_pid();
    assert!(
        backend_state(&admin, pid).await.is_some(),
        "backend {pid} is not on the real server"
    );
    let one: i32 = conn.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_deaf_is_a_connect_timeout_after_each_had_its_budget() {
    let (tdb, _) = setup().await;
    let base = tdb.config();
    let real = server(&base);
    let (a, b) = (deaf_proxy(real.1).await, deaf_proxy(real.1).await);
    let hosts = [
        ("127.0.0.1".to_owned(), a.port()),
        ("127.0.0.1".to_owned(), b.port()),
    ];
    let started = Instant::now();
    let err = Pool::builder(on_hosts(&hosts, &base))
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .map(drop)
        .unwrap_err();
    let took = started.elapsed();
    let t = err
        .as_timeout()
        .unwrap_or_else(|| panic!("not a timeout: {err}"));
    assert_eq!(t.kind(), TimeoutKind::Connect, "{err}");
    assert!(took >= Duration::from_millis(600), "{took:?}: {err}");
    assert_eq!((a.counters().deaf, b.counters().deaf), (1, 1));
}

/// A write refused with 25006 (`read_only_sql_transaction`) by a server that has become
/// read-only — what a demoted primary answers — evicts the connection on its return, so
/// the pool does not keep sending writes to it until `max_lifetime`. A private cluster:
/// the server is reconfigured (`default_transaction_read_only = on`, as set on a server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_server_refusing_a_write_evicts_the_connection() {
    let cluster = tests::harness::PrivateCluster::start_default()
        .await
        .unwrap();
    let (admin, connection) = cluster
        .config()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute("CREATE TABLE ro (x int)")
        .await
        .unwrap();
    let pool = Pool::builder(cluster.config()).max_size(1).build().unwrap();
    let mut db = pool.db();
    let pid = {
        let mut conn = db.acquire().await.unwrap();
        conn.execute("INSERT INTO ro VALUES (1)", &[])
            .await
            .unwrap();
        conn.backend_pid()
    };
    cluster
        .set("default_transaction_read_only", "on")
        .await
        .unwrap();
    {
        let mut conn = db.acquire().await.unwrap();
        assert_eq!(conn.backend_pid(), pid, "the same connection, reused");
        let err = conn
            .execute("INSERT INTO ro VALUES (2)", &[])
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("25006") || err.to_string().contains("read-only"),
            "{err}"
        );
    }
    // Back in the pool it was found read-only and discarded; the next is a new backend.
    let mut conn = db.acquire().await.unwrap();
    assert_ne!(conn.backend_pid(), pid);
    let status = pool.status();
    assert_eq!(status.counters.discarded_broken, 1, "{status}");
    assert_eq!(
        backend_state(&admin, pid).await,
        None,
        "the read-only server's backend {pid} was closed"
    );
    // Writable again: no more evictions.
    cluster
        .set("default_transaction_read_only", "off")
        .await
        .unwrap();
    conn.execute("INSERT INTO ro VALUES (3)", &[])
        .await
        .unwrap();
}

/// The borrower's own read-only transaction refusing a write (25006 too) is not the
/// server's doing: the server says it is writable, and the connection is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_transactions_own_refusal_keeps_the_connection() {
    let (tdb, builder) = setup().await;
    tdb.connect()
        .await
        .batch_execute("CREATE TABLE ro_tx (x int)")
        .await
        .unwrap();
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let pid = {
        let mut conn = db.acquire().await.unwrap();
        let mut tx = conn
            .begin_with(pool_core::TxOptions::new().read_only(true))
            .await
            .unwrap();
        let err = tx
            .execute("INSERT INTO ro_tx VALUES (1)", &[])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
        drop(tx);
        conn.backend_pid()
    };
    let mut conn = db.acquire().await.unwrap();
    assert_eq!(conn.backend_pid(), pid, "kept: {}", pool.status());
    assert_eq!(pool.status().counters.discarded(), 0);
    conn.execute("INSERT INTO ro_tx VALUES (2)", &[])
        .await
        .unwrap();
}
