//! The implementations under test, behind one small trait: pool-core (and its
//! bookkeeping variants), deadpool-postgres, bb8-postgres, and the no-pool limit.

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio_postgres::NoTls;

/// What one operation of a benchmark task does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Check out and return, nothing in between.
    Checkout,
    /// Check out, `tokio::task::yield_now().await`, return.
    CheckoutYield,
    /// Check out, `SELECT 1` (one round trip), return.
    Select1,
    /// A one-shot `SELECT 1`: pool-core's `db.query` (on the shared lane unless it is
    /// off); the peers check out and query, as for `Select1`; the pipelined limit sends
    /// it on a client shared by all tasks.
    OneShot,
    /// The mixed cell: one-shots of which 1 in 100 is `SELECT pg_sleep(0.05)` (the run
    /// loop picks [`Op::SlowOneShot`] for those); latencies are of the fast ones.
    Mixed,
    /// The slow one-shot of the mixed cell: `SELECT pg_sleep(0.05)`, like a one-shot.
    SlowOneShot,
}

/// The slow statement of the mixed cell.
pub(crate) const SLOW_SQL: &str = "SELECT pg_sleep(0.05)";

/// A pool-core configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PcVariant {
    /// The defaults: nested-checkout refusal, holder tracking, 60 s statement timeout.
    Default,
    /// `nested_checkout(NestedCheckout::Allow)`: no nested-checkout check.
    NestedAllow,
    /// `__private::bookkeeping(b, false)`: no holder records (checkout site, task, time) and so no
    /// nested-checkout check either.
    NoBookkeeping,
    /// `statement_timeout(None)`: statements run without a `tokio::time::timeout`.
    NoStatementTimeout,
    /// `shared_lane(false)`: one-shots check out.
    LaneOff,
}

/// An implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Impl {
    /// pool-core, in one of its configurations.
    PoolCore(PcVariant),
    /// deadpool-postgres with `RecyclingMethod::Fast`.
    Deadpool,
    /// deadpool-postgres as above, its statements through its own statement cache
    /// (`prepare_cached`): the same protocol messages as pool-core's cached statement.
    DeadpoolPrepared,
    /// bb8-postgres with `test_on_check_out(false)`.
    Bb8Fast,
    /// bb8-postgres with its defaults (a `simple_query("")` round trip per checkout).
    Bb8Default,
    /// No pool: one raw tokio-postgres client per task, `query_typed`.
    Limit,
    /// No pool: one raw client per task, a statement prepared once (the same protocol
    /// messages as pool-core's cached statement).
    LimitPrepared,
    /// No pool: `pool` raw clients shared by all tasks (task `i` on client `i % pool`),
    /// a statement prepared once on each: the pipelined limit.
    LimitPipelined,
}

