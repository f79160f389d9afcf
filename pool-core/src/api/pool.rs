//! `Pool`: the shared handle, and the builder's last step that makes one.

use std::sync::Arc;

use crate::config::{Builder, ConfigSource};
use crate::conn::WriteLog;
use crate::engine::Shared;
use crate::error::{Error, Result};
use crate::status::{Holder, Status};

use super::db::Db;
use super::lane::Lane;
use super::read::ReadDb;
use super::replicas::{ReplicaSet, ReplicaStatus};

/// A pool of PostgreSQL connections. Cheap to clone; all clones share one pool.
///
/// The pool runs no SQL and hands out no connection itself: its one door is
/// [`Pool::db`], which gives each task the capability to check out one connection at a
/// time.
///
/// ```no_run
/// # async fn f() -> Result<(), pool_core::Error> {
/// use std::time::Duration;
/// let pool = pool_core::Pool::builder("postgres://postgres@127.0.0.1/app")
///     .max_size(4)
///     .acquire_timeout(Duration::from_secs(2))
///     .build()?;
/// let mut db = pool.db();
/// let mut conn = db.acquire().await?;
/// let one: i32 = conn.query_one("SELECT 1", &[]).await?.get(0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pool {
    pub(crate) shared: Arc<Shared>,
    /// The read side, when the pool has replicas.
    pub(crate) replicas: Option<Arc<ReplicaSet>>,
    /// The shared lane for one-shots, when it is on.
    pub(crate) lane: Option<Arc<Lane>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("status", &self.status())
            .finish()
    }
}

impl Pool {
    /// Starts configuring a pool from a URL (`postgres://user:pass@host:port/db`), a
    /// key-value string, or a `tokio_postgres::Config`. See [`Builder`] for the options
    /// and their defaults.
    pub fn builder(config: impl Into<ConfigSource>) -> Builder {
        Builder::new(config.into())
    }

    /// Builds a pool with default settings and opens one connection to prove the
    /// settings work.
    ///
    /// If the future is dropped, the pool is dropped with it.
    pub async fn connect(config: impl Into<ConfigSource>) -> Result<Pool> {
        Pool::builder(config).connect().await
    }

    /// The per-task capability to use the pool: check out one connection at a time
    /// (`db.acquire()`), or run one-shot statements. Make one per task or request; it is
    /// not `Clone`, which is what lets the compiler refuse a second checkout while one is
    /// held.
    pub fn db(&self) -> Db {
        Db::new(self.clone())
    }

    /// The per-task capability to read from the replicas
    /// ([`Builder::replica`](crate::Builder::replica)): checkouts and one-shots that take
    /// only reads, sent to a replica that is up, within `max_replica_lag` and past this
    /// task's own last write, else to the primary on a read-only session. Without
    /// replicas every read goes to the primary that way. Make one per task or request,
    /// like [`db`](Pool::db).
    pub fn read_db(&self) -> ReadDb {
        let replicas = match &self.replicas {
            Some(set) => {
                set.ensure_started(&self.shared);
                (0..set.len()).map(|i| set.member(i).db()).collect()
            }
            None => Vec::new(),
        };
        ReadDb {
            primary: Pool::single(Arc::clone(&self.shared)).db(),
            replicas,
            set: self.replicas.clone(),
        }
    }

    /// What the pool knows of each replica: usable or not and why, lag, replay
    /// position. Empty without replicas.
    pub fn replica_status(&self) -> Vec<ReplicaStatus> {
        self.replicas
            .as_ref()
            .map_or_else(Vec::new, |set| set.status())
    }

    /// A pool over one server only (a replica's, or the primary without its read side).
    pub(crate) fn single(shared: Arc<Shared>) -> Pool {
        Pool {
            shared,
            replicas: None,
            lane: None,
        }
    }

    /// How many connections exist and what they are doing, with cumulative counters.
    /// `Display` prints it as a small table.
    pub fn status(&self) -> Status {
        let mut status = self.shared.status();
        status.lane = self.lane.as_ref().map(|lane| lane.status());
        status
    }

    /// Who holds connections right now — checkout site, task, for how long —
    /// longest-held first.
    pub fn holders(&self) -> Vec<Holder> {
        self.shared.holders()
    }

