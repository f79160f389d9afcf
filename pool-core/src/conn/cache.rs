//! Each connection's cache of prepared statements, by SQL text.

use std::collections::HashMap;

use tokio_postgres::Statement;
use tokio_postgres::types::Type;

/// Prepared statements of one connection, by SQL text.
#[derive(Default)]
pub(crate) struct StatementCache {
    map: HashMap<Box<str>, Statement>,
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
    pub(crate) fn get(&self, sql: &str) -> Option<&Statement> {
        self.map.get(sql)
    }
    pub(crate) fn insert(&mut self, sql: &str, st: Statement, capacity: usize) {
        if capacity == 0 {
            return;
        }
        if self.map.len() >= capacity {
            // Evict an arbitrary entry; the server-side statement is closed when the
            // driver's `Statement` is dropped.
            if let Some(k) = self.map.keys().next().cloned() {
                self.map.remove(&k);
            }
        }
        self.map.insert(sql.into(), st);
    }
    pub(crate) fn remove(&mut self, sql: &str) {
        self.map.remove(sql);
        self.param_types.remove(sql);
    }
}
