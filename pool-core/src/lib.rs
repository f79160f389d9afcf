#![doc = include_str!("../../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Connections move between the idle list, waiters and borrowers on every checkout;
// boxing keeps each move a pointer copy.
#![allow(clippy::vec_box)]

mod acquire;
mod config;
mod conn;
mod connect;
mod db;
mod error;
mod locks;
mod maintain;
mod pool;
mod pooled;
mod reset;
mod source;
mod status;
mod stmt;
mod sweeper;
mod tx;

pub use acquire::Acquire;
pub use config::{Builder, ConfigSource, NestedCheckout};
pub use conn::Conn;
pub use db::Db;
pub use error::{Error, Result, Timeout, TimeoutKind};
pub use locks::{AdvisoryLock, LockMode};
pub use pool::Pool;
pub use pooled::{ConnSet, PooledConn};
pub use source::{ConnSource, FreshTxSource, TxSource};
pub use status::{Counters, DiscardReason, Holder, Site, Status, TaskKey};
pub use stmt::{
    ConnSql, OneShotSql, Plain, Prepared, SessionState, Sql, StatementFuture, Stmt, StmtKind,
    TransactionOnly,
};
pub use tokio_postgres;
pub use tokio_postgres::types::ToSql;
pub use tokio_postgres::{Notification, Row, Statement};
pub use tx::{Isolation, Tx, TxOptions};

#[doc(inline)]
pub use pool_macros::{sql, transactional, with_conn};

/// Items the macros expand to. Not public API: no stability promise.
#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
