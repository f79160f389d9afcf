//! Integration tests of the pool engine against a real PostgreSQL.
//!
//! One test binary with a module per behaviour (one link instead of many). Every test
//! gets its own database from the harness; server-side truth comes from
//! `pg_stat_activity` and `pg_locks` on a separate plain connection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod common;

mod basics;
mod cancel;
mod copy;
mod deadline;
mod errors;
mod exhaustion;
mod fairness;
mod growth;
mod health;
mod hooks;
mod hosts;
mod idents;
mod jitter;
mod lane;
mod leaks;
mod lifecycle;
mod listener;
mod metrics;
mod peers;
mod pipeline;
mod reset;
mod resize;
mod rows;
mod seeds;
mod send;
mod server;
mod spans;
mod stream;
mod tx;
mod waiting;
