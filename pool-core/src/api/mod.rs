//! The user-facing states: [`Pool`] → [`Db`] (*released*) → [`PooledConn`] /
//! [`ConnSet`] (*held*) → [`Tx`] (*in transaction*), the [`Acquire`] future, the lock
//! guards, and the connection sources that `#[with_conn]`/`#[transactional]` functions
//! accept.
//!
//! This layer is thin: it holds no lock and no state of its own beyond the borrows that
//! make the states types. A checkout is the engine's (`crate::engine`), a statement the
//! connection's (`crate::conn`); the handles here only decide, through their lifetimes
//! and trait bounds, what the compiler lets a caller do next.

mod acquire;
mod copy;
mod db;
mod lane;
mod listener;
mod locks;
mod pipeline;
mod pool;
mod pooled;
mod read;
mod replicas;
pub(crate) mod source;
mod stream;
mod tx;

pub use acquire::Acquire;
pub use copy::{BinaryCopyIn, BinaryCopyOut, CopyInSink, CopyOutStream};
pub use db::Db;
pub use listener::{Listener, ListenerEvent};
pub use locks::{AdvisoryLock, LockMode};
pub use pipeline::{InTx, OnConn, Pipeline};
pub use pool::Pool;
pub use pooled::{ConnSet, PooledConn};
pub use read::{ReadConn, ReadDb};
pub use replicas::ReplicaStatus;
pub use source::{ConnSource, FreshReadTxSource, FreshTxSource, ReadTxSource, TxSource};
pub use stream::RowStream;
pub use tx::{Isolation, Tx, TxOptions};
