//! Procedural macros for [pool-core](https://docs.rs/pool-core): `#[with_conn]`,
//! `#[transactional]` and `sql!`. Use them through `pool_core`, which re-exports them.

mod args;
mod expand;
mod func;
mod sql;

use proc_macro::TokenStream;

/// Gives an `async fn` a connection: callers pass `&mut db` (a connection is checked out
/// for the body and returned on every path) or a connection they already hold (it is
/// reused, no checkout).
///
/// ```no_run
/// use pool_core::{with_conn, Conn, Error};
///
/// #[with_conn]
/// async fn persons_in_group(conn: &mut Conn, group: i32) -> Result<Vec<String>, Error> {
///     let rows = conn.query("SELECT id FROM person WHERE group_id = $1", &[&group]).await?;
///     let mut out = Vec::new();
///     for row in rows {
///         out.push(person(conn, row.get(0)).await?); // reuses the held connection
///     }
///     Ok(out)
/// }
///
/// #[with_conn]
/// async fn person(conn: &mut Conn, id: i64) -> Result<String, Error> {
///     Ok(conn.query_one("SELECT name FROM person WHERE id = $1", &[&id]).await?.get(0))
/// }
///
/// # async fn demo(pool: pool_core::Pool) -> Result<(), Error> {
/// let mut db = pool.db();
/// persons_in_group(&mut db, 7).await?;    // checks out, runs, returns
/// let mut conn = db.acquire().await?;
/// persons_in_group(&mut conn, 7).await?;  // runs on the caller's connection
/// # Ok(()) }
/// ```
///
/// The function must be `async`, take exactly one `conn: &mut Conn` parameter, and return
/// `Result<T, E>` with `E: From<pool_core::Error>`. It must not also take a `Db` or
/// `Pool`: checking out from those while the connection is held is the nested checkout
/// that deadlocks pools.
///
/// # Equivalent code without the macro
///
/// ```no_run
/// # use pool_core::{Conn, ConnSource, Error};
/// async fn persons_in_group(source: &mut dyn ConnSource, group: i32) -> Result<Vec<String>, Error> {
///     let mut held = source.__checkout().await?;   // `Db`: acquire; a held connection: reuse
///     let conn: &mut Conn = &mut *held;
///     // … the body …
/// #   let _ = (conn, group);
/// #   Ok(Vec::new())
/// }                                                // a checked-out connection is returned here
/// ```
///
/// Option: `crate = "path"` when `pool_core` is re-exported under another path.
#[proc_macro_attribute]
pub fn with_conn(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::with_conn(args.into(), item.into()).into()
}

