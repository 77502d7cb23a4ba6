//! A bounded cache of the version stored under recently written keys, so the read half of
//! [`crate::Engine::apply`]'s read-compare-write skips the memtable and SST lookup for hot keys
//! (the memtable's skip list search was the largest single cost of a replica write).
//!
//! Two generations: writes land in the young map; when it is full it becomes the old map and
//! the previous old map is dropped. Memory is bounded by `capacity` keys; a key written at least
//! once per generation stays cached. The cache is only correct while every change to the data
//! column family goes through its owner under one lock, which [`crate::RocksEngine`] ensures
//! (apply and purge both hold the apply lock and update it).

use proto::Version;
use std::collections::HashMap;

/// Versions of recently written keys.
#[derive(Debug)]
pub struct VersionCache {
    per_generation: usize,
    young: HashMap<Vec<u8>, Version>,
    old: HashMap<Vec<u8>, Version>,
}

impl VersionCache {
    /// A cache of at most `capacity` keys (0 disables it).
    pub fn new(capacity: usize) -> VersionCache {
        // The young generation is sized once up front: growing a large map rehashes every key
        // in one go, a multi-millisecond pause on the writer thread.
        let per_generation = capacity / 2;
        VersionCache {
            per_generation,
            young: HashMap::with_capacity(per_generation),
            old: HashMap::new(),
        }
    }

    /// The stored version of `key`, if cached. `None` means unknown, not absent.
    pub fn get(&self, key: &[u8]) -> Option<Version> {
        self.young.get(key).or_else(|| self.old.get(key)).copied()
    }

    /// Records that `key` now stores `version`.
    pub fn insert(&mut self, key: &[u8], version: Version) {
        if self.per_generation == 0 {
            return;
        }
        if let Some(v) = self.young.get_mut(key) {
            *v = version;
            return;
        }
        if self.young.len() >= self.per_generation {
            let fresh = HashMap::with_capacity(self.per_generation);
            self.old = std::mem::replace(&mut self.young, fresh);
        }
        self.young.insert(key.to_vec(), version);
    }

    /// Forgets `key` (it was deleted).
    pub fn remove(&mut self, key: &[u8]) {
        self.young.remove(key);
        self.old.remove(key);
    }

    /// Keys cached (stale old-generation duplicates included).
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64) -> Version {
        Version { hlc, node: 1 }
    }

    #[test]
    fn newest_insert_wins_and_removal_forgets_both_generations() {
        let mut c = VersionCache::new(4);
        c.insert(b"a", v(1));
        c.insert(b"b", v(2));
        // Full young generation: "a" and "b" move to the old one.
        c.insert(b"c", v(3));
        assert_eq!(c.get(b"a"), Some(v(1)));
        c.insert(b"a", v(5));
        assert_eq!(c.get(b"a"), Some(v(5)), "young shadows old");
        c.remove(b"a");
        assert_eq!(c.get(b"a"), None);
        assert_eq!(c.get(b"zzz"), None);
    }

    #[test]
    fn memory_stays_bounded_and_disabled_caches_nothing() {
        let mut c = VersionCache::new(100);
        for i in 0..10_000u64 {
            c.insert(&i.to_be_bytes(), v(i));
        }
        assert!(c.len() <= 100, "{}", c.len());
        assert_eq!(c.get(&9_999u64.to_be_bytes()), Some(v(9_999)));
        assert_eq!(c.get(&0u64.to_be_bytes()), None, "evicted long ago");
        let mut off = VersionCache::new(0);
        off.insert(b"a", v(1));
        assert!(off.is_empty());
    }
}
