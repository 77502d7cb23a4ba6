//! A bounded cache of the version stored under recently written keys, so the read half of
//! [`crate::Engine::apply`]'s read-compare-write skips the memtable and SST lookup for hot keys
//! (the memtable's skip list search was the largest single cost of a replica write).
//!
//! Two generations: writes land in the young map; when it is full it becomes the old map and
//! the previous old map is emptied (and reused as the young one). Memory is bounded by
//! `capacity` keys; a key written at least once per generation stays cached. The cache is only correct while every change to the data
//! column family goes through its owner under one lock, which [`crate::RocksEngine`] ensures
//! (apply and purge both hold the apply lock and update it). Keys are held inline
//! ([`InlineKey`], at most [`MAX_CACHED_KEY_BYTES`]), so the tables own no heap memory.

use proto::Version;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// The hasher of the hot-path tables: foldhash, seeded at random per process. SipHash (the
/// standard library's) was 3 to 4% of a node's CPU in a closed-loop write profile, for tables
/// whose keys (op ids, record keys) come from authenticated peers and clients.
pub type FastHash = foldhash::fast::RandomState;

/// A map bounded by generations: entries land in the young map; when it holds `per_generation`
/// entries it becomes the old map and the previous old map's entries are forgotten. The last
/// `per_generation` keys inserted are always present, at most twice that many are. With
/// `per_generation` 0 it stores nothing.
///
/// The two hash tables are reused: the retired old table is emptied in place and becomes the
/// young one, so a full map never allocates, rehashes or touches fresh memory again. (Growing a
/// 229,376-entry table on a node's runtime thread, and first-touching the new table's pages,
/// stalled every request on that node for 30 to 80 ms once per generation.)
#[derive(Debug)]
pub struct Generations<K, V> {
    per_generation: usize,
    young: HashMap<K, V, FastHash>,
    old: HashMap<K, V, FastHash>,
}

impl<K: Hash + Eq, V: Copy> Generations<K, V> {
    /// A map whose two tables are allocated at their full size up front: no insert ever
    /// rehashes. (Only the tables' control bytes are written now; a slot's page is touched when
    /// the slot is first used.)
    pub fn presized(per_generation: usize) -> Self {
        Generations {
            per_generation,
            young: HashMap::with_capacity_and_hasher(per_generation, FastHash::default()),
            old: HashMap::with_capacity_and_hasher(per_generation, FastHash::default()),
        }
    }

    /// Touches every page of both tables once, by filling each with `per_generation` made-up
    /// keys and emptying it again (the tables keep their memory). Then no insert on the hot
    /// path faults a fresh page in: the first fill of a 262,144-entry table touched ~21 MB at
    /// random, a page fault per insert for the first thousands of inserts, and stalled the
    /// node's request path for tens of milliseconds.
    pub fn prefault(&mut self, mut key: impl FnMut(usize) -> K, value: V) {
        for table in [&mut self.young, &mut self.old] {
            for i in 0..self.per_generation {
                table.insert(key(i), value);
            }
            table.clear();
        }
    }

    /// The value of `key`, young generation first.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.young.get(key).or_else(|| self.old.get(key)).copied()
    }

    /// Sets `key` to `value` in the young generation (an old entry of it is shadowed).
    pub fn insert<Q>(&mut self, key: &Q, value: V)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.per_generation == 0 {
            return;
        }
        if let Some(v) = self.young.get_mut(key) {
            *v = value;
            return;
        }
        if self.young.len() >= self.per_generation {
            std::mem::swap(&mut self.young, &mut self.old);
            // Keeps the table's memory.
            self.young.clear();
        }
        self.young.insert(key.to_owned(), value);
    }

    /// Forgets `key` in both generations.
    pub fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.young.remove(key);
        self.old.remove(key);
    }

    /// Entries held (a key in both generations counts twice).
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Longest key the version cache holds, stored inline in the table (a UUID in text is 36
/// bytes). Longer keys are never cached: apply reads their version from storage.
pub const MAX_CACHED_KEY_BYTES: usize = 39;

/// A key of at most [`MAX_CACHED_KEY_BYTES`], held in the hash table itself. Nothing in the
/// table owns heap memory, so retiring a generation is one `memset` of its control bytes: with
/// heap-allocated keys, emptying a 131,072-key generation freed every key one by one, on the
/// storage writer under the apply lock (the insert that did it took 9.65 ms, measured alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InlineKey {
    len: u8,
    bytes: [u8; MAX_CACHED_KEY_BYTES],
}

