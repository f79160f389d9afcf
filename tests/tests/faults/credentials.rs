//! Rotating credentials: the role's password changes on a private cluster (scram) while
//! the pool runs. Connections already open keep working, nothing fails in between, and
//! after `drain` every connection was opened with the new password.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_core::{Error, Pool};
use tests::harness::PrivateCluster;

use crate::restart::require_passwords;
use crate::rig::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_is_used_by_new_connections_and_nothing_fails() {
    let _serial = serial().await;
    let cluster = PrivateCluster::start_default().await.unwrap();
    let admin = connect(&cluster.config()).await;
    admin
        .batch_execute("CREATE ROLE app LOGIN PASSWORD 'first'")
        .await
        .unwrap();
    require_passwords(&cluster, &[("app", "scram-sha-256")]);
    cluster
        .set("password_encryption", "scram-sha-256")
        .await
        .unwrap();
    let current = Arc::new(Mutex::new("first".to_owned()));
    let source = Arc::clone(&current);
    let mut config = cluster.config();
    config.user("app");
    let pool = Pool::builder(config)
        .max_size(3)
        .application_name("rotation")
        .acquire_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .password_provider(move || {
            let password = source.lock().unwrap().clone();
            async move { Ok(password) }
        })
        .build()
        .unwrap();
    let mut db = pool.db();
    drop(db.acquire_many(3).await.unwrap());
    let old: Vec<i32> = pids(&admin).await;
    assert_eq!(old.len(), 3);

    // A steady workload on the open connections throughout the rotation.
    let work = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut db = pool.db();
            for _ in 0..200 {
                db.query_one("SELECT 1", &[]).await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<(), Error>(())
        })
    };
    // The rotation: the server's password, then the provider's.
    admin
        .batch_execute("ALTER ROLE app PASSWORD 'second'")
        .await
        .unwrap();
    *current.lock().unwrap() = "second".to_owned();
    // Replace every connection: each new one logs in with the new password.
    pool.drain().unwrap();
    work.await
        .unwrap()
        .expect("a statement failed during the rotation");
    drop(db.acquire_many(3).await.unwrap());
    let new: Vec<i32> = pids(&admin).await;
    assert_eq!(new.len(), 3, "{new:?}");
    assert!(
        new.iter().all(|p| !old.contains(p)),
        "old {old:?}, new {new:?}"
    );
    let s = pool.status();
    assert_eq!(s.counters.connect_failures, 0, "{s}");
    // The old password no longer logs in: the new connections really used the new one.
    let mut stale = cluster.config();
    stale.user("app").password("first");
    assert!(stale.connect(tokio_postgres::NoTls).await.is_err());
}

async fn pids(admin: &tokio_postgres::Client) -> Vec<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'rotation' ORDER BY pid",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}
