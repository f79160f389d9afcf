//! COPY through the client, started on a connection: which statement it runs as, the
//! refusals when a COPY meets the wrong method (see `exec.rs`'s placement), and the
//! start of `copy_in` / `copy_out` (the sink and stream are `api/copy.rs`).

use bytes::Bytes;
use pool_sql::{CopyDirection, Touches};
use tokio::time::Instant;
use tokio_postgres::Statement;

use super::Conn;
use super::exec::Place;
use crate::error::{Error, Result};
use crate::stmt::SqlParts;

impl Conn {
    /// Starts a `COPY … FROM STDIN`; the copy is in progress when this returns: the
    /// caller finishes the sink, or drops it (the driver then aborts the copy).
    pub(crate) async fn start_copy_in(
        &mut self,
        parts: SqlParts<'_>,
        place: Place,
    ) -> Result<tokio_postgres::CopyInSink<Bytes>> {
        let deadline = self.deadline();
        let class = self
            .admit(&parts, place, deadline, Some(CopyDirection::In))
            .await?;
        let st = self.copy_statement(&parts, deadline).await?;
        let (client, guard) = self.op(class.touches);
        let res = guard.run(deadline, parts.text, client.copy_in(&st)).await;
        self.settle(&parts, &class, &res);
        res
    }

    /// Starts a `COPY … TO STDOUT`; the data is in flight when this returns: the caller
    /// reads it to the end, or calls `abandon_stream`.
    pub(crate) async fn start_copy_out(
        &mut self,
        parts: SqlParts<'_>,
        place: Place,
    ) -> Result<tokio_postgres::CopyOutStream> {
        let deadline = self.deadline();
        let class = self
            .admit(&parts, place, deadline, Some(CopyDirection::Out))
            .await?;
        let st = self.copy_statement(&parts, deadline).await?;
        let (client, guard) = self.op(class.touches);
        let res = guard.run(deadline, parts.text, client.copy_out(&st)).await;
        self.settle(&parts, &class, &res);
        res
    }

    /// The statement a COPY runs as. The copy protocol takes a prepared statement;
    /// behind a transaction-mode pooler it is prepared afresh inside the transaction
    /// (which keeps one server connection), never cached.
    async fn copy_statement(
        &mut self,
        parts: &SqlParts<'_>,
        deadline: Option<Instant>,
    ) -> Result<Statement> {
        if !self.ctx.config.pgbouncer_transaction_mode {
            return self.statement_for(parts, deadline).await;
        }
        if self.state.tx.depth() == 0 {
            return Err(Error::refused(parts.text, POOLER_COPY_ADVICE));
        }
        let (client, guard) = self.op(Touches::empty());
        guard
            .run(deadline, parts.text, client.prepare(parts.text))
            .await
    }
}

/// What to use instead when a statement meets a method for the other kind of COPY.
pub(super) fn copy_advice(
    is: Option<CopyDirection>,
    expected: Option<CopyDirection>,
) -> &'static str {
    match (is, expected) {
        (Some(CopyDirection::In), None) => {
            "`COPY … FROM STDIN` sends its data through the client, which `execute` and `query` cannot do; use \
             `copy_in`: `let mut sink = conn.copy_in(\"COPY …\").await?;`, send the data as `Bytes`, then \
             `sink.finish().await?`"
        }
        (Some(CopyDirection::Out), None) => {
            "`COPY … TO STDOUT` sends its data through the client, which `execute` and `query` cannot read; use \
             `copy_out`: `let data = conn.copy_out(\"COPY …\").await?;` is a stream of `Bytes`"
        }
        (Some(CopyDirection::Out), Some(CopyDirection::In)) => {
            "this COPY writes TO STDOUT: read it with `copy_out`; `copy_in` takes a `COPY … FROM STDIN`"
        }
        (Some(CopyDirection::In), Some(CopyDirection::Out)) => {
            "this COPY reads FROM STDIN: feed it with `copy_in`; `copy_out` takes a `COPY … TO STDOUT`"
        }
        (None, Some(CopyDirection::In)) => {
            "`copy_in` takes a `COPY table [(columns)] FROM STDIN …`; run other statements (and a COPY from a \
             server file) with `execute`"
        }
        _ => {
            "`copy_out` takes a `COPY table TO STDOUT …` or `COPY (SELECT …) TO STDOUT`; read rows with `query` \
             or `query_stream`, and run a COPY to a server file with `execute`"
        }
    }
}

const POOLER_COPY_ADVICE: &str = "behind PgBouncer in transaction mode (`pgbouncer_transaction_mode`) a COPY \
    goes through a prepared statement, which lives on one server connection: run the COPY inside a \
    transaction (`conn.begin()` or #[transactional]), which keeps one server connection throughout";
