//! The macros send exactly the statements the hand-written equivalents in their docs
//! send, as logged by the server itself (`log_statement = all`).

use pool_core::{Conn, Db, Error, Isolation, Pool, Tx, TxOptions, transactional, with_conn};
use tests::harness::PrivateCluster;

#[with_conn]
async fn read_by_macro(conn: &mut Conn, id: i32) -> Result<i32, Error> {
    Ok(conn.query_one("SELECT $1::int + 1", &[&id]).await?.get(0))
}

async fn read_by_hand(db: &mut Db, id: i32) -> Result<i32, Error> {
    let mut conn = db.acquire().await?;
    Ok(conn.query_one("SELECT $1::int + 1", &[&id]).await?.get(0))
}

#[transactional(isolation = serializable)]
async fn write_by_macro(tx: &mut Tx, id: i32) -> Result<(), Error> {
    tx.execute("INSERT INTO t VALUES ($1)", &[&id]).await?;
    if id < 0 {
        return Err(Error::RowCount { rows: 0 });
    }
    Ok(())
}

async fn write_by_hand(db: &mut Db, id: i32) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    let mut tx = conn
        .begin_with(TxOptions::new().isolation(Isolation::Serializable))
        .await?;
    let result: Result<(), Error> = async {
        tx.execute("INSERT INTO t VALUES ($1)", &[&id]).await?;
        if id < 0 {
            return Err(Error::RowCount { rows: 0 });
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => tx.commit().await,
        Err(e) => {
            tx.rollback().await?;
            Err(e)
        }
    }
}

/// The statements a pool with this application name sent, in order, without the
/// driver's statement names (`execute s3:`), which differ from run to run.
fn statements(log: &str, app: &str) -> Vec<String> {
    let prefix = format!("{app}|");
    log.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| l.split_once("LOG:  ").map(|(_, m)| m))
        .filter_map(|m| {
            m.strip_prefix("statement: ")
                .map(str::to_owned)
                .or_else(|| {
                    m.strip_prefix("execute ")
                        .and_then(|r| r.split_once(": "))
                        .map(|(_, s)| s.to_owned())
                })
        })
        .collect()
}

#[tokio::test]
async fn macros_send_the_same_statements_as_the_hand_written_code() {
    let cluster = PrivateCluster::builder()
        .setting("log_statement", "all")
        .setting("log_line_prefix", "%a|")
        .start()
        .await
        .unwrap();
    let setup = Pool::connect(cluster.config()).await.unwrap();
    setup
        .db()
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .unwrap();

    for app in ["macro", "hand"] {
        let pool = Pool::builder(cluster.config())
            .application_name(app)
            .max_size(1)
            .build()
            .unwrap();
        let mut db = pool.db();
        for id in [1, 2] {
            let got = if app == "macro" {
                read_by_macro(&mut db, id).await
            } else {
                read_by_hand(&mut db, id).await
            };
            assert_eq!(got.unwrap(), id + 1);
        }
        for id in [3, -4] {
            let r = if app == "macro" {
                write_by_macro(&mut db, id).await
            } else {
                write_by_hand(&mut db, id).await
            };
            assert_eq!(r.is_ok(), id > 0);
        }
        pool.close().await;
    }
    let log = cluster.log_contents();
    let by_macro = statements(&log, "macro");
    let by_hand = statements(&log, "hand");
    assert!(
        by_macro.len() >= 8,
        "too few statements captured: {by_macro:#?}\n{log}"
    );
    assert_eq!(by_macro, by_hand);
    assert!(
        by_macro.contains(&"BEGIN ISOLATION LEVEL SERIALIZABLE".to_owned()),
        "{by_macro:#?}"
    );
    assert!(
        by_macro.contains(&"COMMIT".to_owned()) && by_macro.contains(&"ROLLBACK".to_owned()),
        "{by_macro:#?}"
    );
}
