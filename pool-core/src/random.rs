//! Jitter: a cheap pseudo-random number for backoff, lifetimes and retries, so that
//! many pools do not act in lock step.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A random duration in `[0, max]`.
pub(crate) fn jitter(max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(random_u64() % (nanos + 1))
}

/// A cheap pseudo-random number (splitmix64 over a counter seeded once per process from
/// the standard library's random hash keys, the time and the process id).
pub(crate) fn random_u64() -> u64 {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    static STATE: AtomicU64 = AtomicU64::new(0);
    // Seed before the first draw: a counter bumped first would never be 0 here, and
    // every process would draw the same numbers.
    if STATE.load(Ordering::Relaxed) == 0 {
        let seed = RandomState::new().hash_one((std::time::SystemTime::now(), std::process::id()));
        let _ = STATE.compare_exchange(0, seed | 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    let mut z = STATE
        .fetch_add(GOLDEN, Ordering::Relaxed)
        .wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
