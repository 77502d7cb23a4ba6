//! [`MemEngine`]: an in-memory backend with the same semantics and key order as RocksDB, for tests
//! and deterministic simulation. Records and hints are `BTreeMap`s keyed like the RocksDB column
//! families, under one lock.

use crate::encoding::{
    data_key, decode_data_key, hint_target_prefix, hint_time_bound, scan_spans, KeySpan,
};
use crate::engine::{Applied, Engine, ScanCursor, Write};
use crate::error::StorageError;
use crate::hints::{new_hint_key, Hint, HintCounts, HintId};
use proto::{Record, Version};
use ring::{NodeId, TokenRange};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Default)]
struct Inner {
    /// Keyed by data key (token BE ++ user key), like the RocksDB `data` column family.
    data: BTreeMap<Vec<u8>, Record>,
    meta: HashMap<String, Vec<u8>>,
    /// What [`Engine::put_clock_reservation`] stored.
    clock_reservation: u64,
    /// Keyed by hint key (the [`HintId`] bytes), like the RocksDB `hints` column family.
    hints: BTreeMap<Vec<u8>, Hint>,
    hint_counts: HintCounts,
}

/// An in-memory [`Engine`]: `BTreeMap`s ordered like the RocksDB backend, under one lock.
#[derive(Default)]
pub struct MemEngine {
    inner: RwLock<Inner>,
    /// Whether [`Engine::apply`] waits (see [`MemEngine::hold_writes`]).
    held: Mutex<bool>,
    resumed: Condvar,
}

impl MemEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every [`Engine::apply`] wait until [`MemEngine::resume_writes`], as a storage
    /// device that stopped answering would (for tests of a stalled storage writer). Reads and
    /// everything else go on.
    pub fn hold_writes(&self) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    /// Lets held and later writes through.
    pub fn resume_writes(&self) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.resumed.notify_all();
    }

    fn wait_while_held(&self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while *held {
            held = self.resumed.wait(held).unwrap_or_else(|p| p.into_inner());
        }
    }

    // A panic while holding the lock cannot leave the maps half-updated in a way that breaks
    // invariants (each insert is atomic), so a poisoned lock is still usable.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The entries of `map` in `span`.
fn span_range<'a, V>(
    map: &'a BTreeMap<Vec<u8>, V>,
    span: &KeySpan,
) -> std::collections::btree_map::Range<'a, Vec<u8>, V> {
    let upper = match &span.upper {
        Some(u) => Bound::Excluded(u.clone()),
        None => Bound::Unbounded,
    };
    map.range((Bound::Included(span.lower.clone()), upper))
}

impl Engine for MemEngine {
    fn get_cached(&self, key: &[u8]) -> Result<Option<Option<Record>>, StorageError> {
        self.get(key).map(Some)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        Ok(self.read().data.get(&data_key(key)).cloned())
    }

    fn apply(&self, writes: &[Write]) -> Result<Vec<Applied>, StorageError> {
        self.wait_while_held();
        let mut inner = self.write();
        let mut applied = Vec::with_capacity(writes.len());
        for w in writes {
            let k = data_key(&w.key);
            let stored = inner.data.get(&k);
            if w.record.supersedes(stored) {
                let previous = stored.map(|r| r.version);
                inner.data.insert(k, w.record.clone());
                applied.push(Applied::Stored { previous });
            } else {
                applied.push(Applied::Ignored);
            }
        }
        Ok(applied)
    }

    fn scan(
        &self,
        range: TokenRange,
        start_after: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StorageError> {
        let inner = self.read();
        let mut out = Vec::new();
        for span in scan_spans(range, start_after) {
            for (k, record) in span_range(&inner.data, &span) {
                if out.len() >= limit {
                    return Ok(out);
                }
                let (_, key) = decode_data_key(k)?;
                out.push((key.to_vec(), record.clone()));
            }
        }
        Ok(out)
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.read().meta.get(name).cloned())
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        self.write().meta.insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    fn clock_reservation(&self) -> Result<u64, StorageError> {
        Ok(self.read().clock_reservation)
    }

    fn put_clock_reservation(&self, hlc: u64) -> Result<(), StorageError> {
        let mut inner = self.write();
        inner.clock_reservation = inner.clock_reservation.max(hlc);
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn approximate_len(&self) -> u64 {
        self.read().data.len() as u64
    }

    fn purge_tombstones(
        &self,
        range: TokenRange,
        older_than_hlc: u64,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Version)>, StorageError> {
        // One write lock over find-and-delete: atomic with respect to apply by construction.
        let mut inner = self.write();
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        'spans: for span in scan_spans(range, None) {
            for (k, record) in span_range(&inner.data, &span) {
                if doomed.len() >= limit {
                    break 'spans;
                }
                if record.is_tombstone() && record.version.hlc < older_than_hlc {
                    doomed.push(k.clone());
                }
            }
        }
        let mut purged = Vec::with_capacity(doomed.len());
        for k in doomed {
            if let Some(record) = inner.data.remove(&k) {
                let (_, key) = decode_data_key(&k)?;
                purged.push((key.to_vec(), record.version));
            }
        }
        Ok(purged)
    }

    fn put_hint(
        &self,
        target: NodeId,
        key: &[u8],
        record: &Record,
        now_ms: u64,
    ) -> Result<HintId, StorageError> {
        let raw = new_hint_key(target, key, now_ms);
        let hint = Hint {
            target,
            key: key.to_vec(),
            record: record.clone(),
            stored_at_ms: now_ms,
        };
        let mut inner = self.write();
        inner.hints.insert(raw.clone(), hint);
        inner.hint_counts.add(target, 1);
        Ok(HintId::from_key(raw))
    }

    fn hints(
        &self,
        target: NodeId,
        after: Option<&HintId>,
        limit: usize,
    ) -> Result<Vec<(HintId, Hint)>, StorageError> {
        let prefix = hint_target_prefix(target);
        let lower = match after {
            Some(id) if id.as_bytes() >= &prefix[..] => Bound::Excluded(id.as_bytes().to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        let inner = self.read();
        Ok(inner
            .hints
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .take(limit)
            .map(|(k, h)| (HintId::from_key(k.clone()), h.clone()))
            .collect())
    }

    fn delete_hints(&self, ids: &[HintId]) -> Result<(), StorageError> {
        let mut inner = self.write();
        for id in ids {
            if let Some(hint) = inner.hints.remove(id.as_bytes()) {
                inner.hint_counts.sub(hint.target, 1);
            }
        }
        Ok(())
    }

    fn hint_targets(&self) -> Result<Vec<(NodeId, u64)>, StorageError> {
        Ok(self.read().hint_counts.list())
    }

    fn drop_hints_older_than(&self, target: NodeId, cutoff_ms: u64) -> Result<u64, StorageError> {
        let lower = hint_target_prefix(target).to_vec();
        let upper = hint_time_bound(target, cutoff_ms);
        let mut inner = self.write();
        let doomed: Vec<Vec<u8>> = inner
            .hints
            .range(lower..upper)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &doomed {
            inner.hints.remove(k);
        }
        let n = doomed.len() as u64;
        inner.hint_counts.sub(target, n);
        Ok(n)
    }
}
