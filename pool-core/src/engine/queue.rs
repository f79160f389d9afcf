//! The waiter queue: tasks waiting for a connection, first come first served, and the
//! hand-off of a connection to the oldest of them.
//!
//! A single waiter is handed a connection already recorded as held by its task (in the
//! same critical section), so it takes no lock when it wakes, and a task that returns a
//! connection and asks again at once cannot barge ahead of those already waiting. An
//! `acquire_many` waiter gathers connections until it has all it needs.

use std::collections::VecDeque;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::State;
use super::holders::{HolderEntry, HolderKey};
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::status::{Site, TaskKey};

/// A connection handed to a checkout: already recorded as held by its task (holder
/// key, and the time of the hand-over).
pub(crate) struct Lease {
    pub(crate) conn: Box<Conn>,
    pub(crate) key: HolderKey,
    pub(crate) since: Instant,
}

/// What a single waiter receives.
pub(super) type Handoff = Result<Lease>;
/// What an `acquire_many` waiter receives.
pub(super) type HandoffMany = Result<Vec<Box<Conn>>>;

/// A task waiting for one connection.
struct OneWaiter {
    tx: oneshot::Sender<Handoff>,
    /// Who waits: recorded as the holder when a connection is handed over, so the waiter
    /// needs no second trip through the lock.
    site: Site,
    task: TaskKey,
    /// When the acquire gives up. One `acquire_timeout` for all and a FIFO queue make
    /// deadlines grow from front to back, which is what lets one sweeper serve them all.
    deadline: Instant,
}

enum Waiter {
    One(OneWaiter),
    Many {
        id: u64,
        need: usize,
        got: Vec<Box<Conn>>,
        tx: oneshot::Sender<HandoffMany>,
    },
}

/// The FIFO queue and its counts.
#[derive(Default)]
pub(super) struct Queue {
    waiters: VecDeque<Waiter>,
    /// Waiter entries whose task still waits.
    waiting: usize,
    /// Connections those waiters still need.
    need: usize,
    /// Of those, needed by `acquire_many` waiters.
    many_need: usize,
    /// Connections `acquire_many` waiters have gathered (held until they have all).
    many_got: usize,
    next_id: u64,
}

