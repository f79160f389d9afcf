//! Which task last wrote through a primary, and when: what read-your-writes needs.
//!
//! A pool with replicas gives its primary connections one [`WriteLog`]. A statement that
//! may write (not provably read-only) records the current task and the time when it
//! completes outside a transaction, or when its transaction commits. The read side
//! then sends that task's reads only to a replica known to have replayed a primary
//! position sampled after that time (or to the primary). No WAL position is asked per
//! write: the background sampler's primary positions, each taken after its time, are
//! what the commit is compared with.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

use crate::status::TaskKey;

/// When each task last wrote through the primary (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct WriteLog {
    last: Mutex<HashMap<TaskKey, Instant>>,
}

impl WriteLog {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<TaskKey, Instant>> {
        self.last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current task's write has just completed (committed, or ended in a way that
    /// may have committed).
    pub(crate) fn wrote(&self) {
        self.map().insert(TaskKey::current(), Instant::now());
    }

    /// When the current task last wrote, if it did and that is not forgotten yet.
    pub(crate) fn last_write(&self) -> Option<Instant> {
        self.map().get(&TaskKey::current()).copied()
    }

    /// Forgets writes made before `t`: every replica in use has replayed past them.
    pub(crate) fn forget_before(&self, t: Instant) {
        self.map().retain(|_, at| *at >= t);
    }

    /// How many tasks' writes are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }
}
