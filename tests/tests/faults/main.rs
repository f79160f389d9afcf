//! Fault-injection suite: the pool against a real PostgreSQL under faults.
//!
//! Every scenario runs the ledger workload through the fault proxy with the invariant
//! sampler and the watchdog (`tests::faults`), injects its faults, and checks the same
//! pass criteria: no acked write lost, every call within its deadline + 100 ms, back to
//! full health within 5 s of the server being reachable, no connection handed out busy,
//! in a transaction or known dead, every error naming its category and root cause.
//! Scenarios run one at a time; each prints its figures (`--nocapture` to see them).
//! `docs/reliability.md` lists what each scenario promises and measured.
//!
//! `SOAK_SECS=N` runs a seeded random mix of all faults for N seconds (`soak`);
//! `FAULTS_SEED=S` replays a seed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod rig;

mod cancel;
mod credentials;
mod kill;
mod lane;
mod lifecycle;
mod listener;
mod load;
mod network;
mod pgbouncer;
mod replicas;
mod restart;
mod server;
mod soak;
mod tls;
