//! Held connections (`PooledConn`, `ConnSet`): returned to the pool when dropped.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use tokio::time::Instant;

use crate::conn::Conn;
use crate::engine::{HolderKey, Lease};
use crate::status::Site;

use super::db::Db;

/// A connection checked out of the pool (state *held*).
///
/// It borrows the [`Db`] it came from mutably, so while it lives that `Db` cannot check
/// out another connection, the connection cannot outlive the `Db`, and it cannot be moved
/// into `tokio::spawn`. It derefs to [`Conn`] for statements. Dropping it — or calling
/// [`release`](PooledConn::release) — returns the connection; an open transaction is
/// rolled back and touched session state reset before anyone else gets it.
///
/// Its own accessors are associated functions (`PooledConn::checked_out_at(&conn)`) so
/// they never shadow the connection's methods.
#[must_use = "a connection is returned to the pool as soon as it is dropped"]
pub struct PooledConn<'db> {
    db: &'db Db,
    conn: Option<Box<Conn>>,
    holder: HolderKey,
    site: Site,
    since: Instant,
}

impl std::fmt::Debug for PooledConn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConn")
            .field("site", &self.site)
            .field("conn", &self.conn)
            .finish()
    }
}

impl<'db> PooledConn<'db> {
    pub(crate) fn new(db: &'db Db, lease: Lease, site: Site) -> Self {
        PooledConn {
            db,
            conn: Some(lease.conn),
            holder: lease.key,
            site,
            since: lease.since,
        }
    }

    /// Returns the connection to the pool now. Same as dropping it, but says so.
    pub fn release(this: Self) {
        drop(this);
    }

    /// This checkout is meant to be held long (the shared lane's keepers): it is not
    /// reported by `leak_threshold`.
    pub(crate) fn expect_long_hold(this: &Self) {
        this.db.pool.shared.expect_long_hold(this.holder);
    }

    /// Where this connection was checked out.
    pub fn checked_out_at(this: &Self) -> Site {
        this.site
    }

    /// How long it has been held.
    pub fn held_for(this: &Self) -> Duration {
        this.since.elapsed()
    }
}

impl Deref for PooledConn<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        // `conn` is only taken in `drop`.
        self.conn
            .as_deref()
            .unwrap_or_else(|| unreachable!("PooledConn used after its connection was returned"))
    }
}

impl DerefMut for PooledConn<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("PooledConn used after its connection was returned"))
    }
}

impl Drop for PooledConn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.db
                .pool
                .shared
                .give_back(conn, self.holder, self.since, self.site);
        }
    }
}

/// Several connections checked out at once by [`Db::acquire_many`], all returned when
/// dropped.
#[must_use = "the connections are returned to the pool as soon as this is dropped"]
pub struct ConnSet<'db> {
    db: &'db Db,
    conns: Vec<(Box<Conn>, HolderKey)>,
    site: Site,
    since: Instant,
}

impl std::fmt::Debug for ConnSet<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnSet")
            .field("len", &self.conns.len())
            .field("site", &self.site)
            .finish()
    }
}

impl<'db> ConnSet<'db> {
    pub(crate) fn new(
        db: &'db Db,
        conns: Vec<(Box<Conn>, HolderKey)>,
        site: Site,
        since: Instant,
    ) -> Self {
        ConnSet {
            db,
            conns,
            site,
            since,
        }
    }

    /// How many connections the set holds.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The `i`-th connection.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Conn> {
        self.conns.get_mut(i).map(|(c, _)| &mut **c)
    }

    /// All connections, to use one at a time.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Conn> {
        self.conns.iter_mut().map(|(c, _)| &mut **c)
    }

    /// All connections at once, to use concurrently: `let [a, b] = set.array_mut()?;`.
    /// `None` if the set does not hold exactly `N`.
    pub fn array_mut<const N: usize>(&mut self) -> Option<[&mut Conn; N]> {
        let v: Vec<&mut Conn> = self.iter_mut().collect();
        v.try_into().ok()
    }

    /// Where the set was checked out.
    pub fn checked_out_at(&self) -> Site {
        self.site
    }

    /// How long it has been held.
    pub fn held_for(&self) -> Duration {
        self.since.elapsed()
    }
}

impl Drop for ConnSet<'_> {
    fn drop(&mut self) {
        for (conn, key) in self.conns.drain(..) {
            self.db
                .pool
                .shared
                .give_back(conn, key, self.since, self.site);
        }
    }
}
