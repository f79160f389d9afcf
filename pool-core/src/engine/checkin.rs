//! Check-in: a connection coming back from a borrower goes to the oldest waiter or the
//! idle list in one critical section when it is clean, through a cleaning task when it
//! is not, and is closed when it is broken, expired or the pool is closed. Losing a
//! connection starts its replacement when waiters need one.

use std::sync::{Arc, MutexGuard};

use tokio::time::Instant;

use super::holders::HolderKey;
use super::idle::expired;
use super::{Shared, State, maintain};
use crate::conn::Conn;
use crate::status::DiscardReason;

impl Shared {
    /// Returns a connection from a borrower (or a guard holding one).
    pub(crate) fn checkin(self: &Arc<Self>, conn: Box<Conn>, holder: Option<HolderKey>) {
        if !conn.is_clean() {
            if let Some(key) = holder {
                self.lock().holders.remove(key);
            }
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(maintain::clean_and_return(Arc::clone(self), conn));
                }
                Err(_) => self.discard(conn, DiscardReason::FailedReset),
            }
            return;
        }
        let now = Instant::now();
        let mut st = self.lock();
        if let Some(key) = holder {
            st.holders.remove(key);
        }
        self.put_back(st, conn, now);
    }

    /// Closes a connection that was handed over to a waiter (recorded as held) and found
    /// broken.
    pub(super) fn discard_held(
        self: &Arc<Self>,
        conn: Box<Conn>,
        key: HolderKey,
        reason: DiscardReason,
    ) {
        {
            let mut st = self.lock();
            st.holders.remove(key);
            self.lose_one(&mut st, reason);
        }
        drop(conn);
    }

    /// Puts a clean connection back (or closes it if expired or the pool is closed).
    pub(super) fn put_back(
        self: &Arc<Self>,
        mut st: MutexGuard<'_, State>,
        conn: Box<Conn>,
        now: Instant,
    ) {
        let reason = if st.closed {
            Some(DiscardReason::Closed)
        } else {
            expired(&conn, now)
        };
        match reason {
            None => st.hand_off(conn, now),
            Some(reason) => {
                self.lose_one(&mut st, reason);
                drop(st);
                drop(conn);
            }
        }
    }

    /// Closes a connection instead of reusing it.
    pub(super) fn discard(self: &Arc<Self>, conn: Box<Conn>, reason: DiscardReason) {
        self.lose_one(&mut self.lock(), reason);
        drop(conn);
    }

    /// Accounts for a connection closed for `reason` (drop it after the lock is released).
    fn lose_one(self: &Arc<Self>, st: &mut State, reason: DiscardReason) {
        st.slots.lost(1);
        self.ctx.counters.discard(reason);
        self.after_shrink(st);
    }

    /// After the pool lost a connection: open replacements for waiters, wake `close()`.
    pub(super) fn after_shrink(self: &Arc<Self>, st: &mut State) {
        if st.closed {
            self.shrunk.notify_waiters();
        } else {
            self.spawn_connects(st);
        }
    }
}
