//! Compile-time assertions: the types and futures users move across tasks are `Send`.

use pool_core::{Conn, Db, Pool, PooledConn, Tx};

fn send<T: Send>(_: &T) {}
fn send_sync<T: Send + Sync + Clone + 'static>() {}

#[test]
fn pool_db_and_futures_are_send() {
    send_sync::<Pool>();
    fn db_is_send<T: Send + Sync>() {}
    db_is_send::<Db>();
    db_is_send::<PooledConn<'static>>();
    db_is_send::<Conn>();
    db_is_send::<Tx<'static>>();

    #[allow(dead_code, unused_must_use, clippy::let_underscore_future)]
    async fn futures(db: &mut Db, pool: &Pool) {
        send(&db.acquire());
        send(&db.acquire_many(2));
        send(&db.query("SELECT 1", &[]));
        send(&db.execute("SELECT 1", &[]));
        send(&pool.close());
        let mut conn = db.acquire().await.unwrap();
        send(&conn.query("SELECT 1", &[]));
        send(&conn.begin());
        let mut tx = conn.begin().await.unwrap();
        send(&tx.query("SELECT 1", &[]));
        send(&tx.savepoint());
        send(&tx.commit());
    }
    // A whole request handler can be spawned.
    #[allow(dead_code)]
    fn spawnable(pool: Pool) {
        drop(tokio::spawn(async move {
            let mut db = pool.db();
            let mut conn = db.acquire().await?;
            let mut tx = conn.begin().await?;
            tx.execute("SELECT 1", &[]).await?;
            tx.commit().await?;
            Ok::<_, pool_core::Error>(())
        }));
    }
}
