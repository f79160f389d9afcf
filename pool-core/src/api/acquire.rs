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
    /// The `acquire` span and when it began, when a subscriber wants it.
    #[cfg(feature = "spans")]
    span: Option<(tracing::Span, tokio::time::Instant)>,
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
            #[cfg(feature = "spans")]
            span: None,
        }
    }
}

impl<'db> Future for Acquire<'db> {
    type Output = Result<PooledConn<'db>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let (db, site) = (this.db, this.site);
        #[cfg(not(feature = "spans"))]
        return this.checkout.poll(&db.pool.shared, site, cx, |lease| {
            PooledConn::new(db, lease, site)
        });
        #[cfg(feature = "spans")]
        if this.span.is_none() {
            let span = tracing::debug_span!(
                target: "pool_core",
                "acquire",
                code.site = %site,
                waited_us = tracing::field::Empty,
            );
            if !span.is_disabled() {
                this.span = Some((span, tokio::time::Instant::now()));
            }
        }
        #[cfg(feature = "spans")]
        {
            let _entered = this.span.as_ref().map(|(span, _)| span.enter());
            let polled = this.checkout.poll(&db.pool.shared, site, cx, |lease| {
                PooledConn::new(db, lease, site)
            });
            if let (Poll::Ready(_), Some((span, started))) = (&polled, &this.span) {
                let waited = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                span.record("waited_us", waited);
            }
            polled
        }
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        self.checkout.abandon(&self.db.pool.shared);
    }
}
