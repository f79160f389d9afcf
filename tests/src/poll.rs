//! Polling helpers shared by the test suites: drop a future after N polls, and wait
//! for a condition to hold.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

/// Polls `fut` up to `n` times, letting the runtime make progress in between, then
/// drops it. Returns whether it completed.
pub async fn poll_n_then_drop<F: Future>(fut: F, n: usize) -> bool {
    let mut fut = pin!(fut);
    for _ in 0..n {
        let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        if polled.is_ready() {
            return true;
        }
        // Let the connection's I/O task run, but less than a round trip, so that the
        // drop lands between every pair of protocol messages at some N.
        tokio::task::yield_now().await;
    }
    false
}

/// Polls `f` every `every` until it returns true (then returns true) or `within`
/// passes (then returns false).
pub async fn eventually_every<F, Fut>(within: Duration, every: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}
