//! Transaction control on one connection: the one record of how deep the connection is
//! in a transaction and whether that transaction is aborted, and the control steps
//! (`BEGIN`, `SAVEPOINT`, `RELEASE`, `COMMIT`, `ROLLBACK`, `ROLLBACK TO`) that move it.
//!
//! Every rule about depth and aborted state is a method of [`TxState`]; nothing else
//! writes its fields, so "a statement failed inside the transaction" is decided here
//! once.

use std::borrow::Cow;

use super::Conn;
use super::guard::Recovery;
use crate::error::{Error, Result};
use crate::status::AtomicCounters;

/// Where the connection stands in a transaction, as the server sees it.
#[derive(Debug, Default)]
pub(crate) struct TxState {
    /// Transaction nesting on the server: 0 outside, 1 in a transaction, 2+ in savepoints.
    depth: u32,
    /// Bumped whenever a transaction starts or is ended by force, so stale `Tx` handles
    /// notice.
    epoch: u64,
    /// The depth at which a statement failed inside the transaction (it is then aborted
    /// on the server until rolled back to that depth or above).
    aborted_at: Option<u32>,
    /// The depth at which a statement of this transaction failed with a serialization
    /// failure or a deadlock: running the whole transaction again may succeed. Known
    /// here whatever error type the caller turned the failure into; forgotten when the
    /// savepoint it failed in is rolled back (the body handled it).
    retryable_at: Option<u32>,
    /// A statement in this transaction may have written (read-your-writes records the
    /// commit).
    wrote: bool,
}

impl TxState {
    /// 0 outside a transaction, 1 inside one, 2 and up inside savepoints.
    pub(crate) fn depth(&self) -> u32 {
        self.depth
    }

    /// Whether a `Tx` handle made at `depth` in `epoch` still owns the transaction.
    pub(crate) fn is(&self, depth: u32, epoch: u64) -> bool {
        self.depth == depth && self.epoch == epoch
    }

    /// The epoch a new handle records.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the server ignores everything until a rollback: a statement inside the
    /// transaction failed or was abandoned.
    pub(crate) fn is_aborted(&self) -> bool {
        self.depth > 0 && self.aborted_at.is_some()
    }

    /// A statement failed (or its effect is unknown) at the current depth.
    pub(crate) fn mark_aborted(&mut self) {
        if self.depth > 0 {
            self.aborted_at = Some(self.aborted_at.map_or(self.depth, |d| d.min(self.depth)));
        }
    }

    /// A statement failed with `sqlstate` inside the transaction.
    pub(crate) fn failed(&mut self, sqlstate: &str) {
        if self.depth > 0 {
            self.mark_aborted();
            if matches!(sqlstate, "40001" | "40P01") {
                self.retryable_at =
                    Some(self.retryable_at.map_or(self.depth, |d| d.min(self.depth)));
            }
        }
    }

    /// Whether a statement of the current transaction failed with a serialization
    /// failure or a deadlock.
    pub(crate) fn failed_retryably(&self) -> bool {
        self.depth > 0 && self.retryable_at.is_some()
    }

    /// The savepoints above `depth` are gone: failures inside them no longer count.
    pub(crate) fn unwind_to(&mut self, depth: u32) {
        self.depth = depth;
        if self.aborted_at.is_some_and(|a| a > depth) {
            self.aborted_at = None;
        }
        if self.retryable_at.is_some_and(|a| a > depth) {
            self.retryable_at = None;
        }
    }

    /// The transaction ended (committed or rolled back by its owner).
    fn ended(&mut self) {
        self.depth = 0;
        self.aborted_at = None;
        self.wrote = false;
    }

    /// A statement that may write ran in this transaction.
    pub(crate) fn wrote(&mut self) {
        self.wrote = true;
    }

    /// The transaction was ended underneath its handles: they must fail.
    pub(crate) fn forced_end(&mut self) {
        self.ended();
        self.epoch += 1;
    }

    /// Applies the outcome of a control step. `true`: the transaction had to be ended by
    /// force, and a `ROLLBACK` must follow.
    fn apply(&mut self, step: &Control, ok: bool) -> bool {
        match (step, ok) {
            (Control::Begin(_), true) => {
                self.depth = 1;
                self.epoch += 1;
                self.aborted_at = None;
                self.retryable_at = None;
                self.wrote = false;
            }
            (Control::Begin(_), false) => self.unwind_to(0),
            (Control::Savepoint(d), true) => self.depth = *d,
            (Control::Savepoint(d), false) => {
                self.unwind_to(d - 1);
                self.mark_aborted();
            }
            // A failed COMMIT (serialization failure, deferred constraint) ends the
            // transaction all the same.
            (Control::Commit, _) | (Control::Rollback, true) => self.ended(),
            (Control::Release(d), true) => self.unwind_to(d - 1),
            (Control::RollbackTo(d), true) => {
                self.unwind_to(d - 1);
                self.aborted_at = None;
            }
            // The savepoint stack is no longer what we think: end the whole transaction.
            (Control::Release(_) | Control::RollbackTo(_) | Control::Rollback, false) => {
                self.forced_end();
                return true;
            }
        }
        false
    }
}

