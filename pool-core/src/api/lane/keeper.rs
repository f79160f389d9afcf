//! A keeper: the task that holds one shared connection for the lane, from its checkout
//! to its return.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{IDLE_BACK, KEEPER_EVERY, Lane, SharedConn, locked, server_deadline};
use crate::api::pool::Pool;
use crate::api::pooled::PooledConn;
use crate::conn::{TextMap, cancel_and_drain};

/// Holds one shared connection for the lane: checks it out, sets the session's
/// deadline, shares it, and gives it back when it is no longer wanted.
pub(super) async fn keeper(pool: Pool, lane: Weak<Lane>) {
    let mut db = pool.db();
    let checked_out = db.acquire().await;
    let Some(this) = lane.upgrade() else {
        return;
    };
    this.growing.store(false, Ordering::Release);
    let Ok(mut held) = checked_out else {
        // The waiters time out with the pool's own acquire error.
        return;
    };
    // Held for as long as it is shared: not a leak.
    PooledConn::expect_long_hold(&held);
    // Behind a pooler the session is not this connection's own: nothing is set on it.
    if let Some(d) = pool.shared.ctx.config.statement_timeout
        && !this.plan.typed
    {
        let ms = server_deadline(d).as_millis().max(1).to_string();
        if held
            .set("statement_timeout", &format!("{ms}ms"))
            .await
            .is_err()
        {
            return;
        }
    }
    let conn = Arc::new(SharedConn {
        client: held.shared_client(),
        in_flight: AtomicUsize::new(0),
        prepared: Mutex::new(TextMap::default()),
        draining: AtomicBool::new(false),
        paused: AtomicBool::new(false),
        refused_read_only: AtomicBool::new(false),
        abandoned: AtomicBool::new(false),
        closed_by: held.closed_by_slot(),
        cause: Mutex::new(None),
        wake: Notify::new(),
        last_used: Mutex::new(Instant::now()),
    });
    locked(&this.conns).push(Arc::clone(&conn));
    this.permits.add_permits(this.plan.in_flight);
    drop(this);
    loop {
        tokio::select! {
            () = conn.wake.notified() => {}
            () = tokio::time::sleep(KEEPER_EVERY) => {}
        }
        let Some(lane) = lane.upgrade() else {
            break;
        };
        let now = lane.status();
        pool.shared
            .ctx
            .telemetry
            .lane(now.connections, now.in_flight);
        let idle = conn.in_flight.load(Ordering::Acquire) == 0;
        if conn.draining.load(Ordering::Acquire) {
            // Not while an abandoned statement's cancel is on its way (`paused`): landing
            // after the connection went back, it would cancel the next borrower's.
            if (idle && !conn.paused.load(Ordering::Acquire)) || conn.client.is_closed() {
                break;
            }
            continue;
        }
        let others = locked(&lane.conns).len() > 1;
        let lane_waits = usize::from(lane.growing.load(Ordering::Acquire));
        let checkout_waits = pool.shared.waiting() > lane_waits;
        let idle_long = idle && locked(&conn.last_used).elapsed() >= IDLE_BACK;
        if conn.client.is_closed()
            || pool.is_closed()
            || (checkout_waits && (others || idle))
            || idle_long
        {
            if conn.client.is_closed() {
                lane.lost.fetch_add(1, Ordering::Relaxed);
            }
            lane.retire(&conn);
        }
    }
    if conn.refused_read_only.load(Ordering::Acquire) {
        held.note_read_only_refusal();
    }
    // A statement abandoned beside others may still run on the server: the next
    // borrower must get the connection quiet (or not at all). With none abandoned every
    // response has been read: it is quiet.
    if !conn.client.is_closed()
        && conn.abandoned.load(Ordering::Acquire)
        && !cancel_and_drain(&conn.client, &pool.shared.ctx).await
    {
        held.give_up();
    }
    if let Some(lane) = lane.upgrade() {
        let now = lane.status();
        pool.shared
            .ctx
            .telemetry
            .lane(now.connections, now.in_flight);
    }
    // Back to the pool through the normal check-in (reset, or discarded if dead).
    drop(held);
}
