//! The tour: the five production incidents in `shared/seeds/`, replayed against a real
//! PostgreSQL. For each, what went wrong in production, what the compiler refuses, the
//! runtime backstop caught live where the types cannot see, and the typed way working.
//!
//! `cargo run -p examples --example tour`. Uses `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); with no server there, it starts a
//! private throwaway cluster from the local PostgreSQL binaries, like the tests do.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pool_core::{Conn, Db, Error, LockMode, Pool, Tx, transactional, with_conn};

/// Terminal styling, only when stdout is a terminal and `NO_COLOR` is unset.
struct Style {
    on: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn title(&self, t: &str) -> String {
        self.paint("1", t)
    }
    fn good(&self, t: &str) -> String {
        self.paint("32", t)
    }
    fn caught(&self, t: &str) -> String {
        self.paint("33", t)
    }
    fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
}

fn style() -> &'static Style {
    static STYLE: OnceLock<Style> = OnceLock::new();
    STYLE.get_or_init(|| Style {
        on: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    })
}

fn seed(n: usize, title: &str, story: &str) {
    let s = style();
    println!("\n{} {}", s.title(&format!("{}/5", n + 1)), s.title(title));
    println!("  {}", s.dim(story));
}

fn types(text: &str) {
    println!("  compile time  {text}");
}

fn live(text: &str) {
    println!("  at run time   {}", style().caught(text));
}

fn typed(text: &str) {
    println!("  the typed way {}", style().good(text));
}

/// Wraps a message to the terminal's width-ish, indented under the labels.
fn indent(message: &str) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in message.split(' ') {
        if line + word.len() > 84 {
            out.push_str("\n                ");
            line = 0;
        }
        out.push_str(word);
        out.push(' ');
        line += word.len() + 1;
    }
    out.trim_end().to_owned()
}

// ---- seed 000 ------------------------------------------------------------------------

/// The escape hatch that made seed 000 possible: a pool reachable from anywhere.
static GLOBAL: OnceLock<Pool> = OnceLock::new();

async fn person_through_global(id: i64) -> Result<String, Error> {
    let mut db = GLOBAL.get().ok_or(Error::Closed)?.db();
    let mut conn = db.acquire().await?; // a second checkout while the caller holds one
    Ok(conn
        .query_one("SELECT name FROM person WHERE id = $1", &[&id])
        .await?
        .get(0))
}

async fn persons_in_group_the_old_way(group: i32) -> Result<Vec<String>, Error> {
    let mut db = GLOBAL.get().ok_or(Error::Closed)?.db();
    let mut conn = db.acquire().await?;
    let rows = conn
        .query("SELECT id FROM person WHERE group_id = $1", &[&group])
        .await?;
    let mut out = Vec::new();
    for row in rows {
        out.push(person_through_global(row.get(0)).await?);
    }
    Ok(out)
}

#[with_conn]
async fn person(conn: &mut Conn, id: i64) -> Result<String, Error> {
    Ok(conn
        .query_one("SELECT name FROM person WHERE id = $1", &[&id])
        .await?
        .get(0))
}

#[with_conn]
async fn persons_in_group(conn: &mut Conn, group: i32) -> Result<Vec<String>, Error> {
    let rows = conn
        .query("SELECT id FROM person WHERE group_id = $1", &[&group])
        .await?;
    let mut out = Vec::new();
    for row in rows {
        out.push(person(conn, row.get(0)).await?); // the held connection, passed down
    }
    Ok(out)
}

async fn seed_000(pool: &Pool) -> Result<(), Box<dyn std::error::Error>> {
    seed(
        0,
        "seed 000 — the nested checkout that froze a server",
        "a handler held a pooled connection while a helper checked out a second one; with \
         MaxConns = 4 and 4 concurrent requests, each held one and waited for another, forever",
    );
    types(
        "`person(db, id)` while `conn` is held: error[E0499] cannot borrow `*db` as mutable more than once",
    );
    let _ = GLOBAL.set(pool.clone());
    let started = Instant::now();
    let requests: Vec<_> = (0..16)
        .map(|g| tokio::spawn(persons_in_group_the_old_way(g % 4)))
        .collect();
    let mut refused = 0;
    let mut example = None;
    for r in requests {
        if let Err(e @ Error::NestedCheckout { .. }) = r.await? {
            refused += 1;
            example.get_or_insert(e.to_string());
        }
    }
    live(&format!(
        "16 requests through a global pool of 4: {refused} refused at once in {:.0?}, none hung",
        started.elapsed()
    ));
    if let Some(e) = example {
        println!("                {}", style().dim(&indent(&e)));
    }
    let started = Instant::now();
    let requests: Vec<_> = (0..16)
        .map(|g| {
            let pool = pool.clone();
            tokio::spawn(async move { persons_in_group(&mut pool.db(), g % 4).await })
        })
        .collect();
    let mut people = 0;
    for r in requests {
        people += r.await??.len();
    }
    typed(&format!(
        "#[with_conn] helpers share the caller's connection: 16 requests, {people} people, {:.0?}",
        started.elapsed()
    ));
    Ok(())
}

