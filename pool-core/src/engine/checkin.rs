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
use crate::status::{DiscardReason, Site};

impl Shared {
    /// A borrower gives back the connection it held since `since` (recorded under
    /// `key`, checked out at `site`): its use time is counted, then it is checked in.
    pub(crate) fn give_back(
        self: &Arc<Self>,
        conn: Box<Conn>,
        key: HolderKey,
        since: Instant,
        site: Site,
    ) {
        let now = Instant::now();
        let held = now.saturating_duration_since(since);
        let nanos = u64::try_from(held.as_nanos()).unwrap_or(u64::MAX);
        self.ctx.telemetry.used(nanos, site);
        // With metrics the sites' totals are the counter (`Telemetry::use_nanos`).
        #[cfg(not(feature = "metrics"))]
        self.ctx
            .counters
            .use_nanos
            .fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
        self.hold.returned(nanos);
        self.checkin_at(conn, Some(key), now);
    }

    /// Returns a connection (from a guard holding one on its way to a borrower).
    pub(crate) fn checkin(self: &Arc<Self>, conn: Box<Conn>, holder: Option<HolderKey>) {
        self.checkin_at(conn, holder, Instant::now());
    }

    fn checkin_at(self: &Arc<Self>, conn: Box<Conn>, holder: Option<HolderKey>, now: Instant) {
        // Dirty, or an `after_release` hook to run: through the cleaning task.
        if !conn.is_clean() || self.ctx.config.after_release.is_some() {
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
        } else if st.slots.over() || conn.id() < st.retire_below {
            // The pool shrank (`resize`) or is being renewed (`drain`).
            Some(DiscardReason::Retired)
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

    /// Closes a connection handed over to a waiter (recorded as held) whose discard was
    /// counted already (by a hook's check).
    pub(super) fn discard_held_counted(self: &Arc<Self>, conn: Box<Conn>, key: HolderKey) {
        let mut st = self.lock();
        st.holders.remove(key);
        st.slots.lost(1);
        self.after_shrink(&mut st);
        drop(st);
        drop(conn);
    }

    /// Closes a connection whose discard was counted already (by the check after a
    /// hook).
    pub(super) fn discard_counted(self: &Arc<Self>, conn: Box<Conn>) {
        let mut st = self.lock();
        st.slots.lost(1);
        self.after_shrink(&mut st);
        drop(st);
        drop(conn);
    }

    /// Accounts for a connection closed for `reason` (drop it after the lock is released).
    fn lose_one(self: &Arc<Self>, st: &mut State, reason: DiscardReason) {
        st.slots.lost(1);
        self.ctx.discard(reason);
        self.after_shrink(st);
    }

    /// After the pool lost a connection: open replacements for waiters, wake `close()`.
    pub(super) fn after_shrink(self: &Arc<Self>, st: &mut State) {
        if st.closed {
            self.shrunk.notify_waiters();
        } else {
            self.spawn_connects_now(st);
        }
    }
}
