//! The [`Engine`] trait every storage backend implements, and the values it takes and returns:
//! [`Write`] and [`Applied`] for records, [`ScanCursor`] for range scans (hints have their own
//! types in [`crate::hints`]).

use crate::error::StorageError;
use crate::hints::{Hint, HintId};
use proto::{Record, Version};
use ring::{NodeId, Token, TokenRange};

/// One record to store under a user key, subject to last-write-wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The user key.
    pub key: Vec<u8>,
    /// The value or tombstone, with its version.
    pub record: Record,
}

/// What [`Engine::apply`] did with one [`Write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The write was newer than what was stored and is now the key's record.
    Stored {
        /// Version of the record it replaced (a tombstone included), `None` if the key had no
        /// record. For a later write of the same key in one batch, the earlier write's version.
        /// With the new version, this is what an incremental Merkle tree needs
        /// ([`crate::merkle::TreeSet::update`]).
        previous: Option<Version>,
    },
    /// The stored record was as new or newer; nothing changed.
    Ignored,
}

impl Applied {
    /// Whether the write was stored.
    pub fn stored(&self) -> bool {
        matches!(self, Applied::Stored { .. })
    }
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

    /// The stored record of `key` if it can be found without any disk read (memtables and
    /// caches only); `Ok(None)` when finding out would need one. Never blocks on I/O, so callers
    /// may use it on an async runtime and fall back to [`Engine::get`] on a blocking thread.
    fn get_cached(&self, key: &[u8]) -> Result<Option<Option<Record>>, StorageError> {
        let _ = key;
        Ok(None)
    }

    /// The stored records of many keys at once, in the order given (engines may batch the
    /// lookups: RocksDB's MultiGet shares one snapshot and one pass over the levels).
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Record>>, StorageError> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Applies `writes` under last-write-wins, atomically: each write is kept only if its version
    /// is newer than the stored record's ([`Record::supersedes`]), where a later write in the slice
    /// sees the earlier writes of the same slice. The whole call is one atomic write, and the
    /// read-compare-write is atomic with respect to concurrent `apply` calls.
    ///
    /// Returns, for each write in order, whether it was stored and which version it replaced.
    fn apply(&self, writes: &[Write]) -> Result<Vec<Applied>, StorageError>;

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
    /// membership). In RocksDB a synced write holds up the record writes queued behind it, so
    /// nothing written often belongs here.
    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError>;

    /// The clock reservation last stored by [`Engine::put_clock_reservation`] (0 if none).
    fn clock_reservation(&self) -> Result<u64, StorageError>;

    /// Stores the node clock's reservation (a timestamp above everything it has issued), durable
    /// before returning. Apart from the records: no record write waits for it (RocksDB keeps it
    /// in a file of its own, [`crate::reservation`]). A smaller value than the stored one is
    /// ignored.
    fn put_clock_reservation(&self, hlc: u64) -> Result<(), StorageError>;

    /// Makes every acknowledged write durable (syncs the write-ahead log). No-op in memory.
    fn flush(&self) -> Result<(), StorageError>;

    /// A cheap estimate of the number of stored records, tombstones included (exact in memory).
    fn approximate_len(&self) -> u64;

    /// Deletes up to `limit` tombstones whose token is in `range` and whose `version.hlc` is below
    /// `older_than_hlc`, and returns the purged `(key, version)` pairs (so the caller can take
    /// them out of its Merkle trees). Values are never touched.
    ///
    /// Atomic with respect to [`Engine::apply`]: a tombstone overwritten between finding it and
    /// deleting it is left alone. Each call looks from the start of `range`; call again until
    /// the result is empty. (An empty result can, rarely, also mean that every tombstone found
    /// was overwritten meanwhile.)
    fn purge_tombstones(
        &self,
        range: TokenRange,
        older_than_hlc: u64,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Version)>, StorageError>;

    /// Stores a hint: `record` of `key`, to be handed to `target` later. One hint per call (a
    /// write missed by two replicas is two hints). `now_ms` is the storage time, by which hints
    /// are ordered and expired. Durability follows the backend's setting for record writes.
    fn put_hint(
        &self,
        target: NodeId,
        key: &[u8],
        record: &Record,
        now_ms: u64,
    ) -> Result<HintId, StorageError>;

    /// Up to `limit` hints for `target`, oldest first, starting strictly after `after` (the last
    /// id of a previous page) if given. Fewer than `limit` means there are no more.
    fn hints(
        &self,
        target: NodeId,
        after: Option<&HintId>,
        limit: usize,
    ) -> Result<Vec<(HintId, Hint)>, StorageError>;

    /// Deletes the given hints in one atomic batch. Ids that do not exist (already deleted) are
    /// ignored.
    fn delete_hints(&self, ids: &[HintId]) -> Result<(), StorageError>;

    /// Every target that has hints, with how many, ascending by target. Cheap: counts are kept
    /// in memory.
    fn hint_targets(&self) -> Result<Vec<(NodeId, u64)>, StorageError>;

    /// Deletes every hint for `target` stored before `cutoff_ms` (`stored_at_ms < cutoff_ms`) and
    /// returns how many were deleted.
    fn drop_hints_older_than(&self, target: NodeId, cutoff_ms: u64) -> Result<u64, StorageError>;
}