impl Impl {
    pub(crate) const POOL_CORE: Impl = Impl::PoolCore(PcVariant::Default);
    /// The peers whose best throughput a cell compares against.
    /// (`DeadpoolPrepared` runs in the `SELECT 1` cells only.)
    pub(crate) const PEERS: [Impl; 4] = [
        Impl::Deadpool,
        Impl::DeadpoolPrepared,
        Impl::Bb8Fast,
        Impl::Bb8Default,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Impl::PoolCore(PcVariant::Default) => "pool-core",
            Impl::PoolCore(PcVariant::NestedAllow) => "pool-core nested=allow",
            Impl::PoolCore(PcVariant::NoBookkeeping) => "pool-core bookkeeping off",
            Impl::PoolCore(PcVariant::NoStatementTimeout) => "pool-core statement_timeout=None",
            Impl::PoolCore(PcVariant::LaneOff) => "pool-core lane off",
            Impl::Deadpool => "deadpool",
            Impl::DeadpoolPrepared => "deadpool (prepare_cached)",
            Impl::Bb8Fast => "bb8 (no test)",
            Impl::Bb8Default => "bb8 (default)",
            Impl::Limit => "limit",
            Impl::LimitPrepared => "limit (prepared)",
            Impl::LimitPipelined => "limit (pipelined)",
        }
    }

    /// A short name for file names and CSV.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Impl::PoolCore(PcVariant::Default) => "pool-core",
            Impl::PoolCore(PcVariant::NestedAllow) => "pool-core-nested-allow",
            Impl::PoolCore(PcVariant::NoBookkeeping) => "pool-core-no-bookkeeping",
            Impl::PoolCore(PcVariant::NoStatementTimeout) => "pool-core-no-stmt-timeout",
            Impl::PoolCore(PcVariant::LaneOff) => "pool-core-lane-off",
            Impl::Deadpool => "deadpool",
            Impl::DeadpoolPrepared => "deadpool-prepared",
            Impl::Bb8Fast => "bb8-no-test",
            Impl::Bb8Default => "bb8-default",
            Impl::Limit => "limit",
            Impl::LimitPrepared => "limit-prepared",
            Impl::LimitPipelined => "limit-pipelined",
        }
    }

    /// pool-core and the variants of its bookkeeping measured against it.
    pub(crate) const BOOKKEEPING: [Impl; 4] = [
        Impl::POOL_CORE,
        Impl::PoolCore(PcVariant::NestedAllow),
        Impl::PoolCore(PcVariant::NoBookkeeping),
        Impl::PoolCore(PcVariant::NoStatementTimeout),
    ];

    /// Every implementation.
    pub(crate) const ALL: [Impl; 12] = [
        Impl::BOOKKEEPING[0],
        Impl::BOOKKEEPING[1],
        Impl::BOOKKEEPING[2],
        Impl::BOOKKEEPING[3],
        Impl::Deadpool,
        Impl::DeadpoolPrepared,
        Impl::Bb8Fast,
        Impl::Bb8Default,
        Impl::Limit,
        Impl::LimitPrepared,
        Impl::PoolCore(PcVariant::LaneOff),
        Impl::LimitPipelined,
    ];

    pub(crate) fn from_key(key: &str) -> Option<Impl> {
        Impl::ALL.into_iter().find(|i| i.key() == key)
    }
}

/// One implementation, built and ready: hands each benchmark task its handle.
pub(crate) trait Target: Send + Sync + Sized + 'static {
    /// What one task holds: a `Db`, a pool handle, or a raw client.
    type Task: Send + 'static;

    /// How many tasks actually run when `requested` are asked for (the limit runs one
    /// task per client).
    fn tasks(&self, requested: usize) -> usize {
        requested
    }

    /// How many connections to check out at once before the run, so the pool starts full.
    fn fill_count(&self) -> usize;

    /// The handle of task `i` (below what [`Target::tasks`] said).
    fn task(&self, i: usize) -> Self::Task;

    /// Checks out one connection, waits at the barrier, returns it.
    fn fill(task: &mut Self::Task, barrier: Arc<Barrier>) -> impl Future<Output = ()> + Send + '_;

    /// One operation.
    fn op(task: &mut Self::Task, op: Op) -> impl Future<Output = ()> + Send + '_;
}

fn check_one(v: i32) {
    assert_eq!(v, 1, "SELECT 1 returned {v}");
}

// ---------------------------------------------------------------------------------------
// pool-core

pub(crate) struct PoolCore {
    pub(crate) pool: pool_core::Pool,
}

impl PoolCore {
    pub(crate) fn build(url: &str, size: usize, variant: PcVariant) -> Result<PoolCore, String> {
        let mut b = pool_core::Pool::builder(url)
            .max_size(size)
            // Generous: a starved task must show up as starved, not as a timeout error.
            .acquire_timeout(Duration::from_secs(600));
        b = match variant {
            PcVariant::Default => b,
            PcVariant::NestedAllow => b.nested_checkout(pool_core::NestedCheckout::Allow),
            PcVariant::NoBookkeeping => pool_core::__private::bookkeeping(b, false),
            PcVariant::NoStatementTimeout => b.statement_timeout(None),
            PcVariant::LaneOff => b.shared_lane(false),
        };
        let pool = b.build().map_err(|e| e.to_string())?;
        Ok(PoolCore { pool })
    }
}

impl Target for PoolCore {
    type Task = pool_core::Db;

    fn fill_count(&self) -> usize {
        self.pool.max_size()
    }

    fn task(&self, _i: usize) -> pool_core::Db {
        self.pool.db()
    }

