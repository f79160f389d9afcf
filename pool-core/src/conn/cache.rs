//! Each connection's cache of prepared statements, by SQL text, with least-recently-used
//! eviction at `statement_cache_capacity`. An evicted statement is closed on the server
//! (the driver sends `Close` when its last handle is dropped).

use std::collections::HashMap;

use tokio_postgres::Statement;
use tokio_postgres::types::Type;

/// A cached statement and when it was last used.
struct Entry {
    statement: Statement,
    /// The cache's use count at the last use: the smallest is the least recently used.
    used: u64,
}

/// Prepared statements of one connection, by SQL text.
#[derive(Default)]
pub(crate) struct StatementCache {
    map: HashMap<Box<str>, Entry>,
    /// Counts uses, to order entries by their last one.
    clock: u64,
    /// Parameter types by SQL text, for unnamed statements (PgBouncer transaction mode).
    pub(crate) param_types: HashMap<Box<str>, Vec<Type>>,
}

impl StatementCache {
    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The statement prepared for `sql`, marked as just used.
    pub(crate) fn get(&mut self, sql: &str) -> Option<&Statement> {
        self.clock += 1;
        let entry = self.map.get_mut(sql)?;
        entry.used = self.clock;
        Some(&entry.statement)
    }

    /// Keeps `st` for `sql`, evicting the least recently used statement when the cache
    /// holds `capacity` already (0: nothing is kept).
    pub(crate) fn insert(&mut self, sql: &str, st: Statement, capacity: usize) {
        if capacity == 0 {
            return;
        }
        if self.map.len() >= capacity {
            // A scan, on insertions into a full cache only: at most a few hundred
            // entries, next to the round trip that prepared `st`.
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.map.remove(&k);
            }
        }
        self.clock += 1;
        let entry = Entry {
            statement: st,
            used: self.clock,
        };
        self.map.insert(sql.into(), entry);
    }

    pub(crate) fn remove(&mut self, sql: &str) {
        self.map.remove(sql);
        self.param_types.remove(sql);
    }
}
