//! An HTTP service with the workload of seed 000 — list the people of a group, looking
//! each one up through a helper — on a pool of 4, written the pool-core way: the helper
//! takes the handler's connection instead of checking out its own, so concurrent
//! requests can never deadlock the pool.
//!
//! ```sh
//! cargo run -p examples --example service                      # serve on 127.0.0.1:3000
//! cargo run -p examples --example service -- --load 64         # serve and load it for 5 s
//! cargo run -p examples --example service -- --load 64 --secs 10 --port 0
//! ```
//!
//! `GET /groups/{id}/persons` lists names; `GET /status` shows the pool. With `--load N`,
//! N concurrent clients (one keep-alive connection each) fire requests for `--secs`
//! seconds, then the service reports throughput, latency percentiles and the pool status,
//! and exits non-zero if any request failed or took longer than the pool's deadlines allow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pool_core::{Conn, Error, Pool, with_conn};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const GROUPS: i32 = 16;
const PEOPLE_PER_GROUP: i32 = 25;

#[with_conn]
async fn person(conn: &mut Conn, id: i64) -> Result<String, Error> {
    Ok(conn
        .query_one("SELECT name FROM person WHERE id = $1", &[&id])
        .await?
        .get(0))
}

/// The seed-000 shape: rows from one query, a helper per row — on the same connection.
#[with_conn]
async fn persons_in_group(conn: &mut Conn, group: i32) -> Result<Vec<String>, Error> {
    let rows = conn
        .query(
            "SELECT id FROM person WHERE group_id = $1 ORDER BY id",
            &[&group],
        )
        .await?;
    let mut names = Vec::with_capacity(rows.len());
    for row in rows {
        names.push(person(conn, row.get(0)).await?);
    }
    Ok(names)
}

/// A pool error as an HTTP response: 503 for timeouts and a lost server, 500 otherwise.
struct AppError(Error);

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = if self.0.is_timeout() || self.0.is_closed() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        (status, self.0.to_string()).into_response()
    }
}

async fn persons(State(pool): State<Pool>, Path(group): Path<i32>) -> Result<String, AppError> {
    let mut db = pool.db();
    Ok(persons_in_group(&mut db, group).await?.join("\n"))
}

async fn status(State(pool): State<Pool>) -> String {
    pool.status().to_string()
}

struct Args {
    load: Option<usize>,
    secs: u64,
    port: u16,
}

fn args() -> Result<Args, String> {
    let (mut load, mut secs, mut port) = (None, 5, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--load" => load = Some(value(&flag, it.next())?),
            "--secs" => secs = value(&flag, it.next())?,
            "--port" => port = Some(value(&flag, it.next())?),
            other => {
                return Err(format!(
                    "unknown argument `{other}`; use --load N, --secs S, --port P"
                ));
            }
        }
    }
    Ok(Args {
        load,
        secs,
        // A load run takes a free port, so it never collides with a running service.
        port: port.unwrap_or(if load.is_some() { 0 } else { 3000 }),
    })
}