// ---- seed 001 ------------------------------------------------------------------------

async fn seed_001(server: &tokio_postgres::Config) -> Result<(), Box<dyn std::error::Error>> {
    seed(
        1,
        "seed 001 — queries with no deadline",
        "a worker ran every query with no deadline; connections stuck in ClientRead piled up until \
         the database refused new ones",
    );
    let pool = Pool::builder(server.clone())
        .max_size(1)
        .statement_timeout(Duration::from_millis(300))
        .build()?;
    let mut db = pool.db();
    let mut conn = db.acquire().await?;
    let pid = conn.backend_pid();
    let started = Instant::now();
    let err = conn
        .query("SELECT pg_sleep(30)", &[])
        .await
        .err()
        .ok_or("pg_sleep(30) returned")?;
    live(&format!(
        "after {:.0?}: {}",
        started.elapsed(),
        indent(&err.to_string())
    ));
    let mut admin = pool.db();
    drop(conn);
    let state: String = {
        // Ask the server itself, from another connection of another pool.
        let check = Pool::builder(server.clone()).max_size(1).build()?;
        let mut c = check.db();
        let mut state = String::new();
        for _ in 0..50 {
            state = c
                .query_one(
                    "SELECT coalesce(state, 'gone') FROM pg_stat_activity WHERE pid = $1",
                    &[&pid],
                )
                .await?
                .get(0);
            if state == "idle" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        state
    };
    live(&format!(
        "pg_stat_activity for backend {pid}: state = {state} — the sleep was cancelled on the server"
    ));

    // A dropped future: a request handler that lost a select!.
    let pool = Pool::builder(server.clone())
        .max_size(1)
        .acquire_timeout(Duration::from_secs(2))
        .build()?;
    let mut db = pool.db();
    {
        let mut conn = db.acquire().await?;
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            conn.query("SELECT pg_sleep(30)", &[]),
        )
        .await;
    }
    let started = Instant::now();
    let mut conn = db.acquire().await?;
    conn.query("SELECT 1", &[]).await?;
    live(&format!(
        "a pg_sleep(30) whose future was dropped was cancelled; the next borrower (pool of 1) got the connection in {:.0?}",
        started.elapsed()
    ));
    let _ = admin.query("SELECT 1", &[]).await?;
    typed(
        "every acquire, connect and statement has a deadline: acquire_timeout, connect_timeout, statement_timeout",
    );
    Ok(())
}

// ---- seed 002 ------------------------------------------------------------------------

async fn seed_002(pool: &Pool) -> Result<(), Box<dyn std::error::Error>> {
    seed(
        2,
        "seed 002 — connections kept across a loop, and used after close",
        "`defer rows.Close()` in a loop held every iteration's connection (\"Too Many Connections\"); \
         a goroutine used a connection after `defer db.Close()` had closed it",
    );
    types(
        "pushing each iteration's connection into a Vec: error[E0499] … in the previous iteration of the loop",
    );
    types(
        "a held connection moved into tokio::spawn: error[E0521] borrowed data escapes outside of function",
    );
    types("a connection used after PooledConn::release: error[E0382] borrow of moved value");
    let mut db = pool.db();
    let before = pool.status().counters.acquires;
    let mut conn = db.acquire().await?;
    let mut total: i64 = 0;
    for group in 0..4 {
        total += conn
            .query_one("SELECT count(*) FROM person WHERE group_id = $1", &[&group])
            .await?
            .get::<_, i64>(0);
    }
    drop(conn);
    typed(&format!(
        "one connection for the whole loop: {total} people counted with {} checkout",
        pool.status().counters.acquires - before
    ));
    Ok(())
}

// ---- seed 003 ------------------------------------------------------------------------

async fn one_request(pool: Pool, i: usize) -> Result<(), Error> {
    let mut db = pool.db();
    let mut conn = db.acquire().await?;
    match i % 4 {
        0 => {
            conn.query("SELEC broken", &[]).await?; // an error, returned with `?`
        }
        1 => panic!("a handler panicked while holding a connection"),
        2 => {
            let mut tx = conn.begin().await?;
            tx.execute("UPDATE person SET name = name", &[]).await?;
            return Err(Error::RowCount { rows: 0 }); // early return inside a transaction
        }
        _ => {
            let _ = tokio::time::timeout(
                Duration::from_millis(1),
                conn.query("SELECT pg_sleep(0.01)", &[]),
            )
            .await;
        }
    }
    Ok(())
}

