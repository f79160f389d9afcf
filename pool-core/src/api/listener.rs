//! `Listener`: LISTEN/NOTIFY on a connection of its own that survives its backend: after
//! the connection is lost it reconnects with backoff, re-issues every `LISTEN`, and says
//! so, since notifications sent meanwhile are lost.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio_postgres::Notification;

use crate::conn::Conn;
use crate::engine::Shared;
use crate::error::{Error, Result};
use crate::random::jitter;

use super::pool::Pool;

/// What a [`Listener`] yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum ListenerEvent {
    /// A notification on one of the channels listened to.
    Notification(Notification),
    /// The connection was lost and is back, listening again on every channel: any
    /// notification sent meanwhile was missed, so resynchronise (re-read what the
    /// notifications stand for).
    Reconnected,
}

/// A connection of its own for `LISTEN`, from [`Pool::listener`]. It counts against
/// `max_size` for as long as it lives (an idle connection is closed to make room if the
/// pool is full) and is never handed to anyone else.
///
/// Receive with [`next`](Listener::next), or turn it into a `Stream` with
/// [`into_stream`](Listener::into_stream). When its backend is terminated or the server
/// restarts, it reconnects (capped exponential backoff with jitter), re-issues every
/// `LISTEN`, and yields [`ListenerEvent::Reconnected`].
pub struct Listener {
    shared: Arc<Shared>,
    conn: Option<Box<Conn>>,
    channels: BTreeSet<String>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A [`Listener`]: a dedicated connection for LISTEN/NOTIFY that reconnects by itself.
    /// Counted against `max_size` while it lives.
    pub async fn listener(&self) -> Result<Listener> {
        self.shared.reserve_dedicated()?;
        let mut listener = Listener {
            shared: Arc::clone(&self.shared),
            conn: None,
            channels: BTreeSet::new(),
        };
        listener.conn = Some(self.shared.open_dedicated().await?);
        Ok(listener)
    }
}

impl Listener {
    /// Starts listening on `channel` (named exactly as `pg_notify` names it), now and
    /// after every reconnect.
    pub async fn listen(&mut self, channel: &str) -> Result<()> {
        self.conn_mut().await?.listen(channel).await?;
        self.channels.insert(channel.to_owned());
        Ok(())
    }

    /// Stops listening on `channel`.
    pub async fn unlisten(&mut self, channel: &str) -> Result<()> {
        self.conn_mut().await?.unlisten(channel).await?;
        self.channels.remove(channel);
        Ok(())
    }

    /// The channels listened to.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.channels.iter().map(String::as_str)
    }

    /// The server process of the current connection, if connected.
    pub fn backend_pid(&self) -> Option<i32> {
        self.conn.as_ref().map(|c| c.backend_pid())
    }

    /// The next notification, or [`ListenerEvent::Reconnected`] after the connection was
    /// lost and restored. Fails only when the pool is closed: then, also while waiting,
    /// with [`Error::Closed`], and the listener's connection is closed (`Pool::close`
    /// does not wait for it).
    ///
    /// Cancellation: safe; a notification is never lost by dropping this future (a
    /// reconnect under way starts again at the next call).
    pub async fn next(&mut self) -> Result<ListenerEvent> {
        if let Some(conn) = self.conn.as_mut() {
            if let Some(n) = conn.try_notification() {
                return Ok(ListenerEvent::Notification(n));
            }
            let got = tokio::select! {
                got = conn.notification() => got,
                () = self.shared.closing() => {
                    self.conn = None;
                    return Err(Error::Closed);
                }
            };
            match got {
                Ok(n) => return Ok(ListenerEvent::Notification(n)),
                Err(e) => {
                    tracing::debug!(target: "pool_core", error = %e, "listener connection lost; reconnecting");
                    self.conn = None;
                }
            }
        }
        self.reconnect().await?;
        Ok(ListenerEvent::Reconnected)
    }

    /// The events as a `Stream` (ending when the pool is closed).
    pub fn into_stream(self) -> impl Stream<Item = Result<ListenerEvent>> + Send {
        futures::stream::unfold(Some(self), |state| async move {
            let mut listener = state?;
            match listener.next().await {
                Ok(event) => Some((Ok(event), Some(listener))),
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    /// The connection, reconnected first if it was lost.
    async fn conn_mut(&mut self) -> Result<&mut Conn> {
        if self.conn.as_ref().is_none_or(|c| c.is_broken()) {
            self.conn = None;
            self.reconnect().await?;
        }
        self.conn
            .as_deref_mut()
            .ok_or_else(|| Error::broken("while reconnecting the listener", None))
    }

    /// Opens a new connection and listens again on every channel, retrying with capped
    /// exponential backoff until it works or the pool is closed.
    async fn reconnect(&mut self) -> Result<()> {
        let mut pause = Duration::from_millis(25);
        loop {
            if self.shared.is_closed() {
                return Err(Error::Closed);
            }
            match self.try_connect().await {
                Ok(conn) => {
                    self.conn = Some(conn);
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!(target: "pool_core", error = %e, "listener reconnect failed; retrying");
                    tokio::time::sleep(pause - pause / 4 + jitter(pause / 2)).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn try_connect(&self) -> Result<Box<Conn>> {
        let mut conn = self.shared.open_dedicated().await?;
        for channel in &self.channels {
            conn.listen(channel).await?;
        }
        Ok(conn)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        drop(self.conn.take());
        self.shared.release_dedicated();
    }
}
