//! Statement execution: the placement rules checked at run time, how a statement goes
//! to the server (a cached named statement, or unnamed behind a transaction-mode
//! pooler), and what its outcome means for the connection's caches.

use std::borrow::Cow;
use std::future::Future;

#[cfg(feature = "spans")]
use tracing::Instrument;

use pool_sql::{Classification, CopyDirection, Kind, Touches};
use tokio::time::Instant;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Statement};

use super::Conn;
use super::guard::Recovery;
use super::outcome::{Call, Count, Outcome, Rows, Streamed};
use crate::error::{Error, Result};
use crate::stmt::{Prepared, SqlParts};

/// Where a statement is being run, for the run-time placement rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// A one-shot statement on `Db`.
    Db,
    /// A held connection (maybe inside a transaction, if reached through one).
    Conn,
    /// A transaction.
    Tx,
}

impl Conn {
    /// Checks that the statement may run here and the connection is ready for it.
    pub(crate) async fn admit(
        &mut self,
        parts: &SqlParts<'_>,
        place: Place,
        deadline: Option<Instant>,
        copy: Option<CopyDirection>,
    ) -> Result<Classification> {
        if let Some(p) = parts.prepared
            && p.conn_id != self.meta.id
        {
            return Err(Error::refused(
                "<prepared statement>",
                "it was prepared on another connection; prepare it on this one (prepare is cached per connection)",
            ));
        }
        if parts.unclassified()
            && let Some(class) = self.cache.class_of(parts.text)
        {
            parts.assume(class);
        }
        let class = placement_as(parts, place, self.state.tx.depth() > 0, copy)?;
        if class.kind == Kind::Session && self.ctx.config.pgbouncer_transaction_mode {
            return Err(Error::refused(parts.text, POOLER_SESSION_ADVICE));
        }
        self.ensure_ready(deadline, parts.text).await?;
        if self.state.tx.is_aborted() {
            return Err(Error::TransactionAborted {
                reason: "an earlier statement in this transaction failed or was cancelled, so the server ignores \
                         everything until it is rolled back",
            });
        }
        Ok(class)
    }

    pub(super) async fn statement_for(
        &mut self,
        parts: &SqlParts<'_>,
        deadline: Option<Instant>,
    ) -> Result<Statement> {
        if let Some(p) = parts.prepared {
            return Ok(p.statement.clone());
        }
        if let Some(st) = self.cache.get(parts.text) {
            return Ok(st.clone());
        }
        let (client, guard) = self.op(Touches::empty());
        // Boxed: the driver's prepare future is the largest of the statement path, and
        // unboxed it would size every statement's future for this rare miss.
        let st = Box::pin(guard.run(deadline, parts.text, client.prepare(parts.text))).await?;
        let capacity = self.ctx.config.statement_cache_capacity;
        if let Ok(class) = parts.class() {
            self.cache.insert(parts.text, st.clone(), *class, capacity);
        }
        Ok(st)
    }

