#![doc = include_str!("../../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Connections move between the idle list, waiters and borrowers on every checkout;
// boxing keeps each move a pointer copy.
#![allow(clippy::vec_box)]

// The layers, from the bottom up; each uses only those above it in this list (see
// docs/architecture.md).
mod api;
mod config;
mod conn;
mod engine;
mod error;
mod random;
mod status;
mod stmt;
mod telemetry;

pub use api::{
    Acquire, AdvisoryLock, BinaryCopyIn, BinaryCopyOut, ConnSet, ConnSource, CopyInSink,
    CopyOutStream, Db, FreshReadTxSource, FreshTxSource, InTx, Isolation, Listener, ListenerEvent,
    LockMode, OnConn, Pipeline, Pool, PooledConn, ReadConn, ReadDb, ReadTxSource, ReplicaStatus,
    RowStream, Tx, TxOptions, TxSource,
};
pub use bytes;
pub use config::{Builder, ConfigSource, NestedCheckout, ReplicaFallback, SslMode};
pub use conn::{Conn, Pipelined};
pub use error::{Error, Result, Timeout, TimeoutKind};
pub use status::{Counters, DiscardReason, Holder, LaneStatus, Site, Status, TaskKey};
pub use stmt::{
    ConnKind, ConnSql, CopyIn, CopyInSql, CopyOut, CopyOutSql, OneShotKind, OneShotSql, Plain,
    Prepared, ReadKind, ReadOnly, ReadSql, SessionState, Sql, StatementFuture, Stmt, StmtKind,
    TransactionOnly,
};
pub use tokio_postgres;
pub use tokio_postgres::types::ToSql;
pub use tokio_postgres::{Notification, Row, Statement};

#[doc(inline)]
pub use pool_macros::{sql, transactional, with_conn};

/// Items the macros expand to. Not public API: no stability promise.
#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