/// Runs an `async fn` in a transaction: `BEGIN` with the given options, the body,
/// `COMMIT` on `Ok`; `ROLLBACK` on `Err`, on panic and when the future is dropped. Called
/// with a transaction (`&mut tx`) it nests as a savepoint: an inner `Err` rolls back only
/// the inner work.
///
/// ```no_run
/// use pool_core::{transactional, Error, LockMode, Tx};
///
/// #[transactional(isolation = serializable, retry = 5)]
/// async fn transfer(tx: &mut Tx, from: i64, to: i64, cents: i64) -> Result<(), Error> {
///     tx.lock_table("account", LockMode::RowExclusive).await?;
///     tx.execute("UPDATE account SET cents = cents - $2 WHERE id = $1", &[&from, &cents]).await?;
///     tx.execute("UPDATE account SET cents = cents + $2 WHERE id = $1", &[&to, &cents]).await?;
///     Ok(())
/// }
///
/// # async fn demo(pool: pool_core::Pool) -> Result<(), Error> {
/// let mut db = pool.db();
/// transfer(&mut db, 1, 2, 500).await?;   // checks out, BEGIN … COMMIT, returns
/// # Ok(()) }
/// ```
///
/// Options:
/// - `isolation = read_committed | repeatable_read | serializable`, `read_only`,
///   `deferrable` (only with `serializable, read_only`). They apply to an outermost
///   transaction; a savepoint inherits its transaction's. A `read_only` function also
///   accepts the read side (`&mut read_db` from `pool.read_db()`: replicas); the others
///   do not, since they may write.
/// - `retry = N`: on a serialization failure (SQLSTATE 40001) or deadlock (40P01) — from
///   the body or from `COMMIT` — roll back, wait a jittered exponential backoff
///   (`backoff_ms = ..`, default 10, doubling, capped at 2 s) and run the whole body again,
///   up to N more times; then return the last error. A retrying function only accepts
///   sources that can begin a *fresh* transaction (`&mut db`, a connection — not a
///   `Tx`): retrying a savepoint cannot undo the conflict that aborted the outer
///   transaction. The body must be safe to run again: one that moves a captured value
///   does not compile.
/// - `crate = "path"` when `pool_core` is re-exported under another path.
///
/// The function must be `async`, take exactly one `tx: &mut Tx` parameter and return
/// `Result<T, E>` with `E: From<pool_core::Error>`.
///
/// # Equivalent code without the macro
///
/// ```no_run
/// # use pool_core::{Error, Isolation, TxOptions, TxSource};
/// async fn transfer(source: &mut dyn TxSource, from: i64, to: i64, cents: i64) -> Result<(), Error> {
///     let mut held = source.__checkout().await?;                 // acquire, or reuse
///     let mut tx = held.begin_with(TxOptions::new().isolation(Isolation::Serializable)).await?;
///     let result: Result<(), Error> = async {
///         // … the body, with `tx: &mut Tx` …
/// #       let _ = (&mut tx, from, to, cents);
///         Ok(())
///     }
///     .await;
///     match result {
///         Ok(v) => {
///             tx.commit().await?;
///             Ok(v)
///         }
///         Err(e) => {
///             let _ = tx.rollback().await;
///             Err(e)
///         }
///     }
///     // with retry = N: the above in a loop, re-run on 40001/40P01 after a backoff
/// }
/// ```
#[proc_macro_attribute]
pub fn transactional(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::transactional(args.into(), item.into()).into()
}

/// Classifies a statement at compile time: `sql!("…")` is a `pool_core::Stmt<K>` whose
/// kind `K` decides where it may run — `ReadOnly` (a statement that provably only reads)
/// anywhere including the read side (`ReadDb`, replicas), `Plain` anywhere else, `SessionState` (SET, LISTEN,
/// advisory locks, temp tables, currval…) only on a held connection, `TransactionOnly`
/// (LOCK TABLE, SET LOCAL, FOR UPDATE, xact advisory locks) only in a transaction.
/// Transaction control (`BEGIN`, `COMMIT`, …) is refused at compile time.
///
/// ```no_run
/// # use pool_core::sql;
/// # async fn demo(db: &mut pool_core::Db, msg: &str) -> Result<(), pool_core::Error> {
/// db.execute(sql!("INSERT INTO log (msg) VALUES ($1)"), &[&msg]).await?;   // Plain: fine on Db
/// let mut conn = db.acquire().await?;
/// let mut tx = conn.begin().await?;
/// tx.execute(sql!("LOCK TABLE account"), &[]).await?;                      // fine in a Tx
/// tx.commit().await?;
/// # Ok(()) }
/// ```
///
/// ```compile_fail,E0277
/// # use pool_core::sql;
/// # async fn demo(db: &mut pool_core::Db) -> Result<(), pool_core::Error> {
/// db.execute(sql!("LOCK TABLE account"), &[]).await?;                      // on Db: refused
/// # Ok(()) }
/// ```
///
/// Option: `crate = "path"` first, when `pool_core` is re-exported under another path —
/// the generated `Stmt` is then named through it:
///
/// ```no_run
/// # fn main() {}
/// // pool-core re-exported as `crate::pg`, and used only through it:
/// mod pg {
///     pub use pool_core::*;
/// }
///
/// async fn demo(db: &mut pg::Db) -> Result<(), pg::Error> {
///     db.execute(pg::sql!(crate = "crate::pg", "SELECT 1"), &[]).await?;
///     Ok(())
/// }
/// ```
///
/// # Equivalent code without the macro
///
/// A plain `&str`, classified the same way at run time: a misplaced statement is an
/// `Error::Refused` before anything is sent, instead of a compile error.
#[proc_macro]
pub fn sql(input: TokenStream) -> TokenStream {
    sql::sql(input.into()).into()
}
