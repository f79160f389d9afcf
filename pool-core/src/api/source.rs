//! Connection sources: what a function that needs a connection accepts.
//!
//! A function written as `async fn f(conn: &mut impl ConnSource)` (which is what
//! `#[with_conn]` makes of `conn: &mut Conn`) can be called with `&mut Db` — it then
//! checks a connection out and returns it at the end — or with a connection the caller
//! already holds, which it reuses. That is how helpers avoid the nested checkout that
//! deadlocks pools: the caller that holds a connection passes it down.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::conn::Conn;
use crate::error::Result;

use super::acquire::Acquire;
use super::db::Db;
use super::pooled::PooledConn;
use super::read::ReadDb;
use super::tx::Tx;

mod sealed {
    pub trait Sealed {}
}

/// Something that can provide a connection: `Db` checks one out; `Conn`, `PooledConn`
/// and `Tx` lend the one they hold. Take it as `&mut impl ConnSource` so callers pass
/// `&mut db` or their held `conn` (a `&mut Conn` reborrows implicitly). Sealed.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a connection source",
    label = "expected `&mut Db`, or a held connection (`&mut Conn`, `&mut PooledConn`, `&mut Tx`)",
    note = "a `Pool` hands out nothing itself: call `pool.db()` once per task or request and pass `&mut db`; a function that already holds a connection passes that connection down instead of checking out another"
)]
pub trait ConnSource: sealed::Sealed + Send {
    #[doc(hidden)]
    #[track_caller]
    fn __checkout(&mut self) -> Checkout<'_>;
}

/// A connection source that can begin a transaction: `Db` (check out + `BEGIN`), a held
/// connection (`BEGIN`), or a `Tx` (`SAVEPOINT`). Sealed.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot begin a transaction",
    label = "expected `&mut Db`, `&mut Conn`, `&mut PooledConn` or `&mut Tx`",
    note = "holding `tx: &mut Tx` or `conn: &mut Conn` already? pass it as it is (`f(tx)`, not `f(&mut tx)`): it is already a `&mut`, and a `#[transactional]` helper called with a `Tx` runs in a savepoint of it",
    note = "with a `Pool`: call `pool.db()` once per task and pass `&mut db`",
    note = "the read side (`ReadDb`) begins only read-only transactions: a function that only reads can say so with `#[transactional(read_only)]`; one that writes takes `&mut db`"
)]
pub trait TxSource: ConnSource {}

/// A source that can begin a *fresh* transaction — not one already inside a transaction.
/// A retrying `#[transactional(retry = N)]` needs it: retrying re-runs the whole
/// transaction, which a savepoint inside someone else's transaction cannot do. Sealed.
#[diagnostic::on_unimplemented(
    message = "a retrying `#[transactional]` cannot run inside an outer transaction (`{Self}`)",
    label = "this is already a transaction; a retry could only re-run a savepoint, while the conflict aborted the whole outer transaction",
    note = "call it with `&mut db` or a connection outside any transaction, or drop `retry` and let the outermost transaction retry"
)]
pub trait FreshTxSource: TxSource {}

/// A source a `#[transactional(read_only)]` function accepts: every [`TxSource`], and
/// the read side ([`ReadDb`], whose transactions go to a replica or run read-only on the
/// primary). Sealed.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot begin a read-only transaction",
    label = "expected `&mut Db`, `&mut ReadDb`, `&mut Conn`, `&mut PooledConn` or `&mut Tx`",
    note = "with a `Pool`: call `pool.read_db()` (or `pool.db()`) once per task and pass `&mut` to it"
)]
pub trait ReadTxSource: ConnSource {}

/// A source a retrying `#[transactional(read_only, retry = N)]` function accepts: as
/// [`FreshTxSource`], and the read side ([`ReadDb`]). Sealed.
#[diagnostic::on_unimplemented(
    message = "a retrying `#[transactional]` cannot run inside an outer transaction (`{Self}`)",
    label = "this is already a transaction; a retry could only re-run a savepoint, while the conflict aborted the whole outer transaction",
    note = "call it with `&mut db`, `&mut read_db` or a connection outside any transaction, or drop `retry` and let the outermost transaction retry"
)]
pub trait FreshReadTxSource: ReadTxSource {}

