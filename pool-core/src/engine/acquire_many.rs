//! Checking out several connections at once, all or none: the task never holds some
//! while waiting for the rest, so two tasks that each need two cannot deadlock each
//! other. The set waits in the same FIFO queue as single checkouts, as one entry that
//! gathers connections until it has them all, with a deadline of its own.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::acquire::{acquire_timed_out, check_room_to_wait, may_check_out};
use super::holders::{HolderEntry, HolderKey};
use super::queue::HandoffMany;
use super::slow::before_acquire;
use super::{Shared, State};
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::status::{AtomicCounters, DiscardReason, Site, TaskKey};

/// Waits for a set of connections; leaves the queue cleanly if abandoned.
struct WaitingMany {
    shared: Arc<Shared>,
    id: u64,
    rx: oneshot::Receiver<HandoffMany>,
    done: bool,
}

impl Drop for WaitingMany {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.rx.close();
        match self.rx.try_recv() {
            Ok(Ok(conns)) => {
                for conn in conns {
                    self.shared.checkin(conn, None);
                }
            }
            Ok(Err(_)) => {}
            Err(_) => {
                let now = Instant::now();
                let mut st = self.shared.lock();
                if let Some(got) = st.queue.leave_many(self.id) {
                    for conn in got {
                        st.hand_off(conn, now);
                    }
                }
            }
        }
    }
}

/// Checks out `n` connections at once, all or none, for `site`. Returns them with
/// their holder records and the time they were handed out.
pub(crate) async fn acquire_many(
    shared: &Arc<Shared>,
    n: usize,
    site: Site,
) -> Result<(Vec<(Box<Conn>, HolderKey)>, Instant)> {
    let task = TaskKey::current();
    let started = Instant::now();
    let mut trash = Vec::new();
    let waiting = {
        let mut st = shared.lock();
        let max = st.slots.max();
        if n > max {
            return Err(Error::config(
                "max_size",
                format!(
                    "is {max}, but acquire_many asked for {n} connections at once; raise max_size or ask for fewer"
                ),
            ));
        }
        may_check_out(shared, &st, task, site)?;
        let mut got = Vec::with_capacity(n);
        if st.queue.waiting() == 0 {
            while got.len() < n {
                match st.pop_idle(started, &shared.ctx, &mut trash) {
                    Some((conn, _)) => got.push(conn),
                    None => break,
                }
            }
        }
        if got.len() == n {
            Gathered::Now(got)
        } else {
            if let Err(e) = check_room_to_wait(shared, &st) {
                for conn in got {
                    st.hand_off(conn, started);
                }
                return Err(e);
            }
            AtomicCounters::bump(&shared.ctx.counters.waits);
            Gathered::Waiting(enqueue_with(shared, &mut st, n, false, got, started))
        }
    };
    drop(trash);
    let deadline = started + shared.acquire_timeout();
    let mut set = Set {
        shared: Arc::clone(shared),
        conns: match waiting {
            Gathered::Now(conns) => conns,
            Gathered::Waiting(waiting) => wait_for_set(shared, n, waiting, deadline).await?,
        },
    };
    // The `before_acquire` hook looks at each once; a set with one refused goes back to
    // the head of the queue for a replacement, holding none of the others meanwhile.
    let mut passed = Vec::new();
    loop {
        let screened =
            tokio::time::timeout_at(deadline, screen(shared, &mut set.conns, &mut passed)).await;
        match screened {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => {
                drop(set);
                return Err(acquire_timed_out(shared));
            }
        }
        let alive = std::mem::take(&mut set.conns);
        let waiting = requeue_set(shared, n, alive)?;
        set.conns = wait_for_set(shared, n, waiting, deadline).await?;
    }
    let now = Instant::now();
    let conns = std::mem::take(&mut set.conns);
    let mut st = shared.lock();
    let registered = register_all(shared, &mut st, conns, task, site, now);
    drop(st);
    Ok((registered, now))
}

/// A set's connections right away, or its place in the queue.
enum Gathered {
    Now(Vec<Box<Conn>>),
    Waiting(WaitingMany),
}

