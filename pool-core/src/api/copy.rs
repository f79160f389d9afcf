//! COPY through the client: [`CopyInSink`], the sink of `copy_in` (`COPY … FROM STDIN`),
//! and [`CopyOutStream`], the stream of `copy_out` (`COPY … TO STDOUT`), with their binary
//! forms over tokio-postgres' own binary copy types. Like a [`RowStream`](super::RowStream)
//! each borrows its connection mutably (or, from `Db`, holds one) until it is dropped.

use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Sink, Stream};
use tokio_postgres::binary_copy::{BinaryCopyInWriter, BinaryCopyOutRow, BinaryCopyOutStream};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{CopyInSink as DriverSink, CopyOutStream as DriverStream};

use crate::conn::{Conn, Place, placement_copy};
use crate::error::{Error, Result};
use crate::stmt::{CopyInSql, CopyOutSql, StatementFuture};

use super::acquire::Acquire;
use super::db::Db;
use super::stream::Source;
use super::tx::Tx;

/// A connection with a COPY in progress: dropped before the copy is done, it puts the
/// connection on its recovery path.
struct InProgress<'c> {
    source: Source<'c>,
    done: bool,
    abandon: fn(&mut Conn),
}

impl InProgress<'_> {
    /// The copy ended (finished, or failed on the server): the connection is quiet.
    fn end(&mut self, res: std::result::Result<u64, tokio_postgres::Error>) -> Result<u64> {
        self.done = true;
        res.map_err(|e| self.source.conn().stream_error(e))
    }

    /// The error of a call after the copy ended.
    fn ended(&self) -> Result<()> {
        if self.done {
            Err(Error::refused(
                "COPY",
                "the copy has already ended (finished or failed); start a new one with copy_in/copy_out",
            ))
        } else {
            Ok(())
        }
    }

    /// A driver error in the middle of the copy.
    fn fail(&mut self, e: tokio_postgres::Error) -> Error {
        self.done = true;
        self.source.conn().stream_error(e)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        if !self.done {
            (self.abandon)(self.source.conn());
        }
    }
}

/// A driver value that is pinned on first use, so that until then it can still be
/// handed to one of tokio-postgres' binary copy types, which take it by value.
enum Lazy<T> {
    Fresh(Box<T>),
    Pinned(Pin<Box<T>>),
    Gone,
}

impl<T> Lazy<T> {
    fn pinned(&mut self) -> Option<Pin<&mut T>> {
        if matches!(self, Lazy::Fresh(_))
            && let Lazy::Fresh(value) = std::mem::replace(self, Lazy::Gone)
        {
            *self = Lazy::Pinned(Box::into_pin(value));
        }
        match self {
            Lazy::Pinned(p) => Some(p.as_mut()),
            _ => None,
        }
    }

    fn take_fresh(&mut self) -> Option<T> {
        match std::mem::replace(self, Lazy::Gone) {
            Lazy::Fresh(value) => Some(*value),
            other => {
                *self = other;
                None
            }
        }
    }
}

fn already_used(what: &str) -> Error {
    Error::refused(
        "COPY",
        format!(
            "{what} must be called before any data is sent or read; call it right after the copy starts"
        ),
    )
}

/// The sink of [`copy_in`](Conn::copy_in) (`COPY … FROM STDIN`): send the data as
/// [`Bytes`] (in the COPY's format: text, CSV or binary) with `futures::SinkExt::send`
/// or `send_all`, then call [`finish`](CopyInSink::finish) for the row count.
///
/// Dropped before `finish`, the copy is aborted: nothing of it is committed, and a
/// transaction around it is aborted too (the server fails it), so the `Tx` then only
/// rolls back. Malformed data is an [`Error::Db`] with the server's message, from
/// `finish` (or a send), and the connection stays usable.
///
/// For binary COPY with typed values, [`binary`](CopyInSink::binary) turns it into
/// tokio-postgres' [`BinaryCopyInWriter`].
#[must_use = "a copy_in sink does nothing until data is sent and it is finished"]
pub struct CopyInSink<'c> {
    // Declared first: dropped before `op`, so the driver aborts the copy first.
    sink: Lazy<DriverSink<Bytes>>,
    op: InProgress<'c>,
}

