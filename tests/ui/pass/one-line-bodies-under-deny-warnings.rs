// Every macro shape, many with a one-line body, in a crate that denies warnings: the
// generated code adds none (and an unused one would still be reported: see
// fail/annotated-function-never-called.rs).
#![deny(warnings)]

use pool_core::{transactional, with_conn, Conn, Db, Error, Tx};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Db(#[from] Error),
    #[error("not found")]
    NotFound,
}

#[with_conn]
pub async fn count(conn: &mut Conn) -> Result<u64, Error> {
    conn.execute("SELECT 1", &[]).await
}

#[with_conn]
pub async fn with_args(conn: &mut Conn, id: i32, name: &str) -> Result<u64, Error> {
    conn.execute("SELECT $1::int4, $2::text", &[&id, &name]).await
}

#[with_conn]
pub async fn unit(conn: &mut Conn) -> Result<(), AppError> {
    conn.execute("SELECT 1", &[]).await?;
    Ok(())
}

#[with_conn]
pub async fn early_return(conn: &mut Conn, skip: bool) -> Result<u64, AppError> {
    if skip {
        return Err(AppError::NotFound);
    }
    Ok(conn.execute("SELECT 1", &[]).await?)
}

#[transactional]
pub async fn touch(tx: &mut Tx) -> Result<u64, Error> {
    tx.execute("SELECT 1", &[]).await
}

#[transactional(read_only)]
pub async fn read(tx: &mut Tx, id: i32) -> Result<i32, AppError> {
    Ok(tx.query_one("SELECT $1::int4", &[&id]).await?.get(0))
}

#[transactional(isolation = repeatable_read)]
pub async fn early(tx: &mut Tx, skip: bool) -> Result<u64, AppError> {
    if skip {
        return Ok(0);
    }
    Ok(tx.execute("SELECT 1", &[]).await?)
}

#[transactional(isolation = serializable, retry = 3)]
pub async fn touch_retrying(tx: &mut Tx) -> Result<u64, Error> {
    tx.execute("SELECT 1", &[]).await
}

#[transactional(isolation = serializable, retry = 2, backoff_ms = 1)]
pub async fn retrying_app_error(tx: &mut Tx, id: i32) -> Result<u64, AppError> {
    Ok(tx.execute("SELECT $1::int4", &[&id]).await?)
}

#[transactional]
pub async fn calls_helpers(tx: &mut Tx) -> Result<u64, Error> {
    Ok(touch(tx).await? + count(tx.conn()).await?)
}

pub struct Repo;

impl Repo {
    #[with_conn]
    pub async fn method(&self, conn: &mut Conn) -> Result<u64, Error> {
        conn.execute("SELECT 1", &[]).await
    }

    #[transactional]
    pub async fn tx_method(&self, tx: &mut Tx) -> Result<u64, Error> {
        tx.execute("SELECT 1", &[]).await
    }
}

pub async fn all(db: &mut Db) -> Result<u64, AppError> {
    unit(db).await?;
    read(db, 1).await?;
    Ok(count(db).await?
        + with_args(db, 1, "a").await?
        + early_return(db, false).await?
        + touch(db).await?
        + early(db, false).await?
        + touch_retrying(db).await?
        + retrying_app_error(db, 1).await?
        + calls_helpers(db).await?
        + Repo.method(db).await?
        + Repo.tx_method(db).await?)
}

fn main() {}