/// A transaction-control step and how to undo it if it is abandoned mid-flight.
#[derive(Debug, Clone)]
pub(crate) enum Control {
    Begin(String),
    Savepoint(u32),
    Release(u32),
    Commit,
    Rollback,
    RollbackTo(u32),
}

fn savepoint_name(depth: u32) -> String {
    format!("pool_sp_{depth}")
}

impl Control {
    fn sql(&self) -> Cow<'static, str> {
        match self {
            Control::Begin(sql) => Cow::Owned(sql.clone()),
            Control::Savepoint(d) => Cow::Owned(format!("SAVEPOINT {}", savepoint_name(*d))),
            Control::Release(d) => Cow::Owned(format!("RELEASE SAVEPOINT {}", savepoint_name(*d))),
            Control::Commit => Cow::Borrowed("COMMIT"),
            Control::Rollback => Cow::Borrowed("ROLLBACK"),
            Control::RollbackTo(d) => rollback_sql(*d),
        }
    }

    /// What to do, and where the depth ends up, if the step is abandoned after sending.
    fn if_dropped(&self) -> (Recovery, u32) {
        match self {
            // The BEGIN will have run; nobody holds the transaction: roll it back.
            Control::Begin(_) => (Recovery::DrainThen(Cow::Borrowed("ROLLBACK")), 0),
            Control::Savepoint(d) => (Recovery::DrainThen(rollback_sql(*d)), d - 1),
            Control::Release(d) | Control::RollbackTo(d) => (Recovery::Drain, d - 1),
            // Committed or not, make sure the connection is outside any transaction.
            Control::Commit | Control::Rollback => {
                (Recovery::DrainThen(Cow::Borrowed("ROLLBACK")), 0)
            }
        }
    }
}

/// The statement that rolls back the transaction (`depth` 1) or the savepoint at `depth`.
fn rollback_sql(depth: u32) -> Cow<'static, str> {
    if depth <= 1 {
        return Cow::Borrowed("ROLLBACK");
    }
    let name = savepoint_name(depth);
    Cow::Owned(format!(
        "ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"
    ))
}

impl Conn {
    /// Where the connection stands in a transaction.
    pub(crate) fn tx(&self) -> &TxState {
        &self.state.tx
    }

    /// Refuses to open a savepoint inside an aborted transaction.
    pub(crate) fn check_savepoint(&self) -> Result<()> {
        if self.state.tx.is_aborted() {
            return Err(Error::TransactionAborted {
                reason: "cannot open a savepoint: an earlier statement in the enclosing transaction failed",
            });
        }
        Ok(())
    }

    /// A `Tx` at `depth` was dropped without being ended: roll it back (counted as a
    /// rollback on return) from a background task, at once; the next use waits for it.
    pub(crate) fn abandon_tx(&mut self, depth: u32) {
        // Routine on every error path (`?` out of a transaction), so only at debug.
        tracing::debug!(
            target: "pool_core",
            depth, backend_pid = self.meta.backend_pid,
            "a transaction was dropped without commit or rollback; it is rolled back"
        );
        AtomicCounters::bump(&self.ctx.counters.rollbacks_on_return);
        self.state.tx.unwind_to(depth - 1);
        self.defer(rollback_sql(depth));
    }

    /// Runs a transaction-control step and applies its effect on the bookkeeping.
    pub(crate) async fn control(&mut self, step: Control) -> Result<()> {
        let deadline = self.deadline();
        let sql = step.sql();
        self.ensure_ready(deadline, &sql).await?;
        let (recovery, depth_if_dropped) = step.if_dropped();
        let (client, guard) = self.guarded(recovery, Some(depth_if_dropped));
        let res = guard.run(deadline, &sql, client.batch_execute(&sql)).await;
        if matches!(step, Control::Commit) && self.state.tx.wrote {
            self.note_write_done();
        }
        if res.is_err() && self.state.broken {
            return res;
        }
        if self.state.tx.apply(&step, res.is_ok()) {
            // Live `Tx` handles see the epoch change and fail.
            self.defer(Cow::Borrowed("ROLLBACK"));
        }
        res
    }
}