impl std::fmt::Debug for CopyInSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyInSink")
            .field("done", &self.op.done)
            .finish_non_exhaustive()
    }
}

impl<'c> CopyInSink<'c> {
    fn new(source: Source<'c>, sink: DriverSink<Bytes>) -> Self {
        CopyInSink {
            sink: Lazy::Fresh(Box::new(sink)),
            op: InProgress {
                source,
                done: false,
                abandon: Conn::abandon_copy_in,
            },
        }
    }

    fn sink(&mut self) -> Result<Pin<&mut DriverSink<Bytes>>> {
        self.op.ended()?;
        self.sink.pinned().ok_or_else(|| already_used("binary()"))
    }

    /// Ends the copy and returns the number of rows it wrote. An error here is the
    /// server's verdict on the data (e.g. malformed input): nothing was written.
    ///
    /// Callable on the sink or on a pinned sink (`pin_mut!(sink); sink.finish()`), as
    /// with tokio-postgres.
    pub async fn finish(&mut self) -> Result<u64> {
        let sink = self.sink()?;
        let res = sink.finish().await;
        self.op.end(res)
    }

    /// Turns this copy into tokio-postgres' binary writer for a
    /// `COPY … FROM STDIN (FORMAT binary)` whose columns have these `types`: write
    /// rows of typed values with [`BinaryCopyIn::write`]. Call it before sending any
    /// data.
    pub fn binary(mut self, types: &[Type]) -> Result<BinaryCopyIn<'c>> {
        self.op.ended()?;
        let sink = self
            .sink
            .take_fresh()
            .ok_or_else(|| already_used("binary()"))?;
        Ok(BinaryCopyIn {
            writer: Box::pin(BinaryCopyInWriter::new(sink, types)),
            op: self.op,
        })
    }
}

impl Sink<Bytes> for CopyInSink<'_> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let res = match this.sink() {
            Ok(sink) => std::task::ready!(sink.poll_ready(cx)),
            Err(e) => return Poll::Ready(Err(e)),
        };
        Poll::Ready(res.map_err(|e| this.op.fail(e)))
    }

    fn start_send(self: Pin<&mut Self>, item: Bytes) -> Result<()> {
        let this = self.get_mut();
        let res = this.sink()?.start_send(item);
        res.map_err(|e| this.op.fail(e))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.op.done {
            return Poll::Ready(Ok(()));
        }
        let res = match this.sink() {
            Ok(sink) => std::task::ready!(sink.poll_flush(cx)),
            Err(e) => return Poll::Ready(Err(e)),
        };
        Poll::Ready(res.map_err(|e| this.op.fail(e)))
    }

    /// Finishes the copy (as [`finish`](CopyInSink::finish), without the row count).
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.op.done {
            return Poll::Ready(Ok(()));
        }
        let res = match this.sink() {
            Ok(sink) => std::task::ready!(sink.poll_finish(cx)),
            Err(e) => return Poll::Ready(Err(e)),
        };
        Poll::Ready(this.op.end(res).map(drop))
    }
}

/// A binary `COPY … FROM STDIN` writing typed rows through tokio-postgres'
/// [`BinaryCopyInWriter`] (from [`CopyInSink::binary`]). Dropped before
/// [`finish`](BinaryCopyIn::finish), the copy is aborted, as for [`CopyInSink`].
#[must_use = "a binary copy does nothing until rows are written and it is finished"]
pub struct BinaryCopyIn<'c> {
    writer: Pin<Box<BinaryCopyInWriter>>,
    op: InProgress<'c>,
}

impl std::fmt::Debug for BinaryCopyIn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinaryCopyIn")
            .field("done", &self.op.done)
            .finish_non_exhaustive()
    }
}

impl BinaryCopyIn<'_> {
    /// Writes one row: a value for each column type given to [`CopyInSink::binary`].
    pub async fn write(&mut self, values: &[&(dyn ToSql + Sync)]) -> Result<()> {
        self.op.ended()?;
        let res = self.writer.as_mut().write(values).await;
        res.map_err(|e| self.op.fail(e))
    }

    /// Ends the copy and returns the number of rows written.
    pub async fn finish(&mut self) -> Result<u64> {
        self.op.ended()?;
        let res = self.writer.as_mut().finish().await;
        self.op.end(res)
    }
}

