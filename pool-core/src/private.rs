//! Runtime support for the code `#[with_conn]` and `#[transactional]` expand to, and
//! the hooks tests and benchmarks use.
//! `#[doc(hidden)]` and not public API: no stability promise.

use std::error::Error as StdError;
use std::time::Duration;

use tokio::time::Instant;

use crate::api::{Tx, TxOptions};
use crate::config::Builder;
use crate::conn::Conn;
use crate::error::{Error, Result};

pub use crate::api::source::{Checkout, ConnRef};

/// Benchmarks only: `false` turns off the holder records (checkout site, task, time) and
/// with them the nested-checkout check, leak warnings and the holders listed by
/// `holders()` and timeout errors, to measure what that bookkeeping costs.
pub fn bookkeeping(builder: Builder, on: bool) -> Builder {
    builder.bookkeeping(on)
}

/// When the connection was seen closed by the task reading its messages. Lets the fault
/// tests tell a connection handed out already dead (a pool bug) from one that died after
/// it was handed out (which no pool can prevent).
pub fn closed_at(conn: &Conn) -> Option<Instant> {
    conn.closed_at()
}

/// The error type of a `#[with_conn]`/`#[transactional]` function must be able to carry
/// the pool's errors: checking out, beginning and committing can fail.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot carry a `pool_core::Error`",
    label = "this error type must convert from `pool_core::Error`",
    note = "the attribute checks out a connection (and begins and commits a transaction), which can fail; those errors are returned through this type",
    note = "implement `From<pool_core::Error>` for it, or return `pool_core::Error` (or `anyhow::Error`, `Box<dyn std::error::Error + Send + Sync>`)"
)]
pub trait FromPoolError {
    /// Converts.
    fn from_pool_error(error: Error) -> Self;
}

#[diagnostic::do_not_recommend]
impl<E: From<Error>> FromPoolError for E {
    fn from_pool_error(error: Error) -> Self {
        E::from(error)
    }
}

/// Converts the pool's error into the function's error type.
pub fn convert_error<E: FromPoolError>(error: Error) -> E {
    E::from_pool_error(error)
}

/// Begins the transaction of a `#[transactional]` function. `fresh` (the function
/// retries) refuses a connection that is already inside a transaction — reachable at run
/// time through a `&mut Conn` lent by a `Tx` — since retrying would only re-run a
/// savepoint of a transaction the conflict already aborted.
pub async fn begin(conn: &mut Conn, options: TxOptions, fresh: bool) -> Result<Tx<'_>> {
    if fresh && conn.in_transaction() {
        return Err(Error::refused(
            "#[transactional(retry = …)]",
            "a retrying transaction was called inside an outer transaction: a serialization failure aborts the \
             whole outer transaction, which retrying the inner one cannot repair; call it outside any \
             transaction, or remove `retry` and let the outermost transaction retry",
        ));
    }
    conn.begin_with(options).await
}

/// Commits on `Ok` (a failed commit becomes the function's error), rolls back on `Err`.
pub async fn finish<T, E: FromPoolError>(
    tx: Tx<'_>,
    result: std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    match result {
        Ok(value) => match tx.commit().await {
            Ok(()) => Ok(value),
            Err(e) => Err(convert_error(e)),
        },
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(target: "pool_core", error = %rollback, "rollback after a failed transaction body failed");
            }
            Err(e)
        }
    }
}

/// What a retrying transaction does next.
pub enum Next<T, E> {
    /// Done: return this.
    Return(std::result::Result<T, E>),
    /// Run the body again (the backoff has been waited).
    Retry,
}

