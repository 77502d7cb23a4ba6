//! The [`Engine`] trait every storage backend implements, and the values it takes.

use crate::error::StorageError;
use proto::Record;
use ring::{Token, TokenRange};

/// One record to store under a user key, subject to last-write-wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The user key.
    pub key: Vec<u8>,
    /// The value or tombstone, with its version.
    pub record: Record,
}

/// Where a range scan resumes: strictly after this `(token, user key)` position.
///
/// Build it from the last entry a previous [`Engine::scan`] of the same range returned (see
/// [`ScanCursor::after`]). Resuming by key alone would be wrong: records are ordered by token
/// first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScanCursor {
    /// Token of the last key returned.
    pub token: Token,
    /// The last key returned.
    pub key: Vec<u8>,
}

impl ScanCursor {
    /// A cursor positioned just after `key` (its token is computed with [`ring::token_of`]).
    pub fn after(key: &[u8]) -> Self {
        ScanCursor {
            token: ring::token_of(key),
            key: key.to_vec(),
        }
    }
}

/// A local store of versioned records, kept in token order.
///
/// Calls are synchronous and may block on disk; call them from blocking threads. Implementations
/// are shared between threads (`Send + Sync`).
pub trait Engine: Send + Sync + 'static {
    /// The stored record of `key` (a tombstone included), or `None` if the key was never written.
    fn get(&self, key: &[u8]) -> Result<Option<Record>, StorageError>;

    /// Applies `writes` under last-write-wins, atomically: each write is kept only if its version
    /// is newer than the stored record's ([`Record::supersedes`]), where a later write in the slice
    /// sees the earlier writes of the same slice. The whole call is one atomic write, and the
    /// read-compare-write is atomic with respect to concurrent `apply` calls.
    ///
    /// Returns, for each write in order, whether it was applied.
    fn apply(&self, writes: &[Write]) -> Result<Vec<bool>, StorageError>;

    /// Up to `limit` records whose token is in `range`, in ring order: ascending `(token, key)`
    /// starting just after `range.start`. A wrapping range (`start >= end`) is scanned as two
    /// pieces, `(start, u64::MAX]` then `[0, end]`; `start == end` is the whole ring.
    ///
    /// With `start_after`, the scan resumes strictly after that position (a cursor taken from the
    /// last entry of a previous scan of the same range); a cursor whose token is outside `range`
    /// yields nothing. Fewer than `limit` results means the range is exhausted.
    fn scan(
        &self,
        range: TokenRange,
        start_after: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StorageError>;

    /// The node-local metadata value stored under `name`.
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Stores a node-local metadata value, synced to disk before returning (it holds e.g. the
    /// clock's high-water mark).
    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError>;

    /// Makes every acknowledged write durable (syncs the write-ahead log). No-op in memory.
    fn flush(&self) -> Result<(), StorageError>;

    /// A cheap estimate of the number of stored records, tombstones included (exact in memory).
    fn approximate_len(&self) -> u64;
}