/// The data of [`copy_out`](Conn::copy_out) (`COPY … TO STDOUT`) as it arrives: a
/// [`Stream`] of `Result<Bytes>` in the COPY's format.
///
/// Dropped before its end: outside a transaction the COPY is cancelled on the server;
/// inside one the rest is drained (a cancel would abort the transaction). Either way the
/// connection's next use waits until it is quiet. For binary COPY,
/// [`binary`](CopyOutStream::binary) decodes rows with tokio-postgres'
/// [`BinaryCopyOutStream`].
#[must_use = "streams do nothing unless polled"]
pub struct CopyOutStream<'c> {
    data: Lazy<DriverStream>,
    op: InProgress<'c>,
}

impl std::fmt::Debug for CopyOutStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOutStream")
            .field("done", &self.op.done)
            .finish_non_exhaustive()
    }
}

impl<'c> CopyOutStream<'c> {
    fn new(source: Source<'c>, data: DriverStream) -> Self {
        CopyOutStream {
            data: Lazy::Fresh(Box::new(data)),
            op: InProgress {
                source,
                done: false,
                abandon: Conn::abandon_stream,
            },
        }
    }

    /// Decodes a `COPY … TO STDOUT (FORMAT binary)` whose columns have these `types`
    /// into rows, with tokio-postgres' [`BinaryCopyOutStream`]. Call it before reading.
    pub fn binary(mut self, types: &[Type]) -> Result<BinaryCopyOut<'c>> {
        self.op.ended()?;
        let data = self
            .data
            .take_fresh()
            .ok_or_else(|| already_used("binary()"))?;
        Ok(BinaryCopyOut {
            rows: Box::pin(BinaryCopyOutStream::new(data, types)),
            op: self.op,
        })
    }
}

/// Polls a driver stream of a COPY, ending the copy at its end or first error.
fn poll_copy<T>(
    op: &mut InProgress<'_>,
    next: Poll<Option<std::result::Result<T, tokio_postgres::Error>>>,
) -> Poll<Option<Result<T>>> {
    match next {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Some(Ok(item))) => Poll::Ready(Some(Ok(item))),
        Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(op.fail(e)))),
        Poll::Ready(None) => {
            op.done = true;
            Poll::Ready(None)
        }
    }
}

impl Stream for CopyOutStream<'_> {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.op.done {
            return Poll::Ready(None);
        }
        let Some(data) = this.data.pinned() else {
            return Poll::Ready(None);
        };
        let next = data.poll_next(cx);
        poll_copy(&mut this.op, next)
    }
}

/// The rows of a binary `COPY … TO STDOUT`, decoded by tokio-postgres'
/// [`BinaryCopyOutStream`] (from [`CopyOutStream::binary`]); dropped early, as [`CopyOutStream`].
#[must_use = "streams do nothing unless polled"]
pub struct BinaryCopyOut<'c> {
    rows: Pin<Box<BinaryCopyOutStream>>,
    op: InProgress<'c>,
}

impl std::fmt::Debug for BinaryCopyOut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinaryCopyOut")
            .field("done", &self.op.done)
            .finish_non_exhaustive()
    }
}

impl Stream for BinaryCopyOut<'_> {
    type Item = Result<BinaryCopyOutRow>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.op.done {
            return Poll::Ready(None);
        }
        let next = this.rows.as_mut().poll_next(cx);
        poll_copy(&mut this.op, next)
    }
}

impl Conn {
    /// Starts a `COPY … FROM STDIN` and returns its sink, like tokio-postgres'
    /// `copy_in`: `let mut sink = conn.copy_in("COPY t (a, b) FROM STDIN").await?;`,
    /// then send [`Bytes`] and `sink.finish().await?` for the row count. The sink
    /// borrows this connection until it is dropped (see [`CopyInSink`]).
    ///
    /// Only a `COPY … FROM STDIN` is accepted (`sql!` checks it at compile time, a
    /// string is checked at run time). The statement deadline covers starting the copy.
    pub fn copy_in<'a, S: CopyInSql + 'a>(
        &'a mut self,
        statement: S,
    ) -> StatementFuture<'a, CopyInSink<'a>> {
        StatementFuture::new(async move {
            let sink = self
                .start_copy_in(statement.__copy_parts(), Place::Conn)
                .await?;
            Ok(CopyInSink::new(Source::Borrowed(self), sink))
        })
    }