    async fn fill(db: &mut pool_core::Db, barrier: Arc<Barrier>) {
        let conn = db.acquire().await.expect("pool-core: checkout");
        barrier.wait().await;
        drop(conn);
    }

    async fn op(db: &mut pool_core::Db, op: Op) {
        if matches!(op, Op::OneShot | Op::Mixed) {
            let rows = db
                .query("SELECT 1", &[])
                .await
                .expect("pool-core: one-shot SELECT 1");
            check_one(rows[0].get(0));
            return;
        }
        if op == Op::SlowOneShot {
            db.query(SLOW_SQL, &[])
                .await
                .expect("pool-core: one-shot pg_sleep");
            return;
        }
        let mut conn = db.acquire().await.expect("pool-core: checkout");
        match op {
            Op::Checkout => {
                black_box(&mut conn);
            }
            Op::CheckoutYield => tokio::task::yield_now().await,
            Op::Select1 | Op::OneShot | Op::Mixed | Op::SlowOneShot => {
                let rows = conn
                    .query("SELECT 1", &[])
                    .await
                    .expect("pool-core: SELECT 1");
                check_one(rows[0].get(0));
            }
        }
        drop(conn);
    }
}

// ---------------------------------------------------------------------------------------
// deadpool-postgres

pub(crate) struct Deadpool {
    pub(crate) pool: deadpool_postgres::Pool,
    size: usize,
    /// Statements through deadpool's statement cache (`prepare_cached`).
    prepared: bool,
}

impl Deadpool {
    /// `prepared`: run statements through deadpool's statement cache.
    pub(crate) fn build(
        config: tokio_postgres::Config,
        size: usize,
        prepared: bool,
    ) -> Result<Deadpool, String> {
        let manager = deadpool_postgres::Manager::from_config(
            config,
            NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(size)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Deadpool {
            pool,
            size,
            prepared,
        })
    }
}

impl Target for Deadpool {
    /// The pool, and whether statements go through its statement cache.
    type Task = (deadpool_postgres::Pool, bool);

    fn fill_count(&self) -> usize {
        self.size
    }

    fn task(&self, _i: usize) -> (deadpool_postgres::Pool, bool) {
        (self.pool.clone(), self.prepared)
    }

    async fn fill((pool, _): &mut (deadpool_postgres::Pool, bool), barrier: Arc<Barrier>) {
        let conn = pool.get().await.expect("deadpool: checkout");
        barrier.wait().await;
        drop(conn);
    }

    async fn op((pool, prepared): &mut (deadpool_postgres::Pool, bool), op: Op) {
        let mut conn = pool.get().await.expect("deadpool: checkout");
        match op {
            Op::Checkout => {
                black_box(&mut conn);
            }
            Op::CheckoutYield => tokio::task::yield_now().await,
            Op::SlowOneShot => {
                conn.query_typed(SLOW_SQL, &[])
                    .await
                    .expect("deadpool: pg_sleep");
            }
            Op::Select1 | Op::OneShot | Op::Mixed if *prepared => {
                let st = conn
                    .prepare_cached("SELECT 1")
                    .await
                    .expect("deadpool: prepare_cached");
                let rows = conn.query(&st, &[]).await.expect("deadpool: SELECT 1");
                check_one(rows[0].get(0));
            }
            Op::Select1 | Op::OneShot | Op::Mixed => {
                let rows = conn
                    .query_typed("SELECT 1", &[])
                    .await
                    .expect("deadpool: SELECT 1");
                check_one(rows[0].get(0));
            }
        }
        drop(conn);
    }
}

// ---------------------------------------------------------------------------------------
// bb8-postgres

pub(crate) type Bb8Pool = bb8::Pool<bb8_postgres::PostgresConnectionManager<NoTls>>;

pub(crate) struct Bb8 {
    pub(crate) pool: Bb8Pool,
    size: usize,
}

