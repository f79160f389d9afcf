//! The holders record: who holds each checked-out connection (checkout site, task,
//! since when), for the nested-checkout check, leak warnings, `pool.holders()` and the
//! details of an acquire timeout.

use std::time::Duration;

use tokio::time::Instant;

use crate::conn::Conn;
use crate::status::{Holder, Site, TaskKey};

/// Index of a holder record; stays valid until the connection is returned.
pub(crate) type HolderKey = usize;

/// One checked-out connection.
pub(super) struct HolderEntry {
    site: Site,
    task: TaskKey,
    since: Instant,
    backend_pid: i32,
    /// Warned about as a possible leak already.
    warned: bool,
}

impl HolderEntry {
    /// The record of `task` holding `conn` since `since`, checked out at `site`.
    #[inline]
    pub(super) fn new(site: Site, task: TaskKey, since: Instant, conn: &Conn) -> HolderEntry {
        HolderEntry {
            site,
            task,
            since,
            backend_pid: conn.backend_pid(),
            warned: false,
        }
    }
}

/// A connection held past `leak_threshold`, to warn about (once).
pub(super) struct Overdue {
    pub(super) site: Site,
    pub(super) task: TaskKey,
    pub(super) held_for: Duration,
    pub(super) backend_pid: i32,
}

/// The records, in slots reused as connections come back.
pub(super) struct Holders {
    entries: Vec<Option<HolderEntry>>,
    free: Vec<usize>,
    /// Off only in benchmarks (`__private::bookkeeping`): then nothing is recorded.
    on: bool,
}

impl Holders {
    pub(super) fn new(on: bool) -> Holders {
        Holders {
            entries: Vec::new(),
            free: Vec::new(),
            on,
        }
    }

    /// Records who holds a connection. With records off, returns a key that matches no
    /// record.
    pub(super) fn record(&mut self, entry: HolderEntry) -> HolderKey {
        if !self.on {
            return HolderKey::MAX;
        }
        if let Some(i) = self.free.pop() {
            self.entries[i] = Some(entry);
            i
        } else {
            self.entries.push(Some(entry));
            self.entries.len() - 1
        }
    }

    /// The connection recorded under `key` is meant to be held long (the shared lane's):
    /// never warned about as a leak.
    pub(super) fn expect_long(&mut self, key: HolderKey) {
        if let Some(Some(h)) = self.entries.get_mut(key) {
            h.warned = true;
        }
    }

    /// The connection recorded under `key` came back.
    pub(super) fn remove(&mut self, key: HolderKey) {
        if let Some(slot) = self.entries.get_mut(key)
            && slot.take().is_some()
        {
            self.free.push(key);
        }
    }

    /// The site of a connection `task` already holds, if any.
    pub(super) fn held_by(&self, task: TaskKey) -> Option<Site> {
        if self.entries.len() == self.free.len() {
            return None;
        }
        self.entries
            .iter()
            .flatten()
            .find(|h| h.task == task)
            .map(|h| h.site)
    }

    /// Everyone holding a connection now, longest-held first.
    pub(super) fn snapshot(&self, now: Instant) -> Vec<Holder> {
        let mut out: Vec<Holder> = self
            .entries
            .iter()
            .flatten()
            .map(|h| Holder {
                site: h.site,
                task: h.task,
                held_for: now - h.since,
                backend_pid: h.backend_pid,
            })
            .collect();
        out.sort_by_key(|h| std::cmp::Reverse(h.held_for));
        out
    }

    /// The connections held for `threshold` or longer that were not warned about yet;
    /// marks them warned.
    pub(super) fn overdue(&mut self, now: Instant, threshold: Duration) -> Vec<Overdue> {
        let mut out = Vec::new();
        for h in self.entries.iter_mut().flatten() {
            if !h.warned && now.duration_since(h.since) >= threshold {
                h.warned = true;
                out.push(Overdue {
                    site: h.site,
                    task: h.task,
                    held_for: now.duration_since(h.since),
                    backend_pid: h.backend_pid,
                });
            }
        }
        out
    }
}
