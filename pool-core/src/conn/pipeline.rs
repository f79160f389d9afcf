//! Several statements in one round trip on one held connection or transaction: each is
//! admitted (placement, readiness) and prepared first, then all are sent before any
//! answer is read — the driver writes them back to back — under one guard and one
//! deadline, and the answers are taken in order.

use pool_sql::{Classification, Touches};
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use super::Conn;
use super::exec::Place;
use crate::error::{Error, Result};
use crate::stmt::SqlParts;

/// What one pipelined statement returned.
#[derive(Debug)]
#[non_exhaustive]
pub enum Pipelined {
    /// The rows of a `query`.
    Rows(Vec<Row>),
    /// The rows affected by an `execute`.
    Count(u64),
}

impl Pipelined {
    /// The rows, for a `query` (none for an `execute`).
    pub fn rows(&self) -> &[Row] {
        match self {
            Pipelined::Rows(rows) => rows,
            Pipelined::Count(_) => &[],
        }
    }

    /// The rows, for a `query` (empty for an `execute`).
    pub fn into_rows(self) -> Vec<Row> {
        match self {
            Pipelined::Rows(rows) => rows,
            Pipelined::Count(_) => Vec::new(),
        }
    }

    /// The rows affected, for an `execute` (the number of rows for a `query`).
    pub fn count(&self) -> u64 {
        match self {
            Pipelined::Rows(rows) => rows.len() as u64,
            Pipelined::Count(n) => *n,
        }
    }
}

/// Whether a pipelined statement's rows or its count are wanted.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step {
    Query,
    Execute,
}

/// One statement of a pipeline.
pub(crate) struct Item<'a> {
    pub(crate) parts: SqlParts<'a>,
    pub(crate) params: &'a [&'a (dyn ToSql + Sync)],
    pub(crate) step: Step,
}

impl Conn {
    /// Runs `items` in one round trip (see the module doc). The answers come in order;
    /// the first failure is returned (inside a transaction the ones after it fail too,
    /// the transaction being aborted). Behind a transaction-mode pooler they run one
    /// after the other (unnamed statements are described first, which a pipeline
    /// cannot do).
    pub(crate) async fn pipelined(
        &mut self,
        items: Vec<Item<'_>>,
        place: Place,
    ) -> Result<Vec<Pipelined>> {
        if self.ctx.config.pgbouncer_transaction_mode {
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                out.push(match it.step {
                    Step::Query => Pipelined::Rows(self.rows(it.parts, it.params, place).await?),
                    Step::Execute => {
                        Pipelined::Count(self.count(it.parts, it.params, place).await?)
                    }
                });
            }
            return Ok(out);
        }
        let deadline = self.deadline();
        let mut classes: Vec<Classification> = Vec::with_capacity(items.len());
        let mut touches = Touches::empty();
        for it in &items {
            let class = self.admit(&it.parts, place, deadline, None).await?;
            touches |= class.touches;
            classes.push(class);
        }
        let mut statements = Vec::with_capacity(items.len());
        for it in &items {
            statements.push(self.statement_for(&it.parts, deadline).await?);
        }
        let text = items.first().map_or("", |it| it.parts.text);
        let (client, guard) = self.op(touches);
        let answers = guard
            .run_with(deadline, text, || {
                let sends = items
                    .iter()
                    .zip(&statements)
                    .map(|(it, st)| send(client, st, it.params, it.step));
                // Polled together: every statement is sent before any answer is awaited.
                async move { Ok(futures::future::join_all(sends).await) }
            })
            .await?;
        let mut out = Vec::with_capacity(answers.len());
        let mut first_error = None;
        for ((it, class), answer) in items.iter().zip(&classes).zip(answers) {
            let res = answer.map_err(|e| self.state.on_error(e));
            self.settle(&it.parts, class, &res);
            match res {
                Ok(o) => out.push(o),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// Sends one statement of a pipeline and reads its answer.
/// Also the shared lane's one send of a one-shot.
pub(crate) async fn send(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn ToSql + Sync)],
    step: Step,
) -> std::result::Result<Pipelined, tokio_postgres::Error> {
    match step {
        Step::Query => client.query(statement, params).await.map(Pipelined::Rows),
        Step::Execute => client
            .execute(statement, params)
            .await
            .map(Pipelined::Count),
    }
}

/// [`send`] for an unnamed statement: parse, bind and execute in one request, with the
/// parameters' types given (behind a transaction-mode pooler).
pub(crate) async fn send_typed(
    client: &tokio_postgres::Client,
    sql: &str,
    typed: &[(&(dyn ToSql + Sync), Type)],
    step: Step,
) -> std::result::Result<Pipelined, tokio_postgres::Error> {
    match step {
        Step::Query => client.query_typed(sql, typed).await.map(Pipelined::Rows),
        Step::Execute => client.execute_typed(sql, typed).await.map(Pipelined::Count),
    }
}

/// Refuses an empty pipeline (nothing to send) with what to do.
pub(crate) fn not_empty(items: &[Item<'_>]) -> Result<()> {
    if items.is_empty() {
        return Err(Error::refused(
            "<empty pipeline>",
            "add statements with .query(..) or .execute(..) before .run()",
        ));
    }
    Ok(())
}
