//! [`RocksEngine`]: the RocksDB backend.
//!
//! Column families (see [`CF_NAMES`]): `data` holds records under their data key (token ++ user
//! key, see [`crate::encoding`]); `meta` holds the database format marker and node-local metadata;
//! `hints` holds hinted-handoff writes under their hint key (target ++ time ++ sequence ++ user
//! key). Missing column families are created on open, and column families this build does not
//! know (written by a newer build) are opened too, as RocksDB requires.
//!
//! Two locks serialize read-compare-write sequences (reads and plain writes take none):
//! `apply_lock` for records ([`Engine::apply`], [`Engine::purge_tombstones`]) and `hint_counts`
//! for hints (every hint write updates the in-memory counts under it, so they stay exact).

use crate::encoding::{
    data_key, decode_data_key, decode_hint_key, decode_record, decode_record_header,
    encode_hint_value, encode_record, hint_target_prefix, hint_time_bound, scan_spans,
    user_meta_key, KeySpan, DB_FORMAT, FORMAT_KEY,
};
use crate::engine::{Applied, Engine, ScanCursor, Write};
use crate::error::StorageError;
use crate::hints::{self, decode_hint, Hint, HintCounts, HintId};
use crate::reservation::ReservationFile;
use crate::version_cache::{FastHash, VersionCache};
use proto::{Record, Version};
use ring::{NodeId, TokenRange};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    DBIteratorWithThreadMode, Direction, IteratorMode, Options, ReadOptions, ReadTier, WriteBatch,
    WriteOptions, DB,
};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Column family of the records.
pub const CF_DATA: &str = "data";
/// Column family of the format marker and node-local metadata.
pub const CF_META: &str = "meta";
/// Column family of the hints (hinted handoff).
pub const CF_HINTS: &str = "hints";
/// Every column family this build uses, created on open if missing.
pub const CF_NAMES: &[&str] = &[CF_DATA, CF_META, CF_HINTS];

/// Tuning of a [`RocksEngine`].
#[derive(Clone, Debug, PartialEq)]
pub struct RocksOptions {
    /// Sync the write-ahead log on every [`Engine::apply`] and every hint write (durable against
    /// power loss, slower).
    /// Without it, acknowledged writes survive a process crash but not an OS crash until the next
    /// [`Engine::flush`]. Metadata writes are always synced.
    pub sync_writes: bool,
    /// Size of the block cache shared by all column families.
    pub block_cache_bytes: usize,
    /// Size of one memtable of the `data` column family. Small by RocksDB's standards (its
    /// default is 64 MiB): every replica write inserts into the memtable's skip list, and a
    /// list that stays within the CPU caches costs far less per insert (measured on a local
    /// 3-node cluster: storage writer CPU per QUORUM write 27 µs at 64 MiB, about 19 µs at
    /// 2 to 8 MiB).
    pub write_buffer_bytes: usize,
    /// Maximum concurrent background flushes and compactions.
    pub max_background_jobs: i32,
    /// Keys whose stored version is cached for apply's read-compare-write (0: no cache).
    pub version_cache_keys: usize,
    /// Size of the `data` memtables' whole-key bloom filter, as a share of the memtable size
    /// (0: none). Apply reads every key the version cache does not know before writing it; for
    /// a new key that read searched the skip list of every memtable in vain, and the filter
    /// answers "absent" without the search. Measured with `examples/apply_bench` under
    /// callgrind, 0.02 against none (before single keys got a point lookup): 11% fewer instructions per write of new keys in batches of
    /// 1 (27,200 against 30,574), 20% in batches of 16 (16,299 against 20,305), under 1% more
    /// for rewrites of cached keys. A filter five times larger (0.1) saved about as many
    /// instructions but less time: its random bit probes miss the CPU caches.
    pub memtable_bloom_ratio: f64,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions {
            sync_writes: false,
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 8 << 20,
            max_background_jobs: 2,
            version_cache_keys: 1 << 18,
            memtable_bloom_ratio: 0.02,
        }
    }
}

/// The write-ahead log kept on disk before RocksDB flushes the column families that hold the
/// oldest log file: three `data` memtables. Every write-ahead log file stays until every
/// column family's data in it is flushed, and `meta` (the clock reservation, rewritten every
/// 500 ms) and `hints` fill their memtables slowly, so under RocksDB's default (four times the
/// memtable memory, about 128 MiB here) a node kept up to 16 files of 8 MiB and replayed them
/// all on restart. At this bound it flushes those small memtables instead.
pub fn max_total_wal_bytes(options: &RocksOptions) -> u64 {
    3 * options.write_buffer_bytes as u64
}

