//! Shared support code for the pool-core integration tests and examples.
//!
//! The [`harness`] module provides access to a real PostgreSQL server:
//! either the one named by `DATABASE_URL`, or a private throwaway cluster
//! started from the locally installed PostgreSQL binaries.

pub mod faults;
pub mod harness;