    /// Starts a `COPY … TO STDOUT` and returns its data as it arrives, like
    /// tokio-postgres' `copy_out`: `conn.copy_out("COPY t TO STDOUT").await?` is a
    /// stream of [`Bytes`] that borrows this connection until it is dropped (see
    /// [`CopyOutStream`]).
    pub fn copy_out<'a, S: CopyOutSql + 'a>(
        &'a mut self,
        statement: S,
    ) -> StatementFuture<'a, CopyOutStream<'a>> {
        StatementFuture::new(async move {
            let data = self
                .start_copy_out(statement.__copy_parts(), Place::Conn)
                .await?;
            Ok(CopyOutStream::new(Source::Borrowed(self), data))
        })
    }
}

impl Tx<'_> {
    /// Starts a `COPY … FROM STDIN` in the transaction (see [`Conn::copy_in`]): what
    /// it writes commits with the transaction. Dropping the sink before `finish`
    /// aborts the copy and the transaction.
    pub fn copy_in<'a, S: CopyInSql + 'a>(
        &'a mut self,
        statement: S,
    ) -> StatementFuture<'a, CopyInSink<'a>> {
        StatementFuture::new(async move {
            let conn = self.live_conn()?;
            let sink = conn
                .start_copy_in(statement.__copy_parts(), Place::Tx)
                .await?;
            Ok(CopyInSink::new(Source::Borrowed(conn), sink))
        })
    }

    /// Starts a `COPY … TO STDOUT` in the transaction (see [`Conn::copy_out`]): it
    /// sees the transaction's snapshot and writes. Dropping it early drains the rest,
    /// so the transaction stays usable.
    pub fn copy_out<'a, S: CopyOutSql + 'a>(
        &'a mut self,
        statement: S,
    ) -> StatementFuture<'a, CopyOutStream<'a>> {
        StatementFuture::new(async move {
            let conn = self.live_conn()?;
            let data = conn
                .start_copy_out(statement.__copy_parts(), Place::Tx)
                .await?;
            Ok(CopyOutStream::new(Source::Borrowed(conn), data))
        })
    }
}

impl Db {
    /// One-shot: checks out a connection and starts a `COPY … FROM STDIN` on it (see
    /// [`Conn::copy_in`]); the sink holds the connection until it is dropped (and
    /// borrows this `Db`, like a held connection).
    #[track_caller]
    pub fn copy_in<'a, S: CopyInSql + 'a>(
        &'a mut self,
        statement: S,
    ) -> StatementFuture<'a, CopyInSink<'a>> {
        let site = Location::caller();
        StatementFuture::new(async move {
            let parts = statement.__copy_parts();
            placement_copy(&parts, Place::Db, pool_sql::CopyDirection::In)?;
            let mut conn = Acquire::new(self, site).await?;
            let sink = conn.start_copy_in(parts, Place::Db).await?;
            Ok(CopyInSink::new(Source::Pooled(conn), sink))
        })
    }

    /// One-shot: checks out a connection and starts a `COPY … TO STDOUT` on it (see
    /// [`Conn::copy_out`]); the stream holds the connection until it is dropped.
    #[track_caller]
    pub fn copy_out<'a, S: CopyOutSql + 'a>(
        &'a mut self,
        statement: S,
    ) -> StatementFuture<'a, CopyOutStream<'a>> {
        let site = Location::caller();
        StatementFuture::new(async move {
            let parts = statement.__copy_parts();
            placement_copy(&parts, Place::Db, pool_sql::CopyDirection::Out)?;
            let mut conn = Acquire::new(self, site).await?;
            let data = conn.start_copy_out(parts, Place::Db).await?;
            Ok(CopyOutStream::new(Source::Pooled(conn), data))
        })
    }
}
