//! Fault injection for the pool: a TCP fault proxy, the ledger workload, the invariant
//! sampler and the watchdog that every scenario of `tests/tests/faults` runs under.
//!
//! * [`proxy`] — [`FaultProxy`]: latency, bandwidth caps, FIN, RST, RST after K bytes,
//!   blackholes per connection; deaf, slow or refused new connections.
//! * [`ledger`] — every write keyed by id and recorded as acked, failed or ambiguous;
//!   verified against the table afterwards (no acked write lost, no failed write there).
//! * [`sampler`] — every 10 ms: pool size ≤ max, no backend of the pool idle in a
//!   transaction, busy or holding an advisory lock without a borrower, server backends ≤ max.
//! * [`watchdog`] — every call within its own deadline + 100 ms, or the test fails with
//!   the pool's status and holders.
//! * [`workload`] — the operations, probing every connection handed out.
//! * [`explain`] — every error names its category and root cause.
//! * [`health`] — "back to full health", and the figures a scenario prints.
//! * [`pgbouncer`] — a PgBouncer in transaction mode, started by the test.
//! * [`rng`] — a seeded generator, so a failing run can be replayed.

pub mod explain;
pub mod health;
pub mod ledger;
pub mod pgbouncer;
pub mod proxy;
pub mod rng;
pub mod sampler;
pub mod watchdog;
pub mod workload;

pub use proxy::{Accept, Fault, FaultProxy};