/// The value after `flag`, parsed.
fn value<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value
        .ok_or(format!("{flag} needs a value"))?
        .parse()
        .map_err(|e| format!("{flag}: {e}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let db = tests::harness::test_db().await;
    db.connect()
        .await
        .batch_execute(&format!(
            "CREATE TABLE person (id bigint PRIMARY KEY, group_id int NOT NULL, name text NOT NULL);
             CREATE INDEX ON person (group_id);
             INSERT INTO person SELECT i, i % {GROUPS}, 'person ' || i FROM generate_series(1, {}) i;",
            GROUPS * PEOPLE_PER_GROUP
        ))
        .await?;
    let pool = Pool::builder(db.config())
        .max_size(4)
        .acquire_timeout(Duration::from_secs(5))
        .build()?;
    let app = Router::new()
        .route("/groups/{id}/persons", get(persons))
        .route("/status", get(status))
        .with_state(pool.clone());
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    let addr = listener.local_addr()?;
    println!("serving http://{addr}/groups/{{id}}/persons and /status (pool of 4)");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let Some(clients) = args.load else {
        server.await??;
        return Ok(());
    };
    let report = load(addr, clients, Duration::from_secs(args.secs)).await;
    println!("{report}");
    println!("{}", pool.status());
    server.abort();
    pool.close().await;
    if report.failures > 0 {
        return Err(format!(
            "{} requests failed or overran their deadline",
            report.failures
        )
        .into());
    }
    Ok(())
}

/// What the load run measured.
struct Report {
    clients: usize,
    window: Duration,
    latencies: Vec<Duration>,
    failures: usize,
    first_failure: Option<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.latencies.len();
        let pct = |p: f64| -> Duration {
            if n == 0 {
                return Duration::ZERO;
            }
            let i = ((n as f64 - 1.0) * p).round() as usize;
            self.latencies[i.min(n - 1)]
        };
        writeln!(f, "load: {} clients for {:.1?}", self.clients, self.window)?;
        writeln!(f, "  requests   {n} ok, {} failed", self.failures)?;
        writeln!(
            f,
            "  throughput {:.0} requests/s",
            n as f64 / self.window.as_secs_f64()
        )?;
        write!(
            f,
            "  latency    p50 {:.2?}  p99 {:.2?}  max {:.2?}",
            pct(0.50),
            pct(0.99),
            pct(1.0)
        )?;
        if let Some(e) = &self.first_failure {
            write!(f, "\n  first failure: {e}")?;
        }
        Ok(())
    }
}

/// Runs `clients` keep-alive HTTP clients against the service for `window`.
async fn load(addr: std::net::SocketAddr, clients: usize, window: Duration) -> Report {
    let deadline = Instant::now() + window;
    // A request may wait for a connection (acquire_timeout 5 s) and then run statements;
    // anything slower than this means the service is stuck.
    let overrun = Duration::from_secs(10);
    let results = Arc::new(std::sync::Mutex::new((Vec::new(), 0usize, None::<String>)));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let results = Arc::clone(&results);
            tokio::spawn(async move {
                let mut stream = None;
                let mut i = c as i32;
                while Instant::now() < deadline {
                    i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    let group = i.rem_euclid(GROUPS);
                    let started = Instant::now();
                    let outcome =
                        tokio::time::timeout(overrun, request(&mut stream, addr, group)).await;
                    let took = started.elapsed();
                    let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
                    match outcome {
                        Ok(Ok(())) => r.0.push(took),
                        Ok(Err(e)) => {
                            r.1 += 1;
                            r.2.get_or_insert(e);
                            stream = None;
                        }
                        Err(_) => {
                            r.1 += 1;
                            r.2.get_or_insert(format!(
                                "no response within {overrun:?}: the service is stuck"
                            ));
                            stream = None;
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let (mut latencies, failures, first_failure) =
        std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    latencies.sort_unstable();
    Report {
        clients,
        window,
        latencies,
        failures,
        first_failure,
    }
}

/// One `GET /groups/{group}/persons` on a keep-alive connection (opened if needed).
async fn request(
    stream: &mut Option<BufReader<TcpStream>>,
    addr: std::net::SocketAddr,
    group: i32,
) -> Result<(), String> {
    if stream.is_none() {
        *stream = Some(BufReader::new(
            TcpStream::connect(addr).await.map_err(|e| e.to_string())?,
        ));
    }
    let Some(s) = stream.as_mut() else {
        return Err("no connection".into());
    };
    let req = format!("GET /groups/{group}/persons HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.get_mut()
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut status_line = String::new();
    s.read_line(&mut status_line)
        .await
        .map_err(|e| e.to_string())?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        s.read_line(&mut line).await.map_err(|e| e.to_string())?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value
                .trim()
                .parse()
                .map_err(|_| "bad content-length".to_owned())?;
        }
    }
    let mut body = vec![0; length];
    s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    if !status_line.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "{}: {}",
            status_line.trim(),
            String::from_utf8_lossy(&body)
        ));
    }
    let people = body.split(|b| *b == b'\n').count();
    if people as i32 != PEOPLE_PER_GROUP {
        return Err(format!(
            "group {group}: {people} people, expected {PEOPLE_PER_GROUP}"
        ));
    }
    Ok(())
}