async fn seed_003(server: &tokio_postgres::Config) -> Result<(), Box<dyn std::error::Error>> {
    seed(
        3,
        "seed 003 — connections never returned on error paths",
        "error paths skipped returning connections; 30–45 minutes after each deploy the pool was \
         full and every API returned \"connection pool is full\"",
    );
    let pool = Pool::builder(server.clone()).max_size(4).build()?;
    // Panics are contained per request, as a web framework would.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut tasks = Vec::new();
    for i in 0..400 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move { one_request(pool, i).await }));
    }
    let (mut errors, mut panics) = (0, 0);
    for t in tasks {
        match t.await {
            Ok(Err(_)) => errors += 1,
            Err(e) if e.is_panic() => panics += 1,
            _ => {}
        }
    }
    std::panic::set_hook(hook);
    for _ in 0..100 {
        if pool.status().in_use == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = pool.status();
    live(&format!(
        "400 requests: {errors} errors, {panics} panics, the rest cancelled mid-query → in use {}, holders {}, \
         {} transactions rolled back, {} statements cancelled on the server",
        s.in_use,
        pool.holders().len(),
        s.counters.rollbacks_on_return,
        s.counters.cancelled_statements
    ));

    // When connections really are all taken, the timeout says by whom.
    let small = Pool::builder(server.clone())
        .max_size(2)
        .acquire_timeout(Duration::from_millis(400))
        .build()?;
    let mut b = small.db();
    let held_a = tokio::spawn({
        let small = small.clone();
        async move {
            let mut db = small.db();
            let _conn = db.acquire().await;
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    });
    let _held_b = b.acquire().await?;
    while small.status().in_use < 2 {
        tokio::task::yield_now().await;
    }
    let waiter = tokio::spawn({
        let small = small.clone();
        async move { small.db().acquire().await.map(drop) }
    });
    if let Err(e) = waiter.await? {
        live(&indent(&e.to_string()));
    }
    held_a.await?;
    typed(
        "connections come back on every path — drop, error, panic, cancellation — and come back clean",
    );
    Ok(())
}

// ---- seed 004 ------------------------------------------------------------------------

#[transactional]
async fn insert_locked(tx: &mut Tx, a: i32, b: i32) -> Result<(), Error> {
    tx.lock_table("table1", LockMode::Exclusive).await?;
    tx.execute("INSERT INTO table1 VALUES ($1, $2)", &[&a, &b])
        .await?;
    Ok(())
}

async fn seed_004(pool: &Pool) -> Result<(), Box<dyn std::error::Error>> {
    seed(
        4,
        "seed 004 — LOCK TABLE on one connection, the INSERT on another",
        "two statements that had to share a connection went to whichever ones were free: the lock \
         protected nothing",
    );
    types(
        "db.execute(sql!(\"LOCK TABLE …\")): error[E0277] `Stmt<TransactionOnly>` cannot run as a one-shot statement on `Db`",
    );
    let mut db: Db = pool.db();
    let err = db
        .execute("LOCK TABLE table1 IN EXCLUSIVE MODE", &[])
        .await
        .err()
        .ok_or("LOCK TABLE ran")?;
    live(&format!(
        "the same statement as a string, refused before anything was sent: {}",
        indent(&err.to_string())
    ));
    {
        let mut conn = db.acquire().await?;
        conn.set("work_mem", "64MB").await?;
    }
    let mut conn = db.acquire().await?;
    let work_mem: String = conn.query_one("SHOW work_mem", &[]).await?.get(0);
    live(&format!(
        "a borrower's SET work_mem = 64MB did not leak: the next borrower sees {work_mem}"
    ));
    drop(conn);
    insert_locked(&mut db, 1, 2).await?;
    typed("#[transactional] runs LOCK TABLE and the INSERT in one transaction on one connection");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let server = tests::harness::server().await?;
    let s = style();
    println!(
        "{}",
        s.title("pool-core tour: five production incidents, replayed")
    );
    println!(
        "{}",
        s.dim(&format!(
            "server {}{}",
            server.url(),
            if server.is_private() {
                " (private cluster)"
            } else {
                ""
            }
        ))
    );

    let db = tests::harness::test_db().await;
    let setup = db.connect().await;
    setup
        .batch_execute(
            "CREATE TABLE person (id bigint PRIMARY KEY, group_id int, name text);
             INSERT INTO person SELECT i, i % 4, 'person ' || i FROM generate_series(1, 40) i;
             CREATE TABLE table1 (a int, b int);",
        )
        .await?;
    let pool = Pool::builder(db.config())
        .max_size(4)
        .acquire_timeout(Duration::from_secs(5))
        .build()?;

    seed_000(&pool).await?;
    seed_001(&db.config()).await?;
    seed_002(&pool).await?;
    seed_003(&db.config()).await?;
    seed_004(&pool).await?;

    println!("\n{}", s.title("the main pool after the tour"));
    println!("{}", pool.status());
    println!(
        "{}",
        s.dim(&format!("tour finished in {:.1?}", started.elapsed()))
    );
    pool.close().await;
    drop(setup);
    Ok(())
}