/// Connections of a set not yet handed out: checked back in if the acquire is abandoned
/// (while the hook looks at them, say).
struct Set {
    shared: Arc<Shared>,
    conns: Vec<Box<Conn>>,
}

impl Drop for Set {
    fn drop(&mut self) {
        for conn in self.conns.drain(..) {
            self.shared.checkin(conn, None);
        }
    }
}

/// Runs the `before_acquire` hook on each connection of a set not in `passed` (by id),
/// adding the ones it passes there; discards the ones it refuses (their discard counted
/// by the check). Returns how many it refused.
async fn screen(shared: &Arc<Shared>, conns: &mut Vec<Box<Conn>>, passed: &mut Vec<u64>) -> usize {
    if shared.ctx.config.before_acquire.is_none() {
        return 0;
    }
    let mut refused = 0;
    let mut i = 0;
    while i < conns.len() {
        if passed.contains(&conns[i].id()) {
            i += 1;
        } else if before_acquire(shared, &mut conns[i]).await {
            passed.push(conns[i].id());
            i += 1;
        } else {
            shared.discard_counted(conns.swap_remove(i));
            refused += 1;
        }
    }
    refused
}

/// Waits until the queue hands the set over whole, living; a set with dead connections
/// is sent back to the head of the queue without them.
async fn wait_for_set(
    shared: &Arc<Shared>,
    n: usize,
    mut waiting: WaitingMany,
    deadline: Instant,
) -> Result<Vec<Box<Conn>>> {
    loop {
        let res = tokio::time::timeout_at(deadline, &mut waiting.rx).await;
        let conns = match res {
            Ok(Ok(handoff)) => {
                waiting.done = true;
                handoff?
            }
            Ok(Err(_)) => {
                waiting.done = true;
                return Err(Error::Closed);
            }
            Err(_) => {
                drop(waiting);
                return Err(acquire_timed_out(shared));
            }
        };
        if conns.iter().all(|c| !c.is_broken()) {
            return Ok(conns);
        }
        // Some died while the set was gathered. Never hold the rest while waiting for
        // replacements: close the dead ones, then go back to the head of the queue and
        // give the living ones back, straight into this task's own entry.
        let (alive, dead): (Vec<_>, Vec<_>) = conns.into_iter().partition(|c| !c.is_broken());
        for conn in dead {
            shared.discard(conn, DiscardReason::Broken);
        }
        waiting = requeue_set(shared, n, alive)?;
    }
}

/// Under one lock: back to the head of the queue for `n`, with `alive` given straight
/// to this entry (or closed, with the pool).
fn requeue_set(shared: &Arc<Shared>, n: usize, alive: Vec<Box<Conn>>) -> Result<WaitingMany> {
    let now = Instant::now();
    let mut st = shared.lock();
    if st.closed {
        st.slots.lost(alive.len());
        for _ in &alive {
            shared.ctx.discard(DiscardReason::Closed);
        }
        shared.after_shrink(&mut st);
        return Err(Error::Closed);
    }
    Ok(enqueue_with(shared, &mut st, n, true, alive, now))
}

/// Joins the queue for `n` connections (at its head when `front`), starts the connects
/// it needs, and hands it the connections it already has.
fn enqueue_with(
    shared: &Arc<Shared>,
    st: &mut State,
    n: usize,
    front: bool,
    have: Vec<Box<Conn>>,
    now: Instant,
) -> WaitingMany {
    let (id, rx) = st.queue.push_many(n, front);
    shared.spawn_connects(st);
    for conn in have {
        st.hand_off(conn, now);
    }
    WaitingMany {
        shared: Arc::clone(shared),
        id,
        rx,
        done: false,
    }
}

fn register_all(
    shared: &Shared,
    st: &mut State,
    conns: Vec<Box<Conn>>,
    task: TaskKey,
    site: Site,
    now: Instant,
) -> Vec<(Box<Conn>, HolderKey)> {
    conns
        .into_iter()
        .map(|conn| {
            let key = st.holders.record(HolderEntry::new(site, task, now, &conn));
            AtomicCounters::bump(&shared.ctx.counters.acquires);
            (conn, key)
        })
        .collect()
}
