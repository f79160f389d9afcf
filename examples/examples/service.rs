//! An HTTP service with the workload of seed 000 — list the people of a group, looking
//! each one up through a helper — on a pool of 4, written the pool-core way: the helper
//! takes the handler's connection instead of checking out its own, so concurrent
//! requests can never deadlock the pool.
//!
//! ```sh
//! cargo run -p examples --example service                      # serve on 127.0.0.1:3000
//! cargo run -p examples --example service -- --load 64         # serve and load it for 5 s
//! cargo run -p examples --example service -- --load 64 --secs 10 --port 0
//! cargo run -p examples --example service -- --metrics 127.0.0.1:9000   # + Prometheus
//! ```
//!
//! With `--metrics ADDR` the pool's metrics (OpenTelemetry's connection-pool names, in
//! Prometheus' text format) are served at `http://ADDR/metrics`; with `--load` as well,
//! the run scrapes that endpoint under load and after it, and fails if the names, the
//! idle/used split or the numbers disagree with `pool.status()`.
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
    metrics: Option<std::net::SocketAddr>,
}

fn args() -> Result<Args, String> {
    let (mut load, mut secs, mut port, mut metrics) = (None, 5, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--load" => load = Some(value(&flag, it.next())?),
            "--secs" => secs = value(&flag, it.next())?,
            "--port" => port = Some(value(&flag, it.next())?),
            "--metrics" => metrics = Some(value(&flag, it.next())?),
            other => {
                return Err(format!(
                    "unknown argument `{other}`; use --load N, --secs S, --port P, --metrics ADDR"
                ));
            }
        }
    }
    Ok(Args {
        load,
        secs,
        // A load run takes a free port, so it never collides with a running service.
        port: port.unwrap_or(if load.is_some() { 0 } else { 3000 }),
        metrics,
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

#[cfg_attr(test, allow(dead_code))]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(args()?).await
}

/// The service (and, with `--load`, the load run and its checks).
async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let db = ::tests::harness::test_db().await;
    db.connect()
        .await
        .batch_execute(&format!(
            "CREATE TABLE person (id bigint PRIMARY KEY, group_id int NOT NULL, name text NOT NULL);
             CREATE INDEX ON person (group_id);
             INSERT INTO person SELECT i, i % {GROUPS}, 'person ' || i FROM generate_series(1, {}) i;",
            GROUPS * PEOPLE_PER_GROUP
        ))
        .await?;
    // The recorder first: a pool registers its instruments when it is built.
    let metrics = match args.metrics {
        Some(at) => Some(serve_metrics(at).await?),
        None => None,
    };
    let pool = Pool::builder(db.config())
        .name("service")
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
    let scraping = metrics.map(|at| {
        let pool = pool.clone();
        let halfway = Duration::from_secs(args.secs) / 2;
        tokio::spawn(async move {
            tokio::time::sleep(halfway).await;
            let text = fetch(at, "/metrics").await?;
            check_metrics(&text, &pool, false)
        })
    });
    let report = load(addr, clients, Duration::from_secs(args.secs)).await;
    println!("{report}");
    println!("{}", pool.status());
    if let (Some(at), Some(scraping)) = (metrics, scraping) {
        scraping.await??;
        // Quiet now: after the next maintenance pass (at most 1 s) the gauges are exact.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let text = fetch(at, "/metrics").await?;
        check_metrics(&text, &pool, true)?;
        println!("metrics: names, idle/used split and values agree with status()");
    }
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

/// Installs the Prometheus recorder and serves its rendering at `http://at/metrics`.
async fn serve_metrics(
    at: std::net::SocketAddr,
) -> Result<std::net::SocketAddr, Box<dyn std::error::Error>> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new().route("/metrics", get(move || async move { handle.render() }));
    let listener = TcpListener::bind(at).await?;
    let at = listener.local_addr()?;
    println!("metrics on http://{at}/metrics");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(at)
}

/// One GET, the body as text.
async fn fetch(at: std::net::SocketAddr, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(at).await.map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {at}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(format!("GET {path}: {response}")),
    }
}

/// The value of the sample `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let (metric, rest) = key.split_once('{').unwrap_or((key, ""));
            (metric == name && labels.iter().all(|l| rest.contains(l)))
                .then(|| value.parse().ok())
                .flatten()
        })
}

/// Checks a scrape: every instrument is there with the pool's name, the idle/used split
/// is consistent with `status()` (exactly so when the pool is `quiet`).
fn check_metrics(text: &str, pool: &Pool, quiet: bool) -> Result<(), String> {
    let pool_label = r#"db_client_connection_pool_name="service""#;
    let get = |name: &str, extra: &[&str]| -> Result<f64, String> {
        let mut labels = vec![pool_label];
        labels.extend_from_slice(extra);
        sample(text, name, &labels).ok_or(format!("metrics: no {name} {extra:?} in:\n{text}"))
    };
    for name in [
        "db_client_connection_idle_max",
        "db_client_connection_idle_min",
        "db_client_connection_max",
        "db_client_connection_pending_requests",
        "db_client_connection_create_time_count",
        "db_client_connection_use_time_count",
    ] {
        get(name, &[])?;
    }
    let idle = get(
        "db_client_connection_count",
        &[r#"db_client_connection_state="idle""#],
    )?;
    let used = get(
        "db_client_connection_count",
        &[r#"db_client_connection_state="used""#],
    )?;
    let status = pool.status();
    if get("db_client_connection_max", &[])? != status.max_size as f64 {
        return Err(format!("metrics: max disagrees with {status}"));
    }
    if idle + used > status.max_size as f64 {
        return Err(format!(
            "metrics: idle {idle} + used {used} over max_size: {status}"
        ));
    }
    if quiet && (idle != status.idle as f64 || used != status.in_use as f64) {
        return Err(format!(
            "metrics: idle {idle} used {used} disagree with {status}"
        ));
    }
    if !quiet && used == 0.0 {
        return Err(format!(
            "metrics: no connection in use under load: {status}"
        ));
    }
    let created = get("db_client_connection_create_time_count", &[])?;
    if quiet && created != status.counters.created as f64 {
        return Err(format!(
            "metrics: {created} connections created, status says {status}"
        ));
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

#[cfg(test)]
mod tests {
    /// `--load 16 --secs 2 --metrics 127.0.0.1:0`: the metrics endpoint scraped under
    /// load and after it agrees with `pool.status()` (see `check_metrics`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_are_served_and_agree_with_status_under_load() {
        let args = super::Args {
            load: Some(16),
            secs: 2,
            port: 0,
            metrics: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        };
        super::run(args)
            .await
            .expect("the load run and its metrics checks");
    }
}
