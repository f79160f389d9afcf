//! `pool.listener()`: LISTEN on a connection of its own that comes back after its backend
//! is terminated, listening again, and says it did.

use std::time::Duration;

use pool_core::ListenerEvent;

use crate::common::{backend_state, setup};

async fn next(listener: &mut pool_core::Listener) -> ListenerEvent {
    tokio::time::timeout(Duration::from_secs(10), listener.next())
        .await
        .expect("no event from the listener")
        .unwrap()
}

#[tokio::test]
async fn a_listener_survives_its_backend_and_listens_again() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    let pool = builder.max_size(2).build().unwrap();
    let mut listener = pool.listener().await.unwrap();
    // Counted against max_size.
    assert_eq!(pool.status().size, 1);
    listener.listen("jobs").await.unwrap();
    listener.listen("Mixed Case").await.unwrap();
    admin
        .execute("SELECT pg_notify('jobs', 'one')", &[])
        .await
        .unwrap();
    match next(&mut listener).await {
        ListenerEvent::Notification(n) => {
            assert_eq!((n.channel(), n.payload()), ("jobs", "one"));
        }
        other => panic!("{other:?}"),
    }
    let old = listener.backend_pid().unwrap();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&old])
        .await
        .unwrap();
    assert!(matches!(
        next(&mut listener).await,
        ListenerEvent::Reconnected
    ));
    let new = listener.backend_pid().unwrap();
    assert_ne!(new, old);
    // A new backend on the server, and listening again: a notification on the other
    // channel arrives.
    assert!(backend_state(&admin, new).await.is_some());
    admin
        .execute("SELECT pg_notify('Mixed Case', 'two')", &[])
        .await
        .unwrap();
    match next(&mut listener).await {
        ListenerEvent::Notification(n) => {
            assert_eq!((n.channel(), n.payload()), ("Mixed Case", "two"));
        }
        other => panic!("{other:?}"),
    }
    listener.unlisten("jobs").await.unwrap();
    admin
        .execute(
            "SELECT pg_notify('jobs', 'ignored'), pg_notify('Mixed Case', 'three')",
            &[],
        )
        .await
        .unwrap();
    match next(&mut listener).await {
        ListenerEvent::Notification(n) => assert_eq!(n.payload(), "three"),
        other => panic!("{other:?}"),
    }
    drop(listener);
    assert_eq!(
        pool.status().size,
        0,
        "the listener's slot was not given back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_pool_ends_its_listeners_without_waiting_for_them() {
    let (tdb, builder) = setup().await;
    let admin = tdb.connect().await;
    // Far longer than the hang guard below: close() must not wait for listeners.
    let pool = builder
        .max_size(2)
        .close_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    // One listener waiting for a notification, one nobody polls.
    let mut waiting = pool.listener().await.unwrap();
    waiting.listen("jobs").await.unwrap();
    let idle = pool.listener().await.unwrap();
    let (waiting_pid, idle_pid) = (waiting.backend_pid().unwrap(), idle.backend_pid().unwrap());
    let waiter = tokio::spawn(async move {
        let got = waiting.next().await;
        (got, waiting)
    });
    tokio::time::timeout(Duration::from_secs(30), pool.close())
        .await
        .expect("close() waited for the listeners");
    let (got, waiting) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the waiting listener did not see the pool close")
        .unwrap();
    assert!(matches!(got, Err(pool_core::Error::Closed)), "{got:?}");
    // Its connection is closed on the server; the unpolled one goes when dropped.
    assert!(waiting.backend_pid().is_none());
    assert!(
        crate::common::eventually(Duration::from_secs(10), || async {
            backend_state(&admin, waiting_pid).await.is_none()
        })
        .await,
        "the waiting listener's backend is still there"
    );
    assert!(backend_state(&admin, idle_pid).await.is_some());
    drop(idle);
    assert!(
        crate::common::eventually(Duration::from_secs(10), || async {
            backend_state(&admin, idle_pid).await.is_none()
        })
        .await
    );
    drop(waiting);
    assert_eq!(pool.status().size, 0);
}