impl sealed::Sealed for Db {}
impl sealed::Sealed for Conn {}
impl sealed::Sealed for PooledConn<'_> {}
impl sealed::Sealed for Tx<'_> {}
impl sealed::Sealed for ReadDb {}

impl ConnSource for Db {
    #[track_caller]
    fn __checkout(&mut self) -> Checkout<'_> {
        Checkout(CheckoutInner::Acquire(Acquire::new(
            self,
            Location::caller(),
        )))
    }
}
impl ConnSource for Conn {
    fn __checkout(&mut self) -> Checkout<'_> {
        Checkout(CheckoutInner::Ready(Some(self)))
    }
}
impl ConnSource for PooledConn<'_> {
    fn __checkout(&mut self) -> Checkout<'_> {
        Checkout(CheckoutInner::Ready(Some(&mut **self)))
    }
}
impl ConnSource for Tx<'_> {
    fn __checkout(&mut self) -> Checkout<'_> {
        Checkout(CheckoutInner::Ready(Some(self.conn())))
    }
}

impl TxSource for Db {}
impl TxSource for Conn {}
impl TxSource for PooledConn<'_> {}
impl TxSource for Tx<'_> {}

impl FreshTxSource for Db {}
impl FreshTxSource for Conn {}
impl FreshTxSource for PooledConn<'_> {}

impl ConnSource for ReadDb {
    #[track_caller]
    fn __checkout(&mut self) -> Checkout<'_> {
        let site = Location::caller();
        let db: &ReadDb = self;
        Checkout(CheckoutInner::Read(Box::pin(async move {
            db.checkout(site).await.map(|(conn, _)| conn)
        })))
    }
}

impl ReadTxSource for Db {}
impl ReadTxSource for Conn {}
impl ReadTxSource for PooledConn<'_> {}
impl ReadTxSource for Tx<'_> {}
impl ReadTxSource for ReadDb {}

impl FreshReadTxSource for Db {}
impl FreshReadTxSource for Conn {}
impl FreshReadTxSource for PooledConn<'_> {}
impl FreshReadTxSource for ReadDb {}

/// The future of [`ConnSource::__checkout`].
#[doc(hidden)]
pub struct Checkout<'a>(CheckoutInner<'a>);

enum CheckoutInner<'a> {
    Ready(Option<&'a mut Conn>),
    Acquire(Acquire<'a>),
    /// The read side's checkout: routed, and maybe made read-only on the primary.
    Read(Pin<Box<dyn Future<Output = Result<PooledConn<'a>>> + Send + 'a>>),
}

impl<'a> Future for Checkout<'a> {
    type Output = Result<ConnRef<'a>>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            CheckoutInner::Ready(conn) => match conn.take() {
                Some(conn) => Poll::Ready(Ok(ConnRef::Borrowed(conn))),
                None => Poll::Pending,
            },
            CheckoutInner::Acquire(acquire) => {
                Pin::new(acquire).poll(cx).map(|r| r.map(ConnRef::Pooled))
            }
            CheckoutInner::Read(checkout) => {
                checkout.as_mut().poll(cx).map(|r| r.map(ConnRef::Pooled))
            }
        }
    }
}

/// A connection from a source: borrowed from the caller, or checked out for the
/// duration (and returned when this is dropped).
#[doc(hidden)]
pub enum ConnRef<'a> {
    Borrowed(&'a mut Conn),
    Pooled(PooledConn<'a>),
}

impl Deref for ConnRef<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        match self {
            ConnRef::Borrowed(c) => c,
            ConnRef::Pooled(c) => c,
        }
    }
}

impl DerefMut for ConnRef<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        match self {
            ConnRef::Borrowed(c) => c,
            ConnRef::Pooled(c) => c,
        }
    }
}
