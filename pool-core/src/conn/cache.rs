//! Each connection's cache of prepared statements, by SQL text, with least-recently-used
//! eviction at `statement_cache_capacity`. An evicted statement is closed on the server
//! (the driver sends `Close` when its last handle is dropped). Each entry keeps the
//! statement's classification too, so SQL text found here is not classified again.
//!
//! Keys are hashed with [`TextHasher`] (FxHash's multiply-rotate, 8 bytes a step), not
//! the standard library's SipHash: the texts are the application's own statements, at
//! most `statement_cache_capacity` of them per connection, and SipHash was a tenth of
//! the client's work for a short cached statement.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use pool_sql::Classification;
use tokio_postgres::Statement;
use tokio_postgres::types::Type;

/// A map keyed by SQL text, hashed with [`TextHasher`].
pub(crate) type TextMap<V> = HashMap<Box<str>, V, BuildHasherDefault<TextHasher>>;

/// A cached statement and when it was last used.
struct Entry {
    statement: Statement,
    class: Classification,
    /// The cache's use count at the last use: the smallest is the least recently used.
    used: u64,
}

/// Prepared statements of one connection, by SQL text.
#[derive(Default)]
pub(crate) struct StatementCache {
    map: TextMap<Entry>,
    /// Counts uses, to order entries by their last one.
    clock: u64,
    /// Parameter types by SQL text, for unnamed statements (PgBouncer transaction mode).
    pub(crate) param_types: TextMap<Vec<Type>>,
}

/// FxHash (rustc's hasher): a rotate, a xor and a multiply per 8 bytes.
#[derive(Default, Clone, Copy)]
pub(crate) struct TextHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl TextHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for TextHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

impl StatementCache {
    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The classification of `sql`, if a statement is cached for it.
    pub(crate) fn class_of(&self, sql: &str) -> Option<Classification> {
        self.map.get(sql).map(|e| e.class)
    }

    /// The statement prepared for `sql`, marked as just used.
    pub(crate) fn get(&mut self, sql: &str) -> Option<&Statement> {
        self.clock += 1;
        let entry = self.map.get_mut(sql)?;
        entry.used = self.clock;
        Some(&entry.statement)
    }

    /// Keeps `st` (classified `class`) for `sql`, evicting the least recently used
    /// statement when the cache holds `capacity` already (0: nothing is kept).
    pub(crate) fn insert(
        &mut self,
        sql: &str,
        st: Statement,
        class: Classification,
        capacity: usize,
    ) {
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
            class,
            used: self.clock,
        };
        self.map.insert(sql.into(), entry);
    }

    pub(crate) fn remove(&mut self, sql: &str) {
        self.map.remove(sql);
        self.param_types.remove(sql);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    fn hash(s: &str) -> u64 {
        BuildHasherDefault::<TextHasher>::default().hash_one(s)
    }

    #[test]
    fn texts_differing_anywhere_hash_apart() {
        let base = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(hash(base)));
        // Each byte changed in turn (the 8-byte words and the tail), and every prefix.
        for i in 0..base.len() {
            let mut changed = base.as_bytes().to_vec();
            changed[i] ^= 1;
            assert!(
                seen.insert(hash(std::str::from_utf8(&changed).unwrap())),
                "byte {i}"
            );
            assert!(seen.insert(hash(&base[..i])), "prefix {i}");
        }
    }
}
