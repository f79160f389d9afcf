//! `Pipeline`: several statements in one round trip on a held connection or in a
//! transaction, each placement rule kept.

use std::marker::PhantomData;

use tokio_postgres::types::ToSql;

use crate::conn::{Conn, Item, Pipelined, Place, Step, not_empty};
use crate::error::{Error, Result};
use crate::stmt::{ConnSql, Sql};

/// Marker: a pipeline on a held connection outside a transaction (statements that are
/// `ConnSql`).
#[derive(Debug)]
pub enum OnConn {}

/// Marker: a pipeline inside a transaction (any statement, transaction-only ones too).
#[derive(Debug)]
pub enum InTx {}

/// A statement waiting in a pipeline, with its parameters and what is wanted of it.
type Queued<'c> = (Box<dyn Sql + 'c>, Params<'c>, Step);
/// A statement's parameters.
type Params<'c> = &'c [&'c (dyn ToSql + Sync)];

/// Several statements sent in one round trip, their answers returned in order — from
/// [`Conn::pipeline`] or [`Tx::pipeline`](crate::Tx::pipeline). Add statements with
/// [`query`](Pipeline::query) / [`execute`](Pipeline::execute), then
/// [`run`](Pipeline::run):
///
/// ```no_run
/// # async fn f(tx: &mut pool_core::Tx<'_>) -> Result<(), pool_core::Error> {
/// let (a, b) = (1_i64, 2_i64);
/// let out = tx
///     .pipeline()
///     .execute("INSERT INTO item (id) VALUES ($1)", &[&a])
///     .execute("INSERT INTO item (id) VALUES ($1)", &[&b])
///     .query("SELECT count(*) FROM item", &[])
///     .run()
///     .await?;
/// let n: i64 = out[2].rows()[0].get(0);
/// # Ok(()) }
/// ```
///
/// Every statement is checked where it runs before anything is sent (on a connection a
/// transaction-only statement does not compile, or is refused if it is a string), all
/// run under the statement deadline, and a dropped `run` is cancelled and drained like
/// a dropped statement. Outside a transaction each statement is its own implicit
/// transaction; inside one, a failure aborts the transaction and the statements after
/// it fail too. The first failure is returned.
#[must_use = "a pipeline sends nothing until `.run().await`"]
pub struct Pipeline<'c, P> {
    conn: &'c mut Conn,
    /// For a transaction's pipeline: the depth and epoch its `Tx` owned, checked at run.
    tx: Option<(u32, u64)>,
    items: Vec<Queued<'c>>,
    _place: PhantomData<fn() -> P>,
}

impl<P> std::fmt::Debug for Pipeline<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("statements", &self.items.len())
            .finish_non_exhaustive()
    }
}

impl<'c, P> Pipeline<'c, P> {
    pub(super) fn new(conn: &'c mut Conn, tx: Option<(u32, u64)>) -> Self {
        Pipeline {
            conn,
            tx,
            items: Vec::new(),
            _place: PhantomData,
        }
    }

    fn push(
        mut self,
        statement: Box<dyn Sql + 'c>,
        params: &'c [&'c (dyn ToSql + Sync)],
        step: Step,
    ) -> Self {
        self.items.push((statement, params, step));
        self
    }

    /// Sends every statement, then reads every answer, in order.
    pub async fn run(self) -> Result<Vec<Pipelined>> {
        let (place, conn) = match self.tx {
            Some((depth, epoch)) => {
                if !self.conn.tx().is(depth, epoch) {
                    return Err(Error::TransactionAborted {
                        reason: "this transaction was already ended underneath its handle (a nested operation was \
                                 cancelled or failed in a way that forced a rollback)",
                    });
                }
                (Place::Tx, self.conn)
            }
            None => (Place::Conn, self.conn),
        };
        let items: Vec<Item<'_>> = self
            .items
            .iter()
            .map(|(statement, params, step)| Item {
                parts: statement.__parts(),
                params,
                step: *step,
            })
            .collect();
        not_empty(&items)?;
        conn.pipelined(items, place).await
    }
}

impl<'c> Pipeline<'c, OnConn> {
    /// Adds a statement whose rows are wanted.
    pub fn query<S: ConnSql + 'c>(
        self,
        statement: S,
        params: &'c [&'c (dyn ToSql + Sync)],
    ) -> Self {
        self.push(Box::new(statement), params, Step::Query)
    }

    /// Adds a statement whose count of affected rows is wanted.
    pub fn execute<S: ConnSql + 'c>(
        self,
        statement: S,
        params: &'c [&'c (dyn ToSql + Sync)],
    ) -> Self {
        self.push(Box::new(statement), params, Step::Execute)
    }
}

impl<'c> Pipeline<'c, InTx> {
    /// Adds a statement whose rows are wanted (any statement: this is a transaction).
    pub fn query<S: Sql + 'c>(self, statement: S, params: &'c [&'c (dyn ToSql + Sync)]) -> Self {
        self.push(Box::new(statement), params, Step::Query)
    }

    /// Adds a statement whose count of affected rows is wanted.
    pub fn execute<S: Sql + 'c>(self, statement: S, params: &'c [&'c (dyn ToSql + Sync)]) -> Self {
        self.push(Box::new(statement), params, Step::Execute)
    }
}

impl Conn {
    /// A pipeline on this connection: several statements in one round trip (see
    /// [`Pipeline`]). Outside a transaction it takes the statements a held connection
    /// takes.
    pub fn pipeline(&mut self) -> Pipeline<'_, OnConn> {
        Pipeline::new(self, None)
    }
}
