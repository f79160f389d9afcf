//! The idle list: open connections waiting for a borrower, most recently returned last,
//! with the rules for which of them may still be handed out.

use std::time::Duration;

use tokio::time::Instant;

use super::State;
use crate::config::PoolConfig;
use crate::conn::{Conn, Ctx};
use crate::status::DiscardReason;

struct IdleConn {
    conn: Box<Conn>,
    since: Instant,
}

/// Idle connections; the oldest returns sit at the front.
#[derive(Default)]
pub(super) struct IdleList {
    list: Vec<IdleConn>,
}

impl IdleList {
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    /// A connection becomes idle.
    #[inline]
    pub(super) fn push(&mut self, conn: Box<Conn>, now: Instant) {
        self.list.push(IdleConn { conn, since: now });
    }

    /// Removes the idle connections that are broken, past `max_lifetime`, or idle
    /// longer than `idle_timeout` beyond `min_idle` (oldest first), counted as
    /// discarded. Returns them, to be dropped after the lock is released.
    fn reap(
        &mut self,
        now: Instant,
        idle_timeout: Option<Duration>,
        min_idle: usize,
        ctx: &Ctx,
    ) -> Vec<Box<Conn>> {
        let mut trash = Vec::new();
        let mut kept = Vec::with_capacity(self.list.len());
        let total = self.list.len();
        for (i, idle) in std::mem::take(&mut self.list).into_iter().enumerate() {
            let remaining_after = total - i - 1 + kept.len();
            let idle_too_long = idle_timeout.is_some_and(|t| now.duration_since(idle.since) >= t);
            let reason = match stale(&idle.conn, now) {
                None if idle_too_long && remaining_after >= min_idle => {
                    Some(DiscardReason::IdleTimeout)
                }
                reason => reason,
            };
            match reason {
                Some(reason) => {
                    ctx.discard(reason);
                    trash.push(idle.conn);
                }
                None => kept.push(idle),
            }
        }
        self.list = kept;
        trash
    }

    /// Takes the connection idle the longest (the pool shrinks).
    pub(super) fn pop_oldest(&mut self) -> Option<Box<Conn>> {
        (!self.list.is_empty()).then(|| self.list.remove(0).conn)
    }

    /// Takes every idle connection (the pool is closing or being drained).
    pub(super) fn drain(&mut self) -> Vec<Box<Conn>> {
        self.list.drain(..).map(|idle| idle.conn).collect()
    }
}

impl State {
    /// Takes an idle connection that is open and not expired, with the time it became
    /// idle, moving stale ones into `trash` on the way (counted as discarded, their
    /// slots given up; to be dropped after the lock is released). Most recently returned
    /// first, so surplus connections age out through `idle_timeout`.
    pub(super) fn pop_idle(
        &mut self,
        now: Instant,
        ctx: &Ctx,
        trash: &mut Vec<Box<Conn>>,
    ) -> Option<(Box<Conn>, Instant)> {
        while let Some(idle) = self.idle.list.pop() {
            let reason = match stale(&idle.conn, now) {
                None if idle.conn.id() < self.retire_below => Some(DiscardReason::Retired),
                reason => reason,
            };
            match reason {
                Some(reason) => {
                    self.slots.lost(1);
                    ctx.discard(reason);
                    trash.push(idle.conn);
                }
                None => return Some((idle.conn, idle.since)),
            }
        }
        None
    }

    /// Closes the idle connections past their time (see [`IdleList::reap`]), giving up
    /// their slots.
    pub(super) fn reap_idle(
        &mut self,
        now: Instant,
        cfg: &PoolConfig,
        ctx: &Ctx,
    ) -> Vec<Box<Conn>> {
        let trash = self.idle.reap(now, cfg.idle_timeout, cfg.min_idle, ctx);
        self.slots.lost(trash.len());
        trash
    }
}

/// Why an idle or returning connection cannot be reused, if it cannot: closed, or past
/// its lifetime.
fn stale(conn: &Conn, now: Instant) -> Option<DiscardReason> {
    if conn.is_broken() {
        Some(DiscardReason::Broken)
    } else {
        expired(conn, now)
    }
}

/// `Expired` if the connection reached `max_lifetime`.
#[inline]
pub(super) fn expired(conn: &Conn, now: Instant) -> Option<DiscardReason> {
    conn.expires()
        .is_some_and(|at| at <= now)
        .then_some(DiscardReason::Expired)
}
