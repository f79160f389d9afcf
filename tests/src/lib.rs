//! Shared support code for the pool-core integration tests and examples.
//!
//! The [`harness`] module provides access to a real PostgreSQL server:
//! either the one named by `DATABASE_URL`, or a private throwaway cluster
//! started from the locally installed PostgreSQL binaries. The [`poll`] module
//! holds small polling helpers (drop a future after N polls, wait for a condition).

pub mod faults;
pub mod harness;
pub mod poll;
