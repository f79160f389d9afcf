//! Cleaning a returned connection for its next borrower: wait for recovery, end any
//! transaction, reset exactly the session state the borrower touched (the statements
//! are in `reset.rs`), re-run `after_connect` where settings were reset.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

use pool_sql::Touches;
use tokio::time::Instant;

use super::settings::CheckHook;
use super::{Conn, reset};
use crate::error::{Error, Result};
use crate::status::{AtomicCounters, DiscardReason};

impl Conn {
    /// Brings the connection back to a clean session for the next borrower: waits for
    /// recovery, ends any transaction, resets the session state the borrower touched.
    /// An error means the connection must be discarded.
    pub(crate) async fn clean(&mut self) -> Result<()> {
        self.ensure_ready(None, "").await?;
        let limit = self.ctx.config.cleanup_timeout;
        if self.state.tx.depth() > 0 {
            // Returned inside a transaction whose `Tx` never ran its destructor (it was
            // forgotten): rolled back here, and counted like any rollback on return.
            self.simple(limit, "ROLLBACK").await?;
            self.state.tx.forced_end();
            AtomicCounters::bump(&self.ctx.counters.rollbacks_on_return);
        }
        let touches = self.state.touches;
        if !touches.is_empty() {
            let sql = reset::reset_sql(touches);
            self.simple(limit, &sql).await?;
            AtomicCounters::bump(&self.ctx.counters.resets_on_return);
            if reset::drops_prepared(touches) {
                self.cache.clear();
            }
            self.state.touches = Touches::empty();
            if (touches.contains(Touches::GUC) || touches.contains(Touches::ROLE))
                && let Some(hook) = self.ctx.config.after_connect.clone()
            {
                tokio::time::timeout(limit, hook(self))
                    .await
                    .map_err(|_| {
                        Error::broken("re-running after_connect after a reset timed out", None)
                    })??;
                self.after_hook("after_connect")?;
            }
            while self.notifications.try_recv().is_ok() {}
        }
        if self.ctx.config.discard_prepared_on_return {
            self.cache.clear();
        }
        if self.state.read_only_refused {
            self.check_writable(limit).await?;
        }
        Ok(())
    }

    /// The check after every hook: a connection the hook left inside a transaction,
    /// with an interrupted operation still being recovered, or broken, is not handed
    /// out (the caller discards it; it is counted and a warning names the hook).
    /// Otherwise the session state the hook set is the connection's baseline.
    pub(crate) fn after_hook(&mut self, hook: &'static str) -> Result<()> {
        let problem = if self.state.tx.depth() > 0 {
            "inside a transaction"
        } else if self.state.pending.is_some() {
            "with an interrupted operation still being recovered (a statement or transaction it dropped)"
        } else if self.is_broken() {
            "broken"
        } else {
            self.state.touches = Touches::empty();
            return Ok(());
        };
        self.ctx.discard(DiscardReason::FailedHook);
        tracing::warn!(
            target: "pool_core",
            hook, problem, backend_pid = self.meta.backend_pid,
            "the {hook} hook left a connection {problem}; it is discarded instead of handed out"
        );
        Err(Error::Hook { hook, problem })
    }

    /// Runs a check hook (`before_acquire`, `after_release`) and the check after every
    /// hook. Whether the connection may go on; when not, its discard is counted here
    /// (rejected by the hook; or failed: the hook errored, panicked, or left it unfit —
    /// reported with a warning naming the hook).
    pub(crate) async fn passes(&mut self, hook: &CheckHook, name: &'static str) -> bool {
        let verdict = AssertUnwindSafe(hook(self)).catch_unwind().await;
        match verdict {
            Ok(Ok(true)) => self.after_hook(name).is_ok(),
            Ok(Ok(false)) => {
                self.ctx.discard(DiscardReason::Rejected);
                false
            }
            Ok(Err(error)) => {
                self.ctx.discard(DiscardReason::FailedHook);
                tracing::warn!(target: "pool_core", hook = name, %error, "the {name} hook failed; its connection is discarded");
                false
            }
            Err(_) => {
                self.ctx.discard(DiscardReason::FailedHook);
                tracing::warn!(target: "pool_core", hook = name, "the {name} hook panicked; its connection is discarded");
                false
            }
        }
    }

    async fn simple(&mut self, limit: Duration, sql: &str) -> Result<()> {
        match tokio::time::timeout(limit, self.client.batch_execute(sql)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.state.broken = true;
                Err(Error::broken(
                    "while cleaning the connection for reuse",
                    Some(e),
                ))
            }
            Err(_) => {
                self.state.broken = true;
                Err(Error::broken(
                    "cleaning the connection for reuse timed out",
                    None,
                ))
            }
        }
    }

    /// After a 25006 refusal: whether the server itself is read-only (in recovery, or
    /// `default_transaction_read_only` set on the server), now that the session is reset.
    /// If it is, the connection is broken (discarded); if the refusal was the borrower's
    /// own read-only transaction, it is kept.
    async fn check_writable(&mut self, limit: Duration) -> Result<()> {
        const READ_ONLY: &str =
            "SELECT (pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on')::text";
        let answer = tokio::time::timeout(limit, self.client.simple_query(READ_ONLY)).await;
        let read_only = match answer {
            Ok(Ok(messages)) => messages.iter().any(|m| {
                matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("true"))
            }),
            Ok(Err(e)) => {
                self.state.broken = true;
                return Err(Error::broken("while checking whether the server is read-only", Some(e)));
            }
            Err(_) => {
                self.state.broken = true;
                return Err(Error::broken("checking whether the server is read-only timed out", None));
            }
        };
        if read_only {
            self.state.broken = true;
            tracing::warn!(
                target: "pool_core",
                backend_pid = self.meta.backend_pid,
                "the server refused a write as read-only (SQLSTATE 25006) and is read-only: \
                 a standby or a demoted primary; its connection is discarded"
            );
            return Err(Error::broken(
                "the server is read-only (in recovery or default_transaction_read_only): a standby or a demoted primary",
                None,
            ));
        }
        self.state.read_only_refused = false;
        Ok(())
    }

    /// Whether the connection can go straight back to the pool with no cleaning.
    pub(crate) fn is_clean(&self) -> bool {
        let s = &self.state;
        !s.broken
            && !s.read_only_refused
            && s.pending.is_none()
            && s.tx.depth() == 0
            && s.touches.is_empty()
            && (!self.ctx.config.discard_prepared_on_return || self.cache.is_empty())
            && !self.closed()
    }

    /// Pings the server (a protocol-level `Sync`), bounded by `limit`.
    pub(crate) async fn ping(&mut self, limit: Duration) -> bool {
        let deadline = Some(Instant::now() + limit);
        if self.ensure_ready(deadline, "").await.is_err() {
            return false;
        }
        let (client, guard) = self.op(Touches::empty());
        guard
            .run(deadline, "", client.check_connection())
            .await
            .is_ok()
    }
}
