//! The TLS connector, type-erased: opens connections and sends cancel requests through
//! whatever `MakeTlsConnect` the pool was built with, so that `Pool` needs no type
//! parameter. Configured by `Builder::tls`; used here, by the connection, because
//! opening and cancelling are the connection's work.

use std::future::Future;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, CancelToken, Client, Socket};

type ConnectFuture = BoxFuture<
    'static,
    std::result::Result<
        (
            Client,
            BoxStream<'static, std::result::Result<AsyncMessage, tokio_postgres::Error>>,
        ),
        tokio_postgres::Error,
    >,
>;

/// Opens connections and sends cancel requests, with the TLS connector type erased so
/// that `Pool` needs no type parameter. Cloning shares the connector (a pool's replicas
/// use its primary's).
#[derive(Clone)]
pub(crate) struct Connector {
    connect: std::sync::Arc<dyn Fn(tokio_postgres::Config) -> ConnectFuture + Send + Sync>,
    cancel: std::sync::Arc<
        dyn Fn(CancelToken) -> BoxFuture<'static, std::result::Result<(), tokio_postgres::Error>>
            + Send
            + Sync,
    >,
}

impl Connector {
    pub(crate) fn new<T>(tls: T) -> Connector
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let for_cancel = tls.clone();
        Connector {
            connect: std::sync::Arc::new(move |config: tokio_postgres::Config| {
                let tls = tls.clone();
                Box::pin(async move {
                    let (client, mut connection) = config.connect(tls).await?;
                    let messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    Ok((client, Box::pin(messages) as BoxStream<'static, _>))
                })
            }),
            cancel: std::sync::Arc::new(move |token: CancelToken| {
                let tls = for_cancel.clone();
                Box::pin(async move { token.cancel_query(tls).await })
            }),
        }
    }

    pub(crate) fn connect(&self, config: tokio_postgres::Config) -> ConnectFuture {
        (self.connect)(config)
    }

    pub(crate) fn cancel(
        &self,
        token: CancelToken,
    ) -> impl Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send + 'static {
        (self.cancel)(token)
    }
}
