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
