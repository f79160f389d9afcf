//! `#[with_conn]`: checks out when given `&mut Db`, reuses a held connection otherwise.

use pool_core::{Conn, Error, with_conn};

use crate::common::*;

#[with_conn]
async fn backend(conn: &mut Conn) -> Result<i32, Error> {
    Ok(conn.query_one("SELECT pg_backend_pid()", &[]).await?.get(0))
}

/// A helper calling another helper: the connection is passed down, never re-acquired.
#[with_conn]
async fn backends_twice(conn: &mut Conn) -> Result<(i32, i32), Error> {
    let a = backend(conn).await?;
    let b = backend(conn).await?;
    Ok((a, b))
}

#[tokio::test]
async fn checks_out_from_db_and_reuses_a_held_connection() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(2).build().unwrap();
    let mut db = pool.db();

    let pid = backend(&mut db).await.unwrap();
    assert_eq!(pool.status().counters.acquires, 1);
    assert_eq!(pool.status().in_use, 0, "the checkout was not returned");

    let (a, b) = backends_twice(&mut db).await.unwrap();
    assert_eq!(a, b, "a nested helper must reuse the connection");
    assert_eq!(
        pool.status().counters.acquires,
        2,
        "one checkout for the whole call tree"
    );

    let mut conn = db.acquire().await.unwrap();
    let held = conn.backend_pid();
    assert_eq!(backend(&mut conn).await.unwrap(), held);
    assert_eq!(backends_twice(&mut conn).await.unwrap(), (held, held));
    assert_eq!(
        pool.status().counters.acquires,
        3,
        "a held connection is reused, not checked out"
    );
    let _ = pid;
}

/// Errors in the body return the connection too.
#[with_conn]
async fn fails(conn: &mut Conn) -> Result<(), Error> {
    conn.query("SELEC nonsense", &[]).await?;
    Ok(())
}

#[tokio::test]
async fn the_connection_is_returned_on_error_and_panic() {
    let (_tdb, builder) = setup().await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    assert!(fails(&mut db).await.is_err());
    assert_eq!(pool.status().in_use, 0);

    #[with_conn]
    async fn panics(conn: &mut Conn) -> Result<(), Error> {
        conn.query("SELECT 1", &[]).await?;
        panic!("boom");
    }
    let p = pool.clone();
    let joined = tokio::spawn(async move { panics(&mut p.db()).await }).await;
    assert!(joined.unwrap_err().is_panic());
    assert_eq!(pool.status().in_use, 0);
    assert!(backend(&mut db).await.is_ok());
}

/// Methods, generics, where clauses, `impl Trait` and patterns in other arguments, doc
/// comments, attributes and visibility all survive.
struct Repo {
    table: &'static str,
}

impl Repo {
    /// Counts rows.
    #[with_conn]
    #[allow(clippy::needless_lifetimes)]
    pub async fn count<'a, T>(
        &'a self,
        conn: &mut Conn,
        (offset, _unused): (i64, T),
        extra: impl Into<i64>,
    ) -> Result<i64, Error>
    where
        T: Send,
    {
        let sql = format!("SELECT count(*) FROM {}", self.table);
        let n: i64 = conn.query_one(sql.as_str(), &[]).await?.get(0);
        Ok(n + offset + extra.into())
    }
}

trait Counter {
    fn count_all(
        &self,
        conn: &mut dyn pool_core::ConnSource,
    ) -> impl std::future::Future<Output = Result<i64, Error>> + Send;
}

impl Counter for Repo {
    #[with_conn]
    async fn count_all(&self, conn: &mut Conn) -> Result<i64, Error> {
        Ok(conn
            .query_one(format!("SELECT count(*) FROM {}", self.table).as_str(), &[])
            .await?
            .get(0))
    }
}

#[tokio::test]
async fn works_on_methods_generics_and_trait_impls() {
    let (tdb, builder) = setup().await;
    tdb.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)")
        .await;
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let repo = Repo { table: "t" };
    assert_eq!(
        repo.count(&mut db, (10, "ignored"), 100i32).await.unwrap(),
        112
    );
    assert_eq!(repo.count_all(&mut db).await.unwrap(), 2);
    // The trait method's future is Send: it can be spawned.
    let p = pool.clone();
    let n = tokio::spawn(async move { Repo { table: "t" }.count_all(&mut p.db()).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2);
}

/// A user error type that wraps the pool's.
#[derive(Debug)]
enum AppError {
    Pool(Error),
}
impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::Pool(e)
    }
}

#[with_conn]
async fn app_level(conn: &mut Conn) -> Result<i32, AppError> {
    Ok(conn.query_one("SELECT 5", &[]).await?.get(0))
}

#[tokio::test]
async fn custom_error_types_convert_from_pool_errors() {
    let (_tdb, builder) = setup().await;
    let pool = builder
        .max_size(1)
        .acquire_timeout(std::time::Duration::from_millis(200))
        .build()
        .unwrap();
    let mut db = pool.db();
    assert_eq!(app_level(&mut db).await.unwrap(), 5);
    let _held = pool.db();
    let mut other = pool.db();
    let _c = other.acquire().await.unwrap();
    // The checkout fails (nested checkout in this task) and converts into AppError.
    assert!(matches!(
        app_level(&mut db).await,
        Err(AppError::Pool(Error::NestedCheckout { .. }))
    ));
}
