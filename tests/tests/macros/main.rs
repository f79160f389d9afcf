//! `#[with_conn]` and `#[transactional]` against a real PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

#[allow(dead_code)]
#[path = "../pool/common.rs"]
mod common;

mod equivalence;
mod retry;
mod tx;
mod with_conn;
