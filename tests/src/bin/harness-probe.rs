//! Helper process for the harness integration tests (`tests/tests/harness.rs`).
//!
//! Modes (first argument):
//!
//! * `leftovers` (default): resolves the server and starts a private
//!   cluster, prints their data dirs and postmaster pids as `key=value`
//!   lines, then exits with `std::process::exit(0)` (no destructors run),
//!   so the test can check that the reapers clean up.
//! * `testdb`: creates a test database, uses it, prints `testdb_ok=<name>`.
//! * `error`: expects `server()` to fail and prints `error=<message>`.

use std::io::Write;

use tests::harness::{self, PrivateCluster};

fn emit(key: &str, value: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{key}={value}");
    let _ = out.flush();
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("harness-probe: {message}");
    std::process::exit(2)
}

async fn leftovers() {
    let server = harness::server().await.unwrap_or_else(|e| fail(e));
    emit("server_private", server.is_private());
    if let Some(cluster) = server.private_cluster() {
        emit("server_data_dir", cluster.data_dir().display());
        emit("server_pid", cluster.pid().unwrap_or(0));
    }
    let cluster = PrivateCluster::start_default()
        .await
        .unwrap_or_else(|e| fail(e));
    emit("cluster_data_dir", cluster.data_dir().display());
    emit("cluster_pid", cluster.pid().unwrap_or(0));
    emit("probe_pid", std::process::id());
    // Abrupt exit: no destructor runs, the reapers must clean up.
    std::process::exit(0);
}

async fn testdb() {
    let db = harness::try_test_db().await.unwrap_or_else(|e| fail(e));
    emit("server_private", db.server().is_private());
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (41), (1);")
        .await
        .unwrap_or_else(|e| fail(e));
    let row = client
        .query_one("SELECT sum(v)::int FROM t", &[])
        .await
        .unwrap_or_else(|e| fail(e));
    let sum: i32 = row.get(0);
    if sum != 42 {
        fail(format!("unexpected sum {sum}"));
    }
    emit("testdb_ok", db.name());
}

async fn error() {
    match harness::server().await {
        Ok(server) => fail(format!("server() unexpectedly succeeded: {}", server.url())),
        Err(e) => emit("error", e.to_string().replace('\n', " ")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    match std::env::args().nth(1).as_deref().unwrap_or("leftovers") {
        "leftovers" => leftovers().await,
        "testdb" => testdb().await,
        "error" => error().await,
        other => fail(format!("unknown mode {other:?}")),
    }
}
