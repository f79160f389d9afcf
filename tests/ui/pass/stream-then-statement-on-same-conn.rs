// The right ways: collect the stream first, or read it on one connection and run the
// per-row statements on a second one taken together with it.
use futures::StreamExt;
use pool_core::{Conn, Db, Error};

async fn owner_of(conn: &mut Conn, id: i32) -> Result<String, Error> {
    let row = conn.query_one("SELECT owner FROM account WHERE id = $1", &[&id]).await?;
    Ok(row.get(0))
}

async fn report_collected(db: &mut Db) -> Result<(), Error> {
    let mut conn = db.acquire().await?;
    let ids: Vec<i32> = {
        let mut rows = conn.query_stream("SELECT id FROM account", &[]).await?;
        let mut ids = Vec::new();
        while let Some(row) = rows.next().await {
            ids.push(row?.get(0));
        }
        ids
    };
    for id in ids {
        owner_of(&mut conn, id).await?;
    }
    Ok(())
}

async fn report_on_two(db: &mut Db) -> Result<(), Error> {
    let mut set = db.acquire_many(2).await?;
    let Some([reader, helper]) = set.array_mut::<2>() else {
        return Ok(());
    };
    let mut rows = reader.query_stream("SELECT id FROM account", &[]).await?;
    while let Some(row) = rows.next().await {
        let id: i32 = row?.get(0);
        owner_of(helper, id).await?;
    }
    Ok(())
}

fn main() {
    let _ = (report_collected, report_on_two);
}