    /// How a statement with parameters goes to the server: unnamed (parse, bind and
    /// execute in one round trip) behind a transaction-mode pooler, else as a cached
    /// named statement.
    async fn call_for<'p>(
        &mut self,
        parts: &SqlParts<'_>,
        params: &[&'p (dyn ToSql + Sync)],
        deadline: Option<Instant>,
    ) -> Result<Call<'p>> {
        if self.ctx.config.pgbouncer_transaction_mode && parts.prepared.is_none() {
            let typed = self.typed_params(parts, params, deadline).await?;
            Ok(Call::Unnamed(typed))
        } else {
            let st = self.statement_for(parts, deadline).await?;
            Ok(Call::Named(st))
        }
    }

    /// The parameters paired with the types the server infers for them.
    async fn typed_params<'p>(
        &mut self,
        parts: &SqlParts<'_>,
        params: &[&'p (dyn ToSql + Sync)],
        deadline: Option<Instant>,
    ) -> Result<Vec<(&'p (dyn ToSql + Sync), Type)>> {
        let types = self.param_types(parts.text, deadline).await?;
        paired(parts.text, &types, params)
    }

    /// The parameter types this connection has asked the server for `sql`, if it has.
    pub(crate) fn known_param_types(&self, sql: &str) -> Option<&[Type]> {
        self.cache.param_types.get(sql).map(Vec::as_slice)
    }

    /// The parameter types of `sql`, asked from the server once per connection. Outside
    /// a transaction the question (a named statement, described and closed) runs inside
    /// its own `BEGIN … COMMIT`, which a transaction-mode pooler keeps on one server
    /// connection, so nothing is left behind on a connection other clients share.
    async fn param_types(&mut self, sql: &str, deadline: Option<Instant>) -> Result<Vec<Type>> {
        if let Some(types) = self.cache.param_types.get(sql) {
            return Ok(types.clone());
        }
        let wrap = self.state.tx.depth() == 0;
        // Abandoned midway, the wrapping transaction must not survive.
        let recovery = if wrap {
            Recovery::DrainThen(Cow::Borrowed("ROLLBACK"))
        } else {
            Recovery::CancelAndDrain
        };
        let (client, guard) = self.guarded(recovery, None);
        let describe = async {
            if wrap {
                client.batch_execute("BEGIN").await?;
            }
            // The statement is dropped here: its Close goes out before the COMMIT.
            let described = client.prepare(sql).await.map(|st| st.params().to_vec());
            if wrap {
                let end = if described.is_ok() {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                };
                client.batch_execute(end).await?;
            }
            described
        };
        // Boxed, like the prepare of `statement_for`: a miss only.
        let types = Box::pin(guard.run(deadline, sql, describe)).await?;
        if self.cache.param_types.len() >= 256 {
            self.cache.param_types.clear();
        }
        self.cache.param_types.insert(sql.into(), types.clone());
        Ok(types)
    }

    /// A statement that may write has run (or was sent): outside a transaction its
    /// commit is recorded now for read-your-writes, inside one at `COMMIT`.
    fn note_write(&mut self, class: &Classification) {
        if class.read_only || self.ctx.config.writes.is_none() {
            return;
        }
        if self.state.tx.depth() > 0 {
            self.state.tx.wrote();
        } else {
            self.note_write_done();
        }
    }

    /// This task's write is committed (or may be): the primary's write log records it.
    pub(super) fn note_write_done(&self) {
        if let Some(log) = &self.ctx.config.writes {
            log.wrote();
        }
    }

    fn after_success(&mut self, class: &Classification) {
        if class.touches.contains(Touches::DROPS_PREPARED) {
            self.cache.clear();
        }
    }

    /// Applies what a statement's outcome means for the connection's caches.
    pub(super) fn settle<T>(
        &mut self,
        parts: &SqlParts<'_>,
        class: &Classification,
        res: &Result<T>,
    ) {
        self.note_write(class);
        match res {
            Ok(_) => self.after_success(class),
            Err(e) => self.after_error(parts, e),
        }
    }

    fn after_error(&mut self, parts: &SqlParts<'_>, e: &Error) {
        // A cached plan invalidated by a schema change: forget it so the next use
        // prepares afresh.
        if let Some(db) = e.as_db_error()
            && (db.code().code() == "0A000"
                || db.code().code() == "26000"
                || self.ctx.config.pgbouncer_transaction_mode)
        {
            self.cache.remove(parts.text);
        }
    }

    /// Runs a statement with parameters and returns its rows.
    pub(crate) fn rows<'a>(
        &'a mut self,
        parts: SqlParts<'a>,
        params: &'a [&'a (dyn ToSql + Sync)],
        place: Place,
    ) -> impl Future<Output = Result<Vec<Row>>> + Send + 'a {
        self.run::<Rows>(parts, params, place)
    }

    /// Runs a statement with parameters and returns the number of rows it affected.
    pub(crate) fn count<'a>(
        &'a mut self,
        parts: SqlParts<'a>,
        params: &'a [&'a (dyn ToSql + Sync)],
        place: Place,
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        self.run::<Count>(parts, params, place)
    }

    /// Starts a statement whose rows are read as they come. The statement is in flight
    /// when this returns: the caller reads it to the end, or calls `abandon_stream`.
    pub(crate) fn start_stream<'a>(
        &'a mut self,
        parts: SqlParts<'a>,
        params: &'a [&'a (dyn ToSql + Sync)],
        place: Place,
    ) -> impl Future<Output = Result<tokio_postgres::RowStream>> + Send + 'a {
        self.run::<Streamed>(parts, params, place)
    }

    /// The tracing span of a statement, with OpenTelemetry's database attribute names
    /// (debug level, target `pool_core`); its fields are filled only when it is enabled.
    #[cfg(feature = "spans")]
    pub(crate) fn statement_span(&self, text: &str) -> tracing::Span {
        statement_span(&self.ctx, text)
    }

    /// Admits the statement, sends it the way this connection sends statements, and
    /// settles the caches: the one path of every statement with parameters (in its
    /// span, with the `spans` feature).
    fn run<'a, O: Outcome + 'a>(
        &'a mut self,
        parts: SqlParts<'a>,
        params: &'a [&'a (dyn ToSql + Sync)],
        place: Place,
    ) -> impl Future<Output = Result<O::Out>> + Send + 'a {
        #[cfg(feature = "spans")]
        {
            let span = self.statement_span(parts.text);
            self.run_in::<O>(parts, params, place).instrument(span)
        }
        #[cfg(not(feature = "spans"))]
        self.run_in::<O>(parts, params, place)
    }

    async fn run_in<O: Outcome>(
        &mut self,
        parts: SqlParts<'_>,
        params: &[&(dyn ToSql + Sync)],
        place: Place,
    ) -> Result<O::Out> {
        let deadline = self.deadline();
        let class = self.admit(&parts, place, deadline, None).await?;
        let call = self.call_for(&parts, params, deadline).await?;
        let (client, guard) = self.op(class.touches);
        let res = match &call {
            Call::Named(st) => {
                guard
                    .run_with(deadline, parts.text, || O::named(client, st, params))
                    .await
            }
            Call::Unnamed(typed) => {
                guard
                    .run_with(deadline, parts.text, || {
                        O::unnamed(client, parts.text, typed)
                    })
                    .await
            }
        };
        self.settle(&parts, &class, &res);
        res
    }

    pub(crate) fn batch<'a>(
        &'a mut self,
        parts: SqlParts<'a>,
        place: Place,
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        #[cfg(feature = "spans")]
        {
            let span = self.statement_span(parts.text);
            self.batch_in(parts, place).instrument(span)
        }
        #[cfg(not(feature = "spans"))]
        self.batch_in(parts, place)
    }

    async fn batch_in(&mut self, parts: SqlParts<'_>, place: Place) -> Result<()> {
        if parts.prepared.is_some() {
            return Err(Error::refused(
                "<prepared statement>",
                "batch_execute takes SQL text, not a prepared statement",
            ));
        }
        let deadline = self.deadline();
        let class = self.admit(&parts, place, deadline, None).await?;
        let (client, guard) = self.op(class.touches);
        let res = guard
            .run(deadline, parts.text, client.batch_execute(parts.text))
            .await;
        self.note_write(&class);
        if res.is_ok() {
            self.after_success(&class);
        }
        res
    }

    pub(crate) async fn prepare_at(
        &mut self,
        parts: SqlParts<'_>,
        place: Place,
    ) -> Result<Prepared> {
        if self.ctx.config.pgbouncer_transaction_mode {
            return Err(Error::refused(parts.text, POOLER_PREPARE_ADVICE));
        }
        let deadline = self.deadline();
        let class = self.admit(&parts, place, deadline, None).await?;
        let statement = self.statement_for(&parts, deadline).await?;
        Ok(Prepared {
            statement,
            class,
            conn_id: self.meta.id,
        })
    }
}

