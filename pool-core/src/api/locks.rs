//! Table lock modes and session advisory locks.

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};

use pool_sql::{Kind, Touches};

use crate::conn::{Conn, Place, one_row};
use crate::error::{Error, Result};
use crate::stmt::SqlParts;

/// The mode of [`Tx::lock_table`](crate::Tx::lock_table), from weakest to strongest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// `ACCESS SHARE`: conflicts only with `ACCESS EXCLUSIVE`.
    AccessShare,
    /// `ROW SHARE`.
    RowShare,
    /// `ROW EXCLUSIVE`: what `INSERT`/`UPDATE`/`DELETE` take.
    RowExclusive,
    /// `SHARE UPDATE EXCLUSIVE`.
    ShareUpdateExclusive,
    /// `SHARE`: blocks writers.
    Share,
    /// `SHARE ROW EXCLUSIVE`.
    ShareRowExclusive,
    /// `EXCLUSIVE`: allows only concurrent readers.
    Exclusive,
    /// `ACCESS EXCLUSIVE`: blocks everything, including readers.
    AccessExclusive,
}

impl LockMode {
    pub(crate) fn as_sql(self) -> &'static str {
        match self {
            LockMode::AccessShare => "ACCESS SHARE",
            LockMode::RowShare => "ROW SHARE",
            LockMode::RowExclusive => "ROW EXCLUSIVE",
            LockMode::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            LockMode::Share => "SHARE",
            LockMode::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            LockMode::Exclusive => "EXCLUSIVE",
            LockMode::AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }
}

/// A session advisory lock held on a connection, unlocked when dropped.
///
/// It borrows the connection, so the connection cannot be released while the lock is
/// held; run statements through the guard (it derefs to [`Conn`]). The pool also runs
/// `pg_advisory_unlock_all()` before the connection is reused, so a lock can never leak
/// to another borrower.
#[must_use = "the advisory lock is released when this guard is dropped"]
pub struct AdvisoryLock<'c> {
    conn: &'c mut Conn,
    key: i64,
    held: bool,
}

impl std::fmt::Debug for AdvisoryLock<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvisoryLock")
            .field("key", &self.key)
            .finish()
    }
}

fn session(text: &str) -> SqlParts<'_> {
    SqlParts::known(text, Kind::Session, Touches::ADVISORY)
}

impl Conn {
    /// Takes the session advisory lock `key` (`pg_advisory_lock`), waiting for it up to
    /// the statement timeout.
    ///
    /// Cancellation: the wait is cancelled on the server; the lock is not left held.
    pub async fn advisory_lock(&mut self, key: i64) -> Result<AdvisoryLock<'_>> {
        self.rows(session("SELECT pg_advisory_lock($1)"), &[&key], Place::Conn)
            .await?;
        Ok(AdvisoryLock {
            conn: self,
            key,
            held: true,
        })
    }

    /// Takes the session advisory lock `key` if it is free (`pg_try_advisory_lock`).
    ///
    /// Cancellation: as [`Conn::advisory_lock`].
    pub async fn try_advisory_lock(&mut self, key: i64) -> Result<Option<AdvisoryLock<'_>>> {
        let row = one_row(
            self.rows(
                session("SELECT pg_try_advisory_lock($1)"),
                &[&key],
                Place::Conn,
            )
            .await?,
        )?;
        let taken: bool = row.try_get(0).map_err(|e| Error::Client(Box::new(e)))?;
        Ok(taken.then_some(AdvisoryLock {
            conn: self,
            key,
            held: true,
        }))
    }
}

impl AdvisoryLock<'_> {
    /// The lock's key.
    pub fn key(this: &Self) -> i64 {
        this.key
    }

    /// Unlocks now and reports whether the server held it.
    ///
    /// Cancellation: the unlock still happens before the connection's next use.
    pub async fn unlock(mut this: Self) -> Result<bool> {
        this.held = false;
        let key = this.key;
        let row = one_row(
            this.conn
                .rows(
                    session("SELECT pg_advisory_unlock($1)"),
                    &[&key],
                    Place::Conn,
                )
                .await?,
        )?;
        row.try_get(0).map_err(|e| Error::Client(Box::new(e)))
    }
}

impl Deref for AdvisoryLock<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl DerefMut for AdvisoryLock<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
    }
}

impl Drop for AdvisoryLock<'_> {
    fn drop(&mut self) {
        if self.held {
            let sql = Cow::Owned(format!("SELECT pg_advisory_unlock({})", self.key));
            self.conn.defer(sql);
        }
    }
}