/// Commits or rolls back one attempt of a retrying transaction and decides whether to
/// run it again: only on serialization failures and deadlocks — seen by the connection
/// during the body, found in the body's error (`body_retryable`), or from `COMMIT` —
/// while `attempt <= retries`.
pub async fn finish_retrying<T, E: FromPoolError>(
    tx: Tx<'_>,
    result: std::result::Result<T, E>,
    body_retryable: bool,
    attempt: u32,
    retries: u32,
    backoff_ms: u64,
) -> Next<T, E> {
    let may_retry = attempt <= retries;
    // The connection knows whether a statement of this transaction hit a serialization
    // failure or a deadlock, whatever the body's error type made of it (a transparent
    // wrapper hides the pool's error from the source chain; some types keep nothing).
    let body_retryable = body_retryable || tx.failed_retryably();
    tx.record_attempt(attempt);
    // The transaction is consumed by its commit or rollback; keep what counts retries.
    #[cfg(feature = "metrics")]
    let ctx = tx.ctx();
    let retried = || {
        #[cfg(feature = "metrics")]
        ctx.telemetry.retried();
    };
    match result {
        Ok(value) => match tx.commit().await {
            Ok(()) => Next::Return(Ok(value)),
            Err(e) if e.is_retryable() && may_retry => {
                retried();
                backoff(attempt, backoff_ms, &e).await;
                Next::Retry
            }
            Err(e) => Next::Return(Err(convert_error(e))),
        },
        Err(e) => {
            let _ = tx.rollback().await;
            if body_retryable && may_retry {
                retried();
                backoff(
                    attempt,
                    backoff_ms,
                    &"serialization failure or deadlock in the transaction body",
                )
                .await;
                Next::Retry
            } else {
                Next::Return(Err(e))
            }
        }
    }
}

/// Waits before a retry: exponential from `base_ms`, capped at 2 s, with half of it
/// random so that conflicting transactions do not collide again in lock step.
fn backoff(attempt: u32, base_ms: u64, why: &dyn std::fmt::Display) -> tokio::time::Sleep {
    let ceiling = base_ms
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(2_000);
    let wait = ceiling / 2 + crate::random::random_u64() % (ceiling / 2 + 1);
    tracing::debug!(target: "pool_core", attempt, wait_ms = wait, "retrying transaction: {why}");
    tokio::time::sleep(Duration::from_millis(wait))
}

/// Requires a retrying transaction's body to be re-runnable (`AsyncFnMut`).
pub fn rerunnable_transaction_body<F, R>(body: F) -> F
where
    F: AsyncFnMut(&mut Tx<'_>) -> R,
{
    body
}

/// Looks for a serialization failure or deadlock inside any error type: the pool's own
/// error, any `std::error::Error` whose source chain carries it, or an error that
/// exposes one through `AsRef<dyn Error>` (anyhow, eyre, boxed errors); any other type
/// says nothing here (the connection still knows, see `finish_retrying`). Dispatched by
/// autoref: `(&&&Probe(&e)).__pool_retryable()`.
pub struct Probe<'a, E>(pub &'a E);

/// First choice of [`Probe`]: the error is a `std::error::Error`.
pub trait ViaStdError {
    /// Whether the error is worth retrying.
    fn __pool_retryable(&self) -> bool;
}

impl<E: StdError + 'static> ViaStdError for &&Probe<'_, E> {
    fn __pool_retryable(&self) -> bool {
        chain_is_retryable(self.0)
    }
}

/// Second choice of [`Probe`]: the error exposes a `std::error::Error`.
pub trait ViaAsRefError {
    /// Whether the error is worth retrying.
    fn __pool_retryable(&self) -> bool;
}

impl<E: AsRef<dyn StdError + Send + Sync + 'static>> ViaAsRefError for &Probe<'_, E> {
    fn __pool_retryable(&self) -> bool {
        chain_is_retryable(self.0.as_ref())
    }
}

/// Last choice of [`Probe`]: an error type that is neither; it carries nothing to look at.
pub trait ViaNothing {
    /// Whether the error is worth retrying: it cannot say.
    fn __pool_retryable(&self) -> bool;
}

impl<E> ViaNothing for Probe<'_, E> {
    fn __pool_retryable(&self) -> bool {
        false
    }
}

fn chain_is_retryable(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(ours) = e.downcast_ref::<Error>() {
            return ours.is_retryable();
        }
        if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
            return matches!(pg.code().map(|c| c.code()), Some("40001" | "40P01"));
        }
        current = e.source();
    }
    false
}
