//! `Acquire`: the named future of `db.acquire()`, a thin wrapper over the engine's
//! checkout that turns what it hands out into a [`PooledConn`].

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::engine::Acquiring;
use crate::error::Result;
use crate::status::Site;

use super::db::Db;
use super::pooled::PooledConn;

/// The future returned by [`Db::acquire`]: resolves to a held connection.
///
/// An idle connection is taken in the first poll, with no allocation. Otherwise the task
/// joins a FIFO queue until a connection is returned or opened, or `acquire_timeout`
/// passes.
///
/// Cancellation: dropping it at any point leaves the pool as if it had never been called;
/// a connection handed over at the moment of the drop goes back to the pool.
#[must_use = "futures do nothing unless awaited"]
pub struct Acquire<'db> {
    db: &'db Db,
    site: Site,
    checkout: Acquiring,
}

impl std::fmt::Debug for Acquire<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquire")
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

impl<'db> Acquire<'db> {
    pub(crate) fn new(db: &'db Db, site: &'static Location<'static>) -> Acquire<'db> {
        Acquire {
            db,
            site: Site(site),
            checkout: Acquiring::new(),
        }
    }
}

impl<'db> Future for Acquire<'db> {
    type Output = Result<PooledConn<'db>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let (db, site) = (this.db, this.site);
        this.checkout.poll(&db.pool.shared, site, cx, |lease| {
            PooledConn::new(db, lease, site)
        })
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        self.checkout.abandon(&self.db.pool.shared);
    }
}
