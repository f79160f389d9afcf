//! A listener across a server restart: it reconnects with backoff, listens again and says
//! it did.

use std::time::Duration;

use pool_core::{ListenerEvent, Pool};
use tests::harness::PrivateCluster;

use crate::rig::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_survives_a_server_restart() {
    let _serial = serial().await;
    let cluster = PrivateCluster::start_default().await.unwrap();
    let pool = Pool::builder(cluster.config())
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut listener = pool.listener().await.unwrap();
    listener.listen("events").await.unwrap();
    cluster.restart_fast().await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(20), listener.next())
        .await
        .expect("the listener did not come back after the restart")
        .unwrap();
    assert!(matches!(event, ListenerEvent::Reconnected), "{event:?}");
    let admin = connect(&cluster.config()).await;
    admin
        .execute("SELECT pg_notify('events', 'after')", &[])
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), listener.next())
        .await
        .expect("no notification after the restart")
        .unwrap();
    match event {
        ListenerEvent::Notification(n) => assert_eq!(n.payload(), "after"),
        other => panic!("{other:?}"),
    }
}
