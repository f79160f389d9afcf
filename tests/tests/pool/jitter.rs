//! Backoff jitter is random per process: two processes retrying against the same dead
//! server do not retry at the same moments.

use std::time::{Duration, Instant};

use pool_core::Pool;
use tokio::net::TcpListener;

const CHILD: &str = "POOL_CORE_JITTER_CHILD";

/// In a child process: the gaps between a pool's connect attempts to a listener that
/// closes every connection at once, in milliseconds.
async fn retry_gaps() -> Vec<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepts = tokio::spawn(async move {
        let mut at = Vec::new();
        while let Ok(Ok((socket, _))) =
            tokio::time::timeout(Duration::from_millis(1500), listener.accept()).await
        {
            at.push(Instant::now());
            drop(socket);
        }
        at
    });
    let pool = Pool::builder(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
        .max_size(1)
        .acquire_timeout(Duration::from_millis(1300))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut db = pool.db();
    assert!(db.acquire().await.is_err());
    drop(db);
    drop(pool);
    let at = accepts.await.unwrap();
    at.windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .collect()
}

#[tokio::test]
async fn two_processes_back_off_at_different_moments() {
    if std::env::var_os(CHILD).is_some() {
        let gaps = retry_gaps().await;
        let line: Vec<String> = gaps.iter().map(|g| format!("{g:.3}")).collect();
        println!("gaps: {}", line.join(","));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let spawn = || {
        std::process::Command::new(&exe)
            .args([
                "--exact",
                "jitter::two_processes_back_off_at_different_moments",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Started together, as a fleet restarted at once would be.
    let (a, b) = (spawn(), spawn());
    let gaps = |child: std::process::Child| -> Vec<f64> {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "the child failed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find_map(|l| l.split("gaps: ").nth(1))
            .unwrap_or_else(|| panic!("no gaps in the child's output: {text}"));
        line.trim()
            .split(',')
            .filter_map(|g| g.trim().parse().ok())
            .collect()
    };
    let (a, b) = (gaps(a), gaps(b));
    assert!(a.len() >= 5 && b.len() >= 5, "too few retries: {a:?} {b:?}");
    // The first retries wait 25, 50, 100, 200, 400 ms ± 25 %: with jitter of their own
    // the two processes differ by several milliseconds somewhere among them; with the
    // same jitter they agree to within scheduling noise.
    let spread = a
        .iter()
        .zip(&b)
        .take(5)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        spread > 5.0,
        "the processes retried in lock step: {a:?} vs {b:?}"
    );
}
