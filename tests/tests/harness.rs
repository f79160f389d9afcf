//! Tests of the PostgreSQL test harness itself.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tests::harness::{self, PrivateCluster, test_db};
use tokio_postgres::{Config, NoTls};

const DEAD_URL: &str = "postgres://postgres@127.0.0.1:1/postgres";

/// Whether database `name` exists, asked through the admin database.
async fn database_exists(name: &str) -> bool {
    let admin = harness::server().await.unwrap().config();
    let (client, connection) = admin.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) == 1
}

async fn try_connect(config: &Config, deadline: Duration) -> Result<(), String> {
    match tokio::time::timeout(deadline, config.connect(NoTls)).await {
        Ok(Ok((client, connection))) => {
            tokio::spawn(connection);
            let row = client.query_one("SELECT 1", &[]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), 1);
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

#[tokio::test]
async fn test_dbs_are_distinct_and_isolated() {
    let a = test_db().await;
    let b = test_db().await;
    assert_ne!(a.name(), b.name());
    assert_ne!(a.url(), b.url());
    assert!(
        a.name()
            .starts_with(&format!("pct_{}_", std::process::id()))
    );

    let ca = a.connect().await;
    let cb = b.connect().await;
    let current: String = ca
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(current, a.name());

    ca.batch_execute("CREATE TABLE only_in_a (v int); INSERT INTO only_in_a VALUES (1)")
        .await
        .unwrap();
    let visible: i64 = cb
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(visible, 0, "table of one test database visible in another");
    let err = cb
        .batch_execute("SELECT * FROM only_in_a")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("db error"), "{err}");
    let count: i64 = ca
        .query_one("SELECT count(*) FROM only_in_a", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);

    // The admin client sees the server, not the test database.
    let admin_db: String = a
        .admin()
        .await
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(admin_db, a.name());
}

#[tokio::test]
async fn test_db_is_dropped_on_drop_and_on_panic() {
    // Normal drop, while a client is still connected to it.
    let db = test_db().await;
    let name = db.name().to_owned();
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (v int)")
        .await
        .unwrap();
    assert!(database_exists(&name).await);
    drop(db);
    assert!(
        !database_exists(&name).await,
        "{name} still exists after drop"
    );
    drop(client);

    // Drop while a panicking test unwinds, in its own runtime and thread.
    let seen = Arc::new(Mutex::new(None::<String>));
    let seen2 = Arc::clone(&seen);
    let joined = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let db = test_db().await;
            let _client = db.connect().await;
            *seen2.lock().unwrap() = Some(db.name().to_owned());
            panic!("intentional panic while holding {}", db.name());
        })
    })
    .join();
    assert!(joined.is_err(), "the thread should have panicked");
    let name = seen.lock().unwrap().clone().unwrap();
    assert!(!database_exists(&name).await, "{name} survived a panic");
}

