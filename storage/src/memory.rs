//! [`MemEngine`]: an in-memory backend with the same semantics and key order as RocksDB, for tests
//! and deterministic simulation.

use crate::encoding::{data_key, decode_data_key, scan_spans};
use crate::engine::{Engine, ScanCursor, Write};
use crate::error::StorageError;
use proto::Record;
use ring::TokenRange;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Default)]
struct Inner {
    /// Keyed by data key (token BE ++ user key), like the RocksDB `data` column family.
    data: BTreeMap<Vec<u8>, Record>,
    meta: HashMap<String, Vec<u8>>,
}

/// An in-memory [`Engine`]: a `BTreeMap` ordered like the RocksDB backend, under one lock.
#[derive(Default)]
pub struct MemEngine {
    inner: RwLock<Inner>,
}

impl MemEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
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

impl Engine for MemEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        Ok(self.read().data.get(&data_key(key)).cloned())
    }

    fn apply(&self, writes: &[Write]) -> Result<Vec<bool>, StorageError> {
        let mut inner = self.write();
        let mut applied = Vec::with_capacity(writes.len());
        for w in writes {
            let k = data_key(&w.key);
            let ok = w.record.supersedes(inner.data.get(&k));
            if ok {
                inner.data.insert(k, w.record.clone());
            }
            applied.push(ok);
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
            if out.len() >= limit {
                break;
            }
            let upper = match span.upper {
                Some(u) => Bound::Excluded(u),
                None => Bound::Unbounded,
            };
            for (k, record) in inner.data.range((Bound::Included(span.lower), upper)) {
                if out.len() >= limit {
                    break;
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

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn approximate_len(&self) -> u64 {
        self.read().data.len() as u64
    }
}
