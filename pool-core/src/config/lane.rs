//! The shared lane's options: whether one-shot statements share connections, how many
//! connections may be shared, and how many statements may be in flight on each.

use super::{Builder, PoolConfig};
use crate::error::{Error, Result};

/// The lane's options as set on the builder.
#[derive(Default)]
pub(crate) struct LaneOptions {
    pub(super) on: Option<bool>,
    pub(super) connections: Option<usize>,
    pub(super) in_flight: Option<usize>,
}

/// The validated lane.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LanePlan {
    /// The most connections shared at once.
    pub(crate) connections: usize,
    /// The most statements in flight on one shared connection.
    pub(crate) in_flight: usize,
    /// Behind a transaction-mode pooler: statements go unnamed, with parameter types
    /// learned once from a checkout, and no session setting is made.
    pub(crate) typed: bool,
}

/// Statements in flight on one shared connection by default (see `shared_in_flight`).
const IN_FLIGHT: usize = 128;

impl Builder {
    /// Whether `Db`'s one-shot statements (`query`, `query_one`, `query_opt`,
    /// `execute`) run on the shared lane (default: on): pipelined with other tasks'
    /// one-shots on shared connections, without a checkout. Only statements that need
    /// no session qualify (what `Db` takes already); each is its own implicit
    /// transaction with its own `Sync`, so a failing one affects no other. Deadlines:
    /// a shared connection's session `statement_timeout` is the pool's (the server
    /// enforces it), a shorter per-call `.timeout(d)` abandons the response, and no
    /// cancel request is ever sent on a shared connection (it would cancel whatever that
    /// backend runs). A one-shot with `.no_timeout()` or a longer `.timeout(d)` checks
    /// out as before. Behind a transaction-mode pooler
    /// ([`pgbouncer_transaction_mode`](Self::pgbouncer_transaction_mode)) a statement's
    /// first run checks out (its parameter types are asked there), later runs go on the
    /// lane unnamed with those types; no session `statement_timeout` is set there (the
    /// pooler's server connections are shared), so give the pooler's role one
    /// (`ALTER ROLE … SET statement_timeout`) for the server to enforce. A one-shot
    /// abandoned past its deadline, or dropped, is cancelled on the server only when it
    /// is alone on its connection (which then takes no other statement until the
    /// cancel has landed); beside others it runs on to the server's deadline. The
    /// `before_acquire`/`after_release` hooks run when the lane takes or gives back a
    /// connection, not per one-shot. Off, each one-shot checks a connection out.
    pub fn shared_lane(mut self, on: bool) -> Self {
        self.lane.on = Some(on);
        self
    }

    /// How many connections the lane may share at once (default: `max_size`). They
    /// count against `max_size` with the checked-out ones; the lane opens them as its
    /// load needs and gives one back when it has been idle a while, or when a checkout
    /// is waiting (it keeps at least one while it has work).
    pub fn shared_connections(mut self, n: usize) -> Self {
        self.lane.connections = Some(n);
        self
    }

    /// How many statements may be in flight on one shared connection (default 128; with
    /// 32, 256 tasks on 4 connections reached 0.67× the throughput of raw clients
    /// pipelining without a limit, with 128 0.82×). More in flight means more statements
    /// queued behind a slow one on the same connection. With every shared connection at
    /// this limit, a one-shot waits, first come first served, up to `acquire_timeout`,
    /// and then fails as a checkout would.
    pub fn shared_in_flight(mut self, n: usize) -> Self {
        self.lane.in_flight = Some(n);
        self
    }

    /// Takes the lane's options out, to be validated (`LaneOptions::plan`).
    pub(crate) fn take_lane(&mut self) -> LaneOptions {
        std::mem::take(&mut self.lane)
    }
}

impl LaneOptions {
    /// Validates the lane against the pool's settings: `None` when it is off.
    pub(crate) fn plan(self, pool: &PoolConfig, pgbouncer: bool) -> Result<Option<LanePlan>> {
        if self.connections == Some(0) {
            return Err(Error::config(
                "shared_connections",
                "is 0; give at least 1, or turn the lane off with shared_lane(false)",
            ));
        }
        if self.in_flight == Some(0) {
            return Err(Error::config(
                "shared_in_flight",
                "is 0, so no statement could ever run; give at least 1 (the default is 128)",
            ));
        }
        if let Some(n) = self.connections
            && n > pool.max_size
        {
            return Err(Error::config(
                "shared_connections",
                format!(
                    "({n}) is more than max_size ({}): shared connections count against max_size; lower it or raise max_size",
                    pool.max_size
                ),
            ));
        }
        if !self.on.unwrap_or(true) {
            return Ok(None);
        }
        Ok(Some(LanePlan {
            connections: self.connections.unwrap_or(pool.max_size),
            in_flight: self.in_flight.unwrap_or(IN_FLIGHT),
            typed: pgbouncer,
        }))
    }
}
