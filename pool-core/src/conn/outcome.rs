//! How a statement with parameters goes to the driver, named or unnamed, and what each
//! kind of call returns (rows, a count, a stream).

use std::future::Future;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, Statement};

/// How a statement with parameters is sent (see `Conn::call_for`).
pub(super) enum Call<'p> {
    /// A named statement, prepared once per connection and cached.
    Named(Statement),
    /// Unnamed, with the parameters paired with their server-inferred types.
    Unnamed(Vec<(&'p (dyn ToSql + Sync), Type)>),
}

/// What a statement with parameters returns, and the driver's call for it, named or
/// unnamed.
pub(super) trait Outcome {
    type Out: Send;
    fn named<'a>(
        client: &'a Client,
        statement: &'a Statement,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = std::result::Result<Self::Out, tokio_postgres::Error>> + Send + 'a;
    fn unnamed<'a>(
        client: &'a Client,
        sql: &'a str,
        typed: &'a [(&'a (dyn ToSql + Sync), Type)],
    ) -> impl Future<Output = std::result::Result<Self::Out, tokio_postgres::Error>> + Send + 'a;
}

/// The rows (`query`).
pub(super) enum Rows {}

impl Outcome for Rows {
    type Out = Vec<Row>;
    fn named<'a>(
        client: &'a Client,
        statement: &'a Statement,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = std::result::Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a
    {
        client.query(statement, params)
    }
    fn unnamed<'a>(
        client: &'a Client,
        sql: &'a str,
        typed: &'a [(&'a (dyn ToSql + Sync), Type)],
    ) -> impl Future<Output = std::result::Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a
    {
        client.query_typed(sql, typed)
    }
}

/// The number of rows affected (`execute`).
pub(super) enum Count {}

impl Outcome for Count {
    type Out = u64;
    fn named<'a>(
        client: &'a Client,
        statement: &'a Statement,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = std::result::Result<u64, tokio_postgres::Error>> + Send + 'a {
        client.execute(statement, params)
    }
    fn unnamed<'a>(
        client: &'a Client,
        sql: &'a str,
        typed: &'a [(&'a (dyn ToSql + Sync), Type)],
    ) -> impl Future<Output = std::result::Result<u64, tokio_postgres::Error>> + Send + 'a {
        client.execute_typed(sql, typed)
    }
}

/// The rows as they come (`query_stream`): the stream outlives the call.
pub(super) enum Streamed {}

impl Outcome for Streamed {
    type Out = tokio_postgres::RowStream;
    fn named<'a>(
        client: &'a Client,
        statement: &'a Statement,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = std::result::Result<Self::Out, tokio_postgres::Error>> + Send + 'a
    {
        client.query_raw(statement, params.iter().copied())
    }
    fn unnamed<'a>(
        client: &'a Client,
        sql: &'a str,
        typed: &'a [(&'a (dyn ToSql + Sync), Type)],
    ) -> impl Future<Output = std::result::Result<Self::Out, tokio_postgres::Error>> + Send + 'a
    {
        client.query_typed_raw(sql, typed.iter().map(|(p, t)| (*p, t.clone())))
    }
}