/// `params` paired with the server-inferred `types` of `sql`, or a refusal when their
/// numbers differ.
pub(crate) fn paired<'p>(
    sql: &str,
    types: &[Type],
    params: &[&'p (dyn ToSql + Sync)],
) -> Result<Vec<(&'p (dyn ToSql + Sync), Type)>> {
    if types.len() != params.len() {
        return Err(Error::refused(
            sql,
            format!(
                "it takes {} parameter(s) and {} were given",
                types.len(),
                params.len()
            ),
        ));
    }
    Ok(params.iter().copied().zip(types.iter().cloned()).collect())
}

/// The statement's classification, if it may run at `place` (`in_tx`: on a connection
/// inside a transaction); else the refusal, saying what to write instead.
pub(crate) fn placement(parts: &SqlParts<'_>, place: Place, in_tx: bool) -> Result<Classification> {
    placement_as(parts, place, in_tx, None)
}

/// [`placement`] for a one-shot COPY through the client in direction `copy`.
pub(crate) fn placement_copy(
    parts: &SqlParts<'_>,
    place: Place,
    copy: CopyDirection,
) -> Result<Classification> {
    placement_as(parts, place, false, Some(copy))
}

/// [`placement`] for a statement run by a method that expects a COPY through the client
/// in direction `copy` (`None`: an ordinary statement method).
pub(crate) fn placement_as(
    parts: &SqlParts<'_>,
    place: Place,
    in_tx: bool,
    copy: Option<CopyDirection>,
) -> Result<Classification> {
    let class = match parts.class() {
        Ok(c) => *c,
        Err(refusal) => return Err(Error::refused(parts.text, refusal.to_string())),
    };
    if class.copy != copy {
        return Err(Error::refused(
            parts.text,
            super::copy::copy_advice(class.copy, copy),
        ));
    }
    if copy.is_some() && class.statements != 1 {
        return Err(Error::refused(
            parts.text,
            "a COPY runs alone: send the COPY as the only statement, and the others with `execute`",
        ));
    }
    let allowed = match (place, class.kind) {
        (Place::Db, Kind::Plain) => true,
        (Place::Db, _) => false,
        (Place::Conn, Kind::TxOnly) => in_tx,
        _ => true,
    };
    match class.kind {
        _ if allowed => Ok(class),
        Kind::Session => Err(Error::refused(parts.text, SESSION_ADVICE)),
        _ => Err(Error::refused(parts.text, TX_ONLY_ADVICE)),
    }
}