#[tokio::test]
async fn private_cluster_lifecycle() {
    let cluster = PrivateCluster::builder()
        .setting("max_connections", "7")
        .setting("idle_session_timeout", "1s")
        .start()
        .await
        .unwrap();
    assert!(cluster.is_running());
    assert!(cluster.data_dir().join("PG_VERSION").is_file());
    assert!(cluster.url().contains(&format!(":{}/", cluster.port())));
    assert!(
        cluster
            .url_for("x")
            .ends_with(&format!(":{}/x", cluster.port()))
    );
    let config = cluster.config();
    let show = |config: Config, name: &'static str| async move {
        let (client, connection) = config.connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        let row = client
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .unwrap();
        row.get::<_, String>(0)
    };
    assert_eq!(show(config.clone(), "max_connections").await, "7");
    assert_eq!(show(config.clone(), "idle_session_timeout").await, "1s");
    assert_eq!(show(config.clone(), "fsync").await, "off");

    // Reloadable setting via set(); restart-only settings apply on restart.
    cluster.set("idle_session_timeout", "5s").await.unwrap();
    assert_eq!(show(config.clone(), "idle_session_timeout").await, "5s");
    cluster.set("max_connections", "9").await.unwrap();
    assert_eq!(show(config.clone(), "max_connections").await, "7");

    let pid0 = cluster.pid().unwrap();
    cluster.restart_fast().await.unwrap();
    let pid1 = cluster.pid().unwrap();
    assert_ne!(pid0, pid1);
    assert_eq!(show(config.clone(), "max_connections").await, "9");

    cluster.restart_immediate().await.unwrap();
    let pid2 = cluster.pid().unwrap();
    assert_ne!(pid1, pid2);
    try_connect(&config, Duration::from_secs(5)).await.unwrap();

    cluster.stop_fast().await.unwrap();
    assert!(!cluster.is_running());
    assert_eq!(cluster.pid(), None);
    let err = try_connect(&config, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.contains("error connecting"), "{err}");
    cluster.start().await.unwrap();
    try_connect(&config, Duration::from_secs(5)).await.unwrap();

    cluster.pause().unwrap();
    let err = try_connect(&config, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert_eq!(err, "timed out");
    cluster.resume().unwrap();
    try_connect(&config, Duration::from_secs(5)).await.unwrap();

    cluster.stop_immediate().await.unwrap();
    assert!(try_connect(&config, Duration::from_secs(5)).await.is_err());
    cluster.start().await.unwrap();
    try_connect(&config, Duration::from_secs(5)).await.unwrap();
    assert!(cluster.log_contents().contains("database system is ready"));

    // Drop stops the server and removes everything.
    let root = cluster.data_dir().parent().unwrap().to_owned();
    let pid = cluster.pid().unwrap();
    drop(cluster);
    assert!(!root.exists(), "{} left behind", root.display());
    assert!(!is_live_postgres(pid));
}

fn probe(mode: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harness-probe"));
    command
        .arg(mode)
        .env("DATABASE_URL", DEAD_URL)
        .env_remove("POOL_CORE_PG_BINDIR");
    command
}

fn run_probe(command: &mut Command) -> HashMap<String, String> {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "probe failed ({}): {stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Whether `pid` is a live (non-zombie) postgres process.
fn is_live_postgres(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((head, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    head.ends_with("(postgres") && !rest.trim_start().starts_with(['Z', 'X'])
}

/// Temp entries created by process `pid`.
fn temp_entries_of(pid: &str) -> Vec<PathBuf> {
    let prefix = format!("pool-core-pg-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

#[test]
fn no_leftovers_after_abrupt_exit() {
    let out = run_probe(&mut probe("leftovers"));
    assert_eq!(out["server_private"], "true");
    let pids: Vec<u32> = ["server_pid", "cluster_pid"]
        .iter()
        .map(|k| out[*k].parse().unwrap())
        .collect();
    assert!(pids.iter().all(|pid| *pid != 0), "{out:?}");
    let dirs: Vec<&Path> = ["server_data_dir", "cluster_data_dir"]
        .iter()
        .map(|k| Path::new(out[*k].as_str()))
        .collect();
    let probe_pid = &out["probe_pid"];

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let live: Vec<&u32> = pids.iter().filter(|pid| is_live_postgres(**pid)).collect();
        let dirs_left: Vec<&&Path> = dirs.iter().filter(|d| d.exists()).collect();
        let temp_left = temp_entries_of(probe_pid);
        if live.is_empty() && dirs_left.is_empty() && temp_left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leftovers 10 s after the probe exited: pids {live:?}, dirs {dirs_left:?}, \
             temp entries {temp_left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn falls_back_to_a_private_cluster() {
    let out = run_probe(&mut probe("testdb"));
    assert_eq!(out["server_private"], "true");
    assert!(out["testdb_ok"].starts_with("pct_"), "{out:?}");
}

#[test]
fn error_names_url_and_searched_locations() {
    let out = run_probe(probe("error").env("POOL_CORE_PG_BINDIR", "/nonexistent"));
    let message = &out["error"];
    for needle in [
        DEAD_URL,
        "connection refused",
        "POOL_CORE_PG_BINDIR=/nonexistent",
        "install PostgreSQL",
        "DATABASE_URL",
    ] {
        assert!(
            message.to_lowercase().contains(&needle.to_lowercase()),
            "{needle:?} missing from {message:?}"
        );
    }
}
