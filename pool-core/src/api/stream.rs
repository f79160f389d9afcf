//! `RowStream`: the rows of a statement as they come, on a connection the stream
//! borrows (or, from `Db`, holds) for its whole life.

use std::pin::Pin;
use std::task::{Context, Poll};

use std::panic::Location;

use futures::Stream;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::conn::{Conn, Place, placement};
use crate::error::Result;
use crate::stmt::{ConnSql, OneShotSql, Sql, StatementFuture};

use super::acquire::Acquire;
use super::db::Db;
use super::pooled::PooledConn;
use super::tx::Tx;

/// The connection a stream (or a COPY) reads from or writes to.
pub(super) enum Source<'c> {
    /// Borrowed mutably from a `Conn` or `Tx`: nothing else runs on it meanwhile.
    Borrowed(&'c mut Conn),
    /// Checked out by `Db::query_stream` for the stream's life.
    Pooled(PooledConn<'c>),
}

impl Source<'_> {
    pub(super) fn conn(&mut self) -> &mut Conn {
        match self {
            Source::Borrowed(c) => c,
            Source::Pooled(c) => c,
        }
    }
}

/// The rows of [`query_stream`](Conn::query_stream), read as they arrive: a
/// [`Stream`] of `Result<Row>` (use `futures::StreamExt::next` or `TryStreamExt`).
///
/// It borrows its connection mutably until it is dropped, so nothing else can run on
/// that connection while rows are unread — the stall that a second statement behind an
/// unread stream would be is a compile error instead. Collect the rows first, or take a
/// second connection (`db.acquire_many(2)`), to run statements per row.
///
/// Dropped before its end: outside a transaction the statement is cancelled on the
/// server; inside one the remaining rows are drained (a cancel would abort the
/// transaction). Either way the connection's next use waits until it is quiet.
#[must_use = "streams do nothing unless polled"]
pub struct RowStream<'c> {
    source: Source<'c>,
    rows: Pin<Box<tokio_postgres::RowStream>>,
    done: bool,
}

impl std::fmt::Debug for RowStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowStream")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<'c> RowStream<'c> {
    pub(crate) fn borrowed(conn: &'c mut Conn, rows: tokio_postgres::RowStream) -> Self {
        RowStream {
            source: Source::Borrowed(conn),
            rows: Box::pin(rows),
            done: false,
        }
    }

    pub(crate) fn pooled(conn: PooledConn<'c>, rows: tokio_postgres::RowStream) -> Self {
        RowStream {
            source: Source::Pooled(conn),
            rows: Box::pin(rows),
            done: false,
        }
    }

    /// The number of rows the statement affected, once the stream has ended.
    pub fn rows_affected(&self) -> Option<u64> {
        self.rows.rows_affected()
    }
}

impl Stream for RowStream<'_> {
    type Item = Result<Row>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.rows.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(row))) => Poll::Ready(Some(Ok(row))),
            Poll::Ready(Some(Err(e))) => {
                // The statement is over: the server ended it with this error.
                this.done = true;
                Poll::Ready(Some(Err(this.source.conn().stream_error(e))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for RowStream<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.source.conn().abandon_stream();
        }
    }
}

impl Conn {
    /// Runs a statement and returns its rows as they arrive, like tokio-postgres'
    /// `query_raw`: `conn.query_stream(sql, &[]).await?` is a [`RowStream`] that borrows
    /// this connection until it is dropped.
    ///
    /// Cancellation: the statement is cancelled on the server if the future, or the
    /// stream before its end, is dropped (see [`RowStream`]).
    ///
    /// The parameters are sent when the statement starts: they need to live only
    /// until the future completes, not as long as the stream.
    pub fn query_stream<'a, 'f, S>(
        &'a mut self,
        statement: S,
        params: &'f [&'f (dyn ToSql + Sync)],
    ) -> StatementFuture<'f, RowStream<'a>>
    where
        'a: 'f,
        S: ConnSql + 'f,
    {
        StatementFuture::new(async move {
            let rows = self
                .start_stream(statement.__parts(), params, Place::Conn)
                .await?;
            Ok(RowStream::borrowed(self, rows))
        })
    }
}

impl Tx<'_> {
    /// Runs a statement in the transaction and returns its rows as they arrive (see
    /// [`Conn::query_stream`]). Dropping the stream before its end drains the rest of
    /// the rows, so the transaction stays usable.
    pub fn query_stream<'a, 'f, S: Sql + 'f>(
        &'a mut self,
        statement: S,
        params: &'f [&'f (dyn ToSql + Sync)],
    ) -> StatementFuture<'f, RowStream<'a>>
    where
        'a: 'f,
    {
        StatementFuture::new(async move {
            let conn = self.live_conn()?;
            let rows = conn
                .start_stream(statement.__parts(), params, Place::Tx)
                .await?;
            Ok(RowStream::borrowed(conn, rows))
        })
    }
}

impl Db {
    /// One-shot: checks out a connection, runs a statement and returns its rows as they
    /// arrive; the stream holds the connection until it is dropped (and borrows this
    /// `Db`, like a held connection). Only statements safe on any connection.
    ///
    /// Cancellation: as [`Conn::query_stream`].
    #[track_caller]
    pub fn query_stream<'a, 'f, S: OneShotSql + 'f>(
        &'a mut self,
        statement: S,
        params: &'f [&'f (dyn ToSql + Sync)],
    ) -> StatementFuture<'f, RowStream<'a>>
    where
        'a: 'f,
    {
        let site = Location::caller();
        StatementFuture::new(async move {
            let parts = statement.__parts();
            placement(&parts, Place::Db, false)?;
            let mut conn = Acquire::new(self, site).await?;
            let rows = conn.start_stream(parts, params, Place::Db).await?;
            Ok(RowStream::pooled(conn, rows))
        })
    }
}