const SESSION_ADVICE: &str = "it changes session state (SET, LISTEN, advisory lock, temp table, currval…), which is \
    lost when a one-shot statement's connection goes back to the pool; run it on a held connection: \
    `let mut conn = db.acquire().await?;` or in a #[with_conn] function";

const POOLER_SESSION_ADVICE: &str = "it changes session state, and behind PgBouncer in transaction mode \
    (`pgbouncer_transaction_mode`) a session is shared: the state would stay on a server connection other \
    clients get next, and be missing from this connection's next transaction; inside a transaction use \
    `tx.set_local(…)` or `tx.advisory_xact_lock(…)`, which end with it";

pub(crate) const POOLER_PREPARE_ADVICE: &str = "behind PgBouncer in transaction mode (`pgbouncer_transaction_mode`) a \
    named prepared statement lives on one server connection, and the next statement may run on another; pass \
    the SQL text instead (it runs as an unnamed statement in one round trip)";

const TX_ONLY_ADVICE: &str = "it only works inside a transaction (LOCK TABLE fails outside one, SET LOCAL does \
    nothing, and FOR UPDATE row locks or xact advisory locks are released when the statement ends); open one: \
    `let mut tx = conn.begin().await?;` or use #[transactional], and run it on the `Tx`";

#[cfg(feature = "spans")]
/// The operation of a statement for its span: its first keyword, with the second for
/// the commands whose object matters (`LOCK TABLE`, `CREATE INDEX`…); `EXECUTE` for a
/// prepared statement (its text is not kept).
fn operation_name(text: &str) -> String {
    let mut words = text
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .filter(|w| !w.is_empty());
    let Some(first) = words.next() else {
        return "EXECUTE".to_owned();
    };
    let first = first.to_ascii_uppercase();
    match first.as_str() {
        "CREATE" | "DROP" | "ALTER" | "LOCK" | "TRUNCATE" | "COMMENT" => match words.next() {
            Some(second) if second.chars().all(|c| c.is_ascii_alphabetic()) => {
                format!("{first} {}", second.to_ascii_uppercase())
            }
            _ => first,
        },
        _ => first,
    }
}

pub(crate) fn one_row(mut rows: Vec<Row>) -> Result<Row> {
    if rows.len() == 1 {
        rows.pop().ok_or(Error::RowCount { rows: 0 })
    } else {
        Err(Error::RowCount { rows: rows.len() })
    }
}

pub(crate) fn opt_row(mut rows: Vec<Row>) -> Result<Option<Row>> {
    match rows.len() {
        0 | 1 => Ok(rows.pop()),
        n => Err(Error::RowCount { rows: n }),
    }
}

/// The tracing span of a statement on a connection of the pool `ctx` belongs to (see
/// `Conn::statement_span`; the shared lane's statements use it too).
#[cfg(feature = "spans")]
pub(crate) fn statement_span(ctx: &super::Ctx, text: &str) -> tracing::Span {
    let span = tracing::debug_span!(
        target: "pool_core",
        "statement",
        otel.name = tracing::field::Empty,
        db.system.name = "postgresql",
        db.operation.name = tracing::field::Empty,
        db.namespace = tracing::field::Empty,
        server.address = tracing::field::Empty,
        server.port = tracing::field::Empty,
        db.query.text = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let pg = &ctx.config.pg;
        let operation = operation_name(text);
        span.record("otel.name", operation.as_str());
        span.record("db.operation.name", operation.as_str());
        if let Some(db) = pg.get_dbname() {
            span.record("db.namespace", db);
        }
        if let Some(tokio_postgres::config::Host::Tcp(host)) = pg.get_hosts().first() {
            span.record("server.address", host.as_str());
        }
        span.record(
            "server.port",
            pg.get_ports().first().copied().unwrap_or(5432),
        );
        if ctx.config.trace_statement_text && !text.is_empty() {
            span.record("db.query.text", text);
        }
    }
    span
}