    /// The `max_size` in force (as built, or as last [`resize`](Pool::resize)d).
    pub fn max_size(&self) -> usize {
        self.shared.status().max_size
    }

    /// Whether [`Pool::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Changes `max_size` at run time. Growing serves waiting tasks at once. Shrinking
    /// closes idle connections beyond the new size now and retires connections in use
    /// as they come back (counted as `discarded_retired`), so the pool holds no more
    /// than `max_size` once they are back. `resize(0)`, or a size below `min_idle`, is
    /// [`Error::Config`](crate::Error::Config).
    pub fn resize(&self, max_size: usize) -> Result<()> {
        self.shared.resize(max_size)
    }

    /// Replaces every connection — for credential rotation, a failover, or after a
    /// migration that changed what sessions cache: idle connections are closed now and
    /// new ones opened in their place, connections in use are closed when they come
    /// back. Acquires go on being served meanwhile. Counted as `discarded_retired`.
    pub fn drain(&self) -> Result<()> {
        self.shared.drain()
    }

    /// Closes the pool: new acquires fail with [`Error::Closed`](crate::Error::Closed),
    /// waiters are woken with it, idle connections are closed, and connections in use
    /// are closed as they come back. Waits for them up to `close_timeout`, then returns
    /// regardless (logging who still holds connections). Listeners are not waited for:
    /// one waiting in [`Listener::next`](crate::Listener::next) gets `Error::Closed` and
    /// closes its connection; another closes it when dropped.
    ///
    /// If the future is dropped, the pool is still closed; only the waiting stops.
    pub async fn close(&self) {
        if let Some(lane) = &self.lane {
            lane.close();
        }
        match &self.replicas {
            Some(set) => {
                futures::future::join(self.shared.close(), set.close()).await;
            }
            None => self.shared.close().await,
        }
    }
}

impl Builder {
    /// Validates the settings and builds the pool. Lazy: no connection is opened until
    /// the first acquire (or by the background task, for `min_idle`).
    pub fn build(self) -> Result<Pool> {
        let pool = self.assemble()?;
        pool.shared.ensure_maintenance();
        if let Some(set) = &pool.replicas {
            set.ensure_started(&pool.shared);
        }
        Ok(pool)
    }

    /// Builds the pool and proves it can connect by opening one connection, which stays
    /// in the pool — and with replicas, one to each replica, asking each whether it is a
    /// standby. Fails with the connect error (bad password, unreachable server…), or
    /// [`Error::Config`] naming a replica that is not a standby.
    ///
    /// If the future is dropped, the pool is dropped with it.
    pub async fn connect(self) -> Result<Pool> {
        let pool = self.assemble()?;
        // The proof first, then `min_idle` (which could otherwise take every slot).
        pool.shared.warm_up().await?;
        if let Some(set) = &pool.replicas {
            for i in 0..set.len() {
                set.member(i).shared.warm_up().await?;
            }
            set.sample(&pool.shared).await;
            if let Some(bad) = set.status().into_iter().find(|r| r.problem.is_some()) {
                return Err(Error::config(
                    "replica",
                    format!("{}: {}", bad.name, bad.problem.unwrap_or_default()),
                ));
            }
        }
        pool.shared.ensure_maintenance();
        if let Some(set) = &pool.replicas {
            set.ensure_started(&pool.shared);
        }
        Ok(pool)
    }

    /// The pool, validated, with its read side; nothing started.
    fn assemble(mut self) -> Result<Pool> {
        let replicas = self.take_replicas();
        let lane = self.take_lane();
        let (pool, mut conn) = self.validate()?;
        let plan = replicas.plan(&pool, &conn)?;
        let lane = lane
            .plan(&pool, conn.pgbouncer_transaction_mode)?
            .map(|plan| Arc::new(Lane::new(plan)));
        let set = plan.map(|plan| {
            let writes = Arc::new(WriteLog::default());
            conn.writes = Some(Arc::clone(&writes));
            Arc::new(ReplicaSet::new(plan, writes))
        });
        Ok(Pool {
            shared: Shared::new(pool, conn),
            replicas: set,
            lane,
        })
    }
}