/// An [`Engine`] stored in a RocksDB database.
pub struct RocksEngine {
    db: DB,
    /// Options of record writes (sync per [`RocksOptions::sync_writes`]).
    write_opts: WriteOptions,
    /// Options of metadata writes (always synced).
    sync_opts: WriteOptions,
    /// Options of reads that must not touch the disk (memtables and block cache only).
    cache_only: ReadOptions,
    /// Options of apply's version lookups (the defaults, made once instead of per lookup).
    lookups: ReadOptions,
    /// Held across the read-compare-write of [`Engine::apply`] and [`Engine::purge_tombstones`]
    /// so concurrent batches serialize; it guards the cache of recently stored versions, which
    /// both keep exact.
    apply_lock: Mutex<VersionCache>,
    /// Hints per target, rebuilt by one scan on open; held across every hint write so the
    /// counts change exactly with what is on disk.
    hint_counts: Mutex<HintCounts>,
    /// The clock reservation, in a file of its own (a synced RocksDB write holds up every
    /// record write queued behind it until its sync ends).
    clock: ReservationFile,
    path: PathBuf,
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RocksEngine {
    /// Opens (creating if needed) the database at `path`, creating missing column families and
    /// checking the on-disk format: a new database is stamped with [`DB_FORMAT`]; one with a newer
    /// format is refused with [`StorageError::NewerFormat`].
    pub fn open(path: &Path, options: RocksOptions) -> Result<RocksEngine, StorageError> {
        std::fs::create_dir_all(path)?;
        let cache = Cache::new_lru_cache(options.block_cache_bytes);

        let mut db_opts = Options::default();
        // Compactions are background work that comes in bursts (hundreds of milliseconds of
        // CPU each); at a lower CPU and I/O priority they yield to request handling instead of
        // showing up as tail latency. Flushes keep normal priority: a starved flush would stall
        // writes.
        let mut env = rocksdb::Env::new()?;
        env.lower_thread_pool_cpu_priority();
        env.lower_thread_pool_io_priority();
        db_opts.set_env(&env);
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(options.max_background_jobs);
        db_opts.set_bytes_per_sync(1 << 20);
        db_opts.set_max_total_wal_size(max_total_wal_bytes(&options));

        // A database that does not exist yet has no column families to list.
        let existing = DB::list_cf(&db_opts, path).unwrap_or_default();
        let mut descriptors: Vec<ColumnFamilyDescriptor> = CF_NAMES
            .iter()
            .map(|&name| ColumnFamilyDescriptor::new(name, cf_options(name, &options, &cache)))
            .collect();
        for name in existing {
            if !CF_NAMES.contains(&name.as_str()) && name != rocksdb::DEFAULT_COLUMN_FAMILY_NAME {
                tracing::warn!(cf = %name, "opening unknown column family");
                descriptors.push(ColumnFamilyDescriptor::new(name, Options::default()));
            }
        }
        let db = DB::open_cf_descriptors(&db_opts, path, descriptors)?;

        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(options.sync_writes);
        let mut sync_opts = WriteOptions::default();
        sync_opts.set_sync(true);
        let mut cache_only = ReadOptions::default();
        cache_only.set_read_tier(ReadTier::BlockCache);
        let engine = RocksEngine {
            db,
            write_opts,
            sync_opts,
            cache_only,
            lookups: ReadOptions::default(),
            apply_lock: Mutex::new(VersionCache::new(options.version_cache_keys)),
            hint_counts: Mutex::new(HintCounts::default()),
            clock: ReservationFile::open(path)?,
            path: path.to_path_buf(),
        };
        engine.check_format()?;
        engine.load_hint_counts()?;
        tracing::info!(path = %path.display(), "storage opened");
        Ok(engine)
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or(StorageError::MissingColumnFamily(name))
    }

    /// Counts the stored hints per target (one scan of the hints column family), and moves the
    /// hint sequence past every sequence number on disk.
    fn load_hint_counts(&self) -> Result<(), StorageError> {
        let cf = self.cf(CF_HINTS)?;
        let mut counts = HintCounts::default();
        let mut ro = ReadOptions::default();
        ro.fill_cache(false);
        for item in self.db.iterator_cf_opt(cf, ro, IteratorMode::Start) {
            let (raw_key, _) = item?;
            let parts = decode_hint_key(&raw_key)?;
            counts.add(parts.target, 1);
            hints::observe_sequence(parts.sequence);
        }
        *self.counts() = counts;
        Ok(())
    }

    // The mutexes guard no invariant a panic could break halfway (the counts are only changed
    // after a successful write), so poisoning is harmless.
    fn counts(&self) -> MutexGuard<'_, HintCounts> {
        self.hint_counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_apply(&self) -> MutexGuard<'_, VersionCache> {
        self.apply_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An iterator over the data keys of `span` that does not fill the block cache (range scans
    /// are background work: keep them from evicting hot blocks).
    fn span_iter(&self, cf: &ColumnFamily, span: &KeySpan) -> DBIteratorWithThreadMode<'_, DB> {
        let mut ro = ReadOptions::default();
        ro.fill_cache(false);
        if let Some(upper) = &span.upper {
            ro.set_iterate_upper_bound(upper.clone());
        }
        let mode = IteratorMode::From(&span.lower, Direction::Forward);
        self.db.iterator_cf_opt(cf, ro, mode)
    }

    /// Up to `limit` tombstones of `range` older than `older_than_hlc`. Reads without any lock;
    /// [`Engine::purge_tombstones`] re-checks each under it.
    fn purge_candidates(
        &self,
        range: TokenRange,
        older_than_hlc: u64,
        limit: usize,
    ) -> Result<Vec<PurgeCandidate>, StorageError> {
        let data = self.cf(CF_DATA)?;
        let mut out = Vec::new();
        for span in scan_spans(range, None) {
            for item in self.span_iter(data, &span) {
                if out.len() >= limit {
                    return Ok(out);
                }
                let (raw_key, raw_value) = item?;
                let (_, key) = decode_data_key(&raw_key)?;
                let (version, body) = decode_record_header(key, &raw_value)?;
                if body.is_none() && version.hlc < older_than_hlc {
                    out.push(PurgeCandidate {
                        data_key: raw_key.to_vec(),
                        key: key.to_vec(),
                        version,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Stamps a new database with [`DB_FORMAT`], or checks the stamp of an existing one.
    fn check_format(&self) -> Result<(), StorageError> {
        let meta = self.cf(CF_META)?;
        match self.db.get_cf(meta, FORMAT_KEY)? {
            None => {
                self.db
                    .put_cf_opt(meta, FORMAT_KEY, [DB_FORMAT], &self.sync_opts)?;
                Ok(())
            }
            Some(v) => match v[..] {
                [found] if found > DB_FORMAT => Err(StorageError::NewerFormat {
                    found,
                    supported: DB_FORMAT,
                }),
                [found] if found == DB_FORMAT => Ok(()),
                _ => Err(StorageError::Corrupt {
                    key: FORMAT_KEY.to_vec(),
                    reason: format!("unknown database format marker {v:?}"),
                }),
            },
        }
    }
}

/// A tombstone [`Engine::purge_tombstones`] found and will re-check under the apply lock.
struct PurgeCandidate {
    data_key: Vec<u8>,
    key: Vec<u8>,
    version: Version,
}

/// Options of one column family. Records are small: bloom filters make point reads of absent keys
/// cheap, lz4 is fast, and index/filter blocks live in the shared cache.
fn cf_options(name: &str, options: &RocksOptions, cache: &Cache) -> Options {
    let mut block = BlockBasedOptions::default();
    block.set_block_cache(cache);
    block.set_bloom_filter(10.0, false);
    block.set_cache_index_and_filter_blocks(true);
    block.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let mut o = Options::default();
    o.set_block_based_table_factory(&block);
    o.set_compression_type(DBCompressionType::Lz4);
    o.set_bottommost_compression_type(DBCompressionType::Lz4);
    o.set_level_compaction_dynamic_level_bytes(true);
    if name == CF_DATA {
        o.set_write_buffer_size(options.write_buffer_bytes);
        if options.memtable_bloom_ratio > 0.0 {
            o.set_memtable_prefix_bloom_ratio(options.memtable_bloom_ratio);
            o.set_memtable_whole_key_filtering(true);
        }
    } else {
        o.set_write_buffer_size(4 << 20);
    }
    if name == CF_HINTS {
        // Hints are a queue: written, read from the oldest, deleted. Compact files dense with
        // deletions so reading from the head does not wade through tombstones.
        o.add_compact_on_deletion_collector_factory(1024, 512, 0.5);
    }
    o
}

impl Engine for RocksEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        let data = self.cf(CF_DATA)?;
        match self.db.get_pinned_cf(data, data_key(key))? {
            Some(raw) => Ok(Some(decode_record(key, &raw)?)),
            None => Ok(None),
        }
    }

    fn get_cached(&self, key: &[u8]) -> Result<Option<Option<Record>>, StorageError> {
        let data = self.cf(CF_DATA)?;
        match self
            .db
            .get_pinned_cf_opt(data, data_key(key), &self.cache_only)
        {
            Ok(Some(raw)) => Ok(Some(Some(decode_record(key, &raw)?))),
            Ok(None) => Ok(Some(None)),
            // Not in a memtable or the block cache: answering would read the disk.
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Record>>, StorageError> {
        let data = self.cf(CF_DATA)?;
        let dks: Vec<Vec<u8>> = keys.iter().map(|k| data_key(k)).collect();
        self.db
            .batched_multi_get_cf(data, &dks, false)
            .into_iter()
            .zip(keys)
            .map(|(r, key)| match r? {
                Some(raw) => Ok(Some(decode_record(key, &raw)?)),
                None => Ok(None),
            })
            .collect()
    }

    fn apply(&self, writes: &[Write]) -> Result<Vec<Applied>, StorageError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let data = self.cf(CF_DATA)?;
        let mut cache = self.lock_apply();
        let dks: Vec<Vec<u8>> = writes.iter().map(|w| data_key(&w.key)).collect();
        // The stored version of every write's key: from the cache, else from RocksDB.
        let mut stored: Vec<Option<Option<Version>>> =
            writes.iter().map(|w| cache.get(&w.key).map(Some)).collect();
        let version_in = |i: usize, raw: Option<&[u8]>| -> Result<_, StorageError> {
            Ok(Some(match raw {
                Some(raw) => Some(decode_record_header(&writes[i].key, raw)?.0),
                None => None,
            }))
        };
        let mut missing: Vec<usize> = (0..writes.len()).filter(|&i| stored[i].is_none()).collect();
        if let [i] = missing[..] {
            // One key (the usual case at low load): a point lookup costs less than a batch.
            let raw = self.db.get_pinned_cf_opt(data, &dks[i], &self.lookups)?;
            stored[i] = version_in(i, raw.as_deref())?;
        } else if !missing.is_empty() {
            // One MultiGet, in key order so RocksDB need not sort the keys again.
            missing.sort_by(|&a, &b| dks[a].cmp(&dks[b]));
            let lookups = self.db.batched_multi_get_cf_opt(
                data,
                missing.iter().map(|&i| &dks[i]),
                true,
                &self.lookups,
            );
            for (&i, raw) in missing.iter().zip(lookups) {
                stored[i] = version_in(i, raw?.as_deref())?;
            }
        }
        // Versions already chosen earlier in this slice, which later writes must compare against.
        let mut pending: HashMap<&[u8], Version, FastHash> = HashMap::default();
        let mut applied = Vec::with_capacity(writes.len());
        let mut keep = Vec::with_capacity(writes.len());
        for (i, (w, stored)) in writes.iter().zip(stored).enumerate() {
            let previous = match pending.get(w.key.as_slice()) {
                Some(&chosen) => Some(chosen),
                None => stored.flatten(),
            };
            if previous.is_none_or(|p| w.record.version > p) {
                pending.insert(&w.key, w.record.version);
                applied.push(Applied::Stored { previous });
                keep.push(i);
            } else {
                applied.push(Applied::Ignored);
            }
        }
        // Into the batch in key order (stable, so two writes of one key keep theirs): the
        // memtable's skip list then inserts each key near the previous one instead of searching
        // from the top every time.
        keep.sort_by(|&a, &b| dks[a].cmp(&dks[b]));
        let mut batch = WriteBatch::default();
        for i in keep {
            batch.put_cf(data, &dks[i], encode_record(&writes[i].record));
        }
        if !batch.is_empty() {
            self.db.write_opt(batch, &self.write_opts)?;
            for (key, version) in pending {
                cache.insert(key, version);
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
        let data = self.cf(CF_DATA)?;
        let mut out = Vec::new();
        for span in scan_spans(range, start_after) {
            for item in self.span_iter(data, &span) {
                if out.len() >= limit {
                    return Ok(out);
                }
                let (raw_key, raw_value) = item?;
                let (_, key) = decode_data_key(&raw_key)?;
                let record = decode_record(key, &raw_value)?;
                out.push((key.to_vec(), record));
            }
        }
        Ok(out)
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let meta = self.cf(CF_META)?;
        Ok(self.db.get_cf(meta, user_meta_key(name))?)
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        let meta = self.cf(CF_META)?;
        self.db
            .put_cf_opt(meta, user_meta_key(name), value, &self.sync_opts)?;
        Ok(())
    }

    fn clock_reservation(&self) -> Result<u64, StorageError> {
        Ok(self.clock.load())
    }

    fn put_clock_reservation(&self, hlc: u64) -> Result<(), StorageError> {
        self.clock.store(hlc)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    fn approximate_len(&self) -> u64 {
        let Ok(data) = self.cf(CF_DATA) else {
            return 0;
        };
        match self
            .db
            .property_int_value_cf(data, "rocksdb.estimate-num-keys")
        {
            Ok(n) => n.unwrap_or(0),
            Err(e) => {
                tracing::debug!(error = %e, "estimate-num-keys unavailable");
                0
            }
        }
    }

    fn purge_tombstones(
        &self,
        range: TokenRange,
        older_than_hlc: u64,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Version)>, StorageError> {
        // Find candidates without the lock (the scan may be long), then re-check each under it.
        let candidates = self.purge_candidates(range, older_than_hlc, limit)?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let data = self.cf(CF_DATA)?;
        let mut cache = self.lock_apply();
        let mut batch = WriteBatch::default();
        let mut purged = Vec::with_capacity(candidates.len());
        for c in candidates {
            let Some(raw) = self.db.get_pinned_cf(data, &c.data_key)? else {
                continue;
            };
            // Still the very tombstone found: purge it. Anything else was written meanwhile.
            if decode_record_header(&c.key, &raw)? == (c.version, None) {
                batch.delete_cf(data, &c.data_key);
                purged.push((c.key, c.version));
            }
        }
        if !batch.is_empty() {
            self.db.write_opt(batch, &self.write_opts)?;
            for (key, _) in &purged {
                cache.remove(key);
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
        let cf = self.cf(CF_HINTS)?;
        let raw = hints::new_hint_key(target, key, now_ms);
        let mut counts = self.counts();
        self.db
            .put_cf_opt(cf, &raw, encode_hint_value(record), &self.write_opts)?;
        counts.add(target, 1);
        Ok(HintId::from_key(raw))
    }

    fn hints(
        &self,
        target: NodeId,
        after: Option<&HintId>,
        limit: usize,
    ) -> Result<Vec<(HintId, Hint)>, StorageError> {
        let cf = self.cf(CF_HINTS)?;
        let prefix = hint_target_prefix(target);
        // Just after `after` (its successor in byte order) when it is within or past this
        // target's span; otherwise the start of the span.
        let lower = match after {
            Some(id) if id.as_bytes() >= &prefix[..] => [id.as_bytes(), &[0]].concat(),
            _ => prefix.to_vec(),
        };
        let mut ro = ReadOptions::default();
        if let Some(next) = target.checked_add(1) {
            ro.set_iterate_upper_bound(hint_target_prefix(next).to_vec());
        }
        let mode = IteratorMode::From(&lower, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf_opt(cf, ro, mode) {
            if out.len() >= limit {
                break;
            }
            let (raw_key, raw_value) = item?;
            if !raw_key.starts_with(&prefix) {
                break;
            }
            out.push(decode_hint(&raw_key, &raw_value)?);
        }
        Ok(out)
    }

    fn delete_hints(&self, ids: &[HintId]) -> Result<(), StorageError> {
        let cf = self.cf(CF_HINTS)?;
        // Duplicates in `ids` must not count twice.
        let ids: BTreeSet<&HintId> = ids.iter().collect();
        let mut counts = self.counts();
        let mut batch = WriteBatch::default();
        let mut deleted: Vec<NodeId> = Vec::with_capacity(ids.len());
        for id in ids {
            // Only ids that exist are deleted and counted.
            if self.db.get_pinned_cf(cf, id.as_bytes())?.is_some() {
                if let Some(target) = id.target() {
                    batch.delete_cf(cf, id.as_bytes());
                    deleted.push(target);
                }
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.db.write_opt(batch, &self.write_opts)?;
        for target in deleted {
            counts.sub(target, 1);
        }
        Ok(())
    }

    fn hint_targets(&self) -> Result<Vec<(NodeId, u64)>, StorageError> {
        Ok(self.counts().list())
    }

    fn drop_hints_older_than(&self, target: NodeId, cutoff_ms: u64) -> Result<u64, StorageError> {
        let cf = self.cf(CF_HINTS)?;
        let lower = hint_target_prefix(target).to_vec();
        let upper = hint_time_bound(target, cutoff_ms);
        let mut counts = self.counts();
        // Count what the range delete will remove (keys only matter; values are not decoded).
        let mut ro = ReadOptions::default();
        ro.fill_cache(false);
        ro.set_iterate_upper_bound(upper.clone());
        let mut n = 0u64;
        for item in self
            .db
            .iterator_cf_opt(cf, ro, IteratorMode::From(&lower, Direction::Forward))
        {
            item?;
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, &lower, &upper);
        self.db.write_opt(batch, &self.write_opts)?;
        counts.sub(target, n);
        Ok(n)
    }
}