impl Bb8 {
    pub(crate) async fn build(
        config: tokio_postgres::Config,
        size: usize,
        test_on_check_out: bool,
    ) -> Result<Bb8, String> {
        let manager = bb8_postgres::PostgresConnectionManager::new(config, NoTls);
        let max = u32::try_from(size).map_err(|e| e.to_string())?;
        let pool = bb8::Pool::builder()
            .max_size(max)
            .test_on_check_out(test_on_check_out)
            .connection_timeout(Duration::from_secs(600))
            .build(manager)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Bb8 { pool, size })
    }
}

impl Target for Bb8 {
    type Task = Bb8Pool;

    fn fill_count(&self) -> usize {
        self.size
    }

    fn task(&self, _i: usize) -> Bb8Pool {
        self.pool.clone()
    }

    async fn fill(pool: &mut Bb8Pool, barrier: Arc<Barrier>) {
        let conn = pool.get().await.expect("bb8: checkout");
        barrier.wait().await;
        drop(conn);
    }

    async fn op(pool: &mut Bb8Pool, op: Op) {
        let mut conn = pool.get().await.expect("bb8: checkout");
        match op {
            Op::Checkout => {
                black_box(&mut conn);
            }
            Op::CheckoutYield => tokio::task::yield_now().await,
            Op::SlowOneShot => {
                conn.query_typed(SLOW_SQL, &[])
                    .await
                    .expect("bb8: pg_sleep");
            }
            Op::Select1 | Op::OneShot | Op::Mixed => {
                let rows = conn
                    .query_typed("SELECT 1", &[])
                    .await
                    .expect("bb8: SELECT 1");
                check_one(rows[0].get(0));
            }
        }
        drop(conn);
    }
}

// ---------------------------------------------------------------------------------------
// The limit: raw clients, one task each, no checkout.

pub(crate) struct Limit {
    tasks: Vec<LimitTask>,
    /// All tasks share the clients (the pipelined limit), instead of one task each.
    shared: bool,
}

#[derive(Clone)]
pub(crate) struct LimitTask {
    client: Arc<tokio_postgres::Client>,
    statement: Option<tokio_postgres::Statement>,
}

impl Limit {
    /// Opens `n` clients on the current runtime; `prepared`: prepare `SELECT 1` on each.
    pub(crate) async fn build(
        config: tokio_postgres::Config,
        n: usize,
        prepared: bool,
    ) -> Result<Limit, String> {
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..n {
            let config = config.clone();
            opening.spawn(async move {
                let (client, connection) = config.connect(NoTls).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                let statement = if prepared {
                    Some(client.prepare("SELECT 1").await?)
                } else {
                    None
                };
                Ok::<_, tokio_postgres::Error>((client, statement))
            });
        }
        let mut tasks = Vec::with_capacity(n);
        while let Some(res) = opening.join_next().await {
            let (client, statement) = res.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            tasks.push(LimitTask {
                client: Arc::new(client),
                statement,
            });
        }
        Ok(Limit {
            tasks,
            shared: false,
        })
    }

    /// The same clients, shared by every task (task `i` on client `i % n`).
    pub(crate) fn shared(mut self) -> Limit {
        self.shared = true;
        self
    }
}

impl Target for Limit {
    type Task = LimitTask;

    fn tasks(&self, requested: usize) -> usize {
        if self.shared {
            requested
        } else {
            requested.min(self.tasks.len())
        }
    }

    fn fill_count(&self) -> usize {
        0
    }

    fn task(&self, i: usize) -> LimitTask {
        self.tasks[i % self.tasks.len()].clone()
    }

    async fn fill(_task: &mut LimitTask, _barrier: Arc<Barrier>) {}

    async fn op(task: &mut LimitTask, op: Op) {
        match op {
            Op::Checkout => {
                black_box(&task.client);
            }
            Op::CheckoutYield => {
                black_box(&task.client);
                tokio::task::yield_now().await;
            }
            Op::SlowOneShot => {
                task.client
                    .query_typed(SLOW_SQL, &[])
                    .await
                    .expect("limit: pg_sleep");
            }
            Op::Select1 | Op::OneShot | Op::Mixed => {
                let rows = match &task.statement {
                    Some(st) => task.client.query(st, &[]).await,
                    None => task.client.query_typed("SELECT 1", &[]).await,
                }
                .expect("limit: SELECT 1");
                check_one(rows[0].get(0));
            }
        }
    }
}