impl InlineKey {
    /// `key` inline, or `None` if it is longer than [`MAX_CACHED_KEY_BYTES`].
    pub fn new(key: &[u8]) -> Option<InlineKey> {
        let len = u8::try_from(key.len())
            .ok()
            .filter(|&l| usize::from(l) <= MAX_CACHED_KEY_BYTES)?;
        let mut bytes = [0u8; MAX_CACHED_KEY_BYTES];
        bytes[..key.len()].copy_from_slice(key);
        Some(InlineKey { len, bytes })
    }
}

/// The versions of recently written keys: at most `capacity` keys, two generations of half.
/// Only keys of at most [`MAX_CACHED_KEY_BYTES`] are cached.
#[derive(Debug)]
pub struct VersionCache(Generations<InlineKey, Version>);

impl VersionCache {
    /// A cache of at most `capacity` keys (0: caches nothing), allocated up front.
    pub fn new(capacity: usize) -> VersionCache {
        let mut generations = Generations::presized(capacity / 2);
        let unused = Version { hlc: 0, node: 0 };
        generations.prefault(
            |i| InlineKey::new(&(i as u64).to_be_bytes()).expect("8 bytes fit"),
            unused,
        );
        VersionCache(generations)
    }

    /// The cached version of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Version> {
        self.0.get(&InlineKey::new(key)?)
    }

    /// Caches `version` as `key`'s stored version (a key too long to cache is not).
    pub fn insert(&mut self, key: &[u8], version: Version) {
        if let Some(k) = InlineKey::new(key) {
            self.0.insert(&k, version)
        }
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &[u8]) {
        if let Some(k) = InlineKey::new(key) {
            self.0.remove(&k)
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
    fn long_keys_are_not_cached_and_keys_differ_by_length() {
        // Nothing in a table needs dropping, so emptying a generation is a memset.
        assert!(!std::mem::needs_drop::<(InlineKey, Version)>());
        let mut c = VersionCache::new(16);
        let longest = [7u8; MAX_CACHED_KEY_BYTES];
        let too_long = [7u8; MAX_CACHED_KEY_BYTES + 1];
        c.insert(&longest, v(1));
        c.insert(&too_long, v(2));
        assert_eq!(c.get(&longest), Some(v(1)));
        assert_eq!(
            c.get(&too_long),
            None,
            "a key over the limit is never cached"
        );
        assert_eq!(c.len(), 1);
        c.remove(&too_long);
        // Zero padding does not make a key equal to its zero-extended self.
        c.insert(b"a", v(3));
        assert_eq!(c.get(b"a\0"), None);
        assert_eq!(c.get(b""), None);
        assert_eq!(c.get(b"a"), Some(v(3)));
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
        let fresh = VersionCache::new(100);
        assert!(fresh.is_empty(), "prefaulting leaves nothing behind");
        assert!(
            c.0.young.capacity() >= 50 && c.0.old.capacity() >= 50,
            "both tables presized"
        );
        let before = (c.0.young.capacity(), c.0.old.capacity());
        for i in 10_000..20_000u64 {
            c.insert(&i.to_be_bytes(), v(i));
        }
        let after = (c.0.young.capacity(), c.0.old.capacity());
        assert!(
            after == before || after == (before.1, before.0),
            "generations reuse their tables: {before:?} then {after:?}"
        );
        let mut off = VersionCache::new(0);
        off.insert(b"a", v(1));
        assert!(off.is_empty());
    }
}