impl Queue {
    /// Tasks waiting.
    #[inline]
    pub(super) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Connections single waiters still need, and `acquire_many` waiters (with how many
    /// those have gathered).
    pub(super) fn need_split(&self) -> (usize, usize, usize) {
        (self.need - self.many_need, self.many_need, self.many_got)
    }

    /// The deadline of the oldest single waiter (all share one `acquire_timeout`, so it
    /// says when it joined).
    pub(super) fn oldest_deadline(&self) -> Option<Instant> {
        self.waiters.iter().find_map(|w| match w {
            Waiter::One(one) if !one.tx.is_closed() => Some(one.deadline),
            _ => None,
        })
    }

    /// Connections the waiting tasks still need.
    #[inline]
    pub(super) fn need(&self) -> usize {
        self.need
    }

    /// Queues a task for one connection (at the head when `front`: it was served
    /// already and the connection turned out unusable).
    #[inline]
    pub(super) fn push_one(
        &mut self,
        site: Site,
        task: TaskKey,
        deadline: Instant,
        front: bool,
    ) -> oneshot::Receiver<Handoff> {
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter::One(OneWaiter {
            tx,
            site,
            task,
            deadline,
        });
        self.push(waiter, 1, front);
        rx
    }

    /// Queues a task for `need` connections at once (at the head when `front`: it was
    /// served already and gave the set back). Returns the entry's id.
    pub(super) fn push_many(
        &mut self,
        need: usize,
        front: bool,
    ) -> (u64, oneshot::Receiver<HandoffMany>) {
        let (tx, rx) = oneshot::channel();
        self.next_id += 1;
        let id = self.next_id;
        let waiter = Waiter::Many {
            id,
            need,
            got: Vec::with_capacity(need),
            tx,
        };
        self.push(waiter, need, front);
        self.many_need += need;
        (id, rx)
    }

    #[inline]
    fn push(&mut self, waiter: Waiter, need: usize, front: bool) {
        if front {
            self.waiters.push_front(waiter);
        } else {
            self.waiters.push_back(waiter);
        }
        self.waiting += 1;
        self.need += need;
    }

    /// A single waiter was served (or failed) and no longer waits.
    #[inline]
    fn served_one(&mut self) {
        self.waiting -= 1;
        self.need -= 1;
    }

    /// A single waiter gave up without receiving anything. Its entry is left for the
    /// hand-off to skip, and swept out when leavers pile up.
    pub(super) fn leave_one(&mut self) {
        self.served_one();
        if self.waiters.len() > 2 * self.waiting + 64 {
            self.waiters
                .retain(|w| !matches!(w, Waiter::One(w) if w.tx.is_closed()));
        }
    }

    /// A multi-connection waiter gave up: its entry is removed and what it had gathered
    /// returned (`None` if the entry was gone already).
    pub(super) fn leave_many(&mut self, id: u64) -> Option<Vec<Box<Conn>>> {
        let pos = self
            .waiters
            .iter()
            .position(|w| matches!(w, Waiter::Many { id: wid, .. } if *wid == id))?;
        match self.waiters.remove(pos) {
            Some(Waiter::Many { need, got, .. }) => {
                self.waiting -= 1;
                self.left_many(need, got.len());
                Some(got)
            }
            _ => None,
        }
    }

    /// Wakes every waiter with an error. Returns the connections multi-waiters had
    /// gathered (still counted in the pool's size).
    pub(super) fn fail_all(&mut self, error: impl Fn() -> Error) -> Vec<Box<Conn>> {
        let mut gathered = Vec::new();
        for w in std::mem::take(&mut self.waiters) {
            match w {
                Waiter::One(w) => {
                    // If the send fails the waiter is leaving and `leave_one` accounts.
                    if w.tx.send(Err(error())).is_ok() {
                        self.served_one();
                    }
                }
                Waiter::Many { need, got, tx, .. } => {
                    // `leave_many` will not find the entry: account here either way.
                    self.waiting -= 1;
                    self.left_many(need, got.len());
                    gathered.extend(got);
                    let _ = tx.send(Err(error()));
                }
            }
        }
        gathered
    }

    /// An `acquire_many` waiter that needed `need` and had `got` left the queue.
    fn left_many(&mut self, need: usize, got: usize) {
        self.need -= need - got;
        self.many_need -= need - got;
        self.many_got -= got;
    }

    /// Removes the single waiters whose deadline passed, to be failed with `timeout`
    /// (once the status they report is taken). Returns the next deadline of those left.
    /// Expired waiters are normally at the front; the whole queue is scanned all the
    /// same (this runs about once per `acquire_timeout`), so a waiter put back at the
    /// front after a broken hand-over cannot hide the deadlines behind it.
    pub(super) fn take_expired(&mut self, now: Instant) -> (Expired, Option<Instant>) {
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        let mut i = 0;
        while i < self.waiters.len() {
            match &self.waiters[i] {
                Waiter::One(w) if !w.tx.is_closed() && w.deadline <= now => {
                    if let Some(Waiter::One(w)) = self.waiters.remove(i) {
                        expired.push(w.tx);
                    }
                }
                Waiter::One(w) if !w.tx.is_closed() => {
                    next = Some(next.map_or(w.deadline, |n| n.min(w.deadline)));
                    i += 1;
                }
                // Leaving (`leave_one` accounts for it), or an `acquire_many`, which keeps a
                // deadline of its own.
                _ => i += 1,
            }
        }
        (Expired(expired), next)
    }

    /// Fails the waiters taken by [`Queue::take_expired`]. Returns how many were
    /// still waiting (the others were leaving, and account for themselves).
    pub(super) fn fail_expired(&mut self, expired: Expired, error: impl Fn() -> Error) -> u64 {
        let mut failed = 0;
        for tx in expired.0 {
            if tx.send(Err(error())).is_ok() {
                self.served_one();
                failed += 1;
            }
        }
        failed
    }
}

impl State {
    /// Gives a connection to the oldest waiter, or makes it idle. A single waiter gets
    /// it recorded as held by its task.
    pub(super) fn hand_off(&mut self, conn: Box<Conn>, now: Instant) {
        let State {
            queue,
            holders,
            idle,
            ..
        } = self;
        // Connections given back by a multi-waiter that left; rarely any, and then the
        // vector allocates.
        let mut more: Vec<Box<Conn>> = Vec::new();
        let mut next = Some(conn);
        while let Some(mut conn) = next.take().or_else(|| more.pop()) {
            loop {
                match queue.waiters.front_mut() {
                    None => {
                        idle.push(conn, now);
                        break;
                    }
                    Some(Waiter::One(w)) if w.tx.is_closed() => {
                        queue.waiters.pop_front();
                    }
                    Some(Waiter::One(_)) => {
                        let Some(Waiter::One(w)) = queue.waiters.pop_front() else {
                            break;
                        };
                        let key = holders.record(HolderEntry::new(w.site, w.task, now, &conn));
                        match w.tx.send(Ok(Lease {
                            conn,
                            key,
                            since: now,
                        })) {
                            Ok(()) => {
                                queue.served_one();
                                break;
                            }
                            Err(Ok(back)) => {
                                holders.remove(back.key);
                                conn = back.conn;
                            }
                            Err(Err(_)) => break,
                        }
                    }
                    Some(Waiter::Many { tx, .. }) if tx.is_closed() => {
                        // Its task is leaving; `leave_many` will not find the entry once
                        // it is popped, so account for it here.
                        if let Some(Waiter::Many { need, got, .. }) = queue.waiters.pop_front() {
                            queue.waiting -= 1;
                            queue.left_many(need, got.len());
                            more.extend(got);
                        }
                    }
                    Some(Waiter::Many { need, got, .. }) => {
                        got.push(conn);
                        queue.need -= 1;
                        queue.many_need -= 1;
                        queue.many_got += 1;
                        if got.len() == *need
                            && let Some(Waiter::Many { got, tx, .. }) = queue.waiters.pop_front()
                        {
                            queue.waiting -= 1;
                            queue.many_got -= got.len();
                            if let Err(Ok(got)) = tx.send(Ok(got)) {
                                // The waiter left between the check and the send.
                                more.extend(got);
                            }
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// Waiters whose deadline passed, taken out of the queue but not yet told.
pub(super) struct Expired(Vec<oneshot::Sender<Handoff>>);

impl Expired {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}
