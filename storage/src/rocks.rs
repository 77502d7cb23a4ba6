//! [`RocksEngine`]: the RocksDB backend.
//!
//! Column families (see [`CF_NAMES`]): `data` holds records under their data key (token ++ user
//! key, see [`crate::encoding`]); `meta` holds the database format marker and node-local metadata.
//! Missing column families are created on open, and column families this build does not know
//! (written by a newer build) are opened too, as RocksDB requires.

use crate::encoding::{
    data_key, decode_data_key, decode_record, encode_record, scan_spans, user_meta_key, DB_FORMAT,
    FORMAT_KEY,
};
use crate::engine::{Engine, ScanCursor, Write};
use crate::error::StorageError;
use proto::Record;
use ring::TokenRange;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction,
    IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Column family of the records.
pub const CF_DATA: &str = "data";
/// Column family of the format marker and node-local metadata.
pub const CF_META: &str = "meta";
/// Every column family this build uses, created on open if missing. (Hints will get their own.)
pub const CF_NAMES: &[&str] = &[CF_DATA, CF_META];

/// Tuning of a [`RocksEngine`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RocksOptions {
    /// Sync the write-ahead log on every [`Engine::apply`] (durable against power loss, slower).
    /// Without it, acknowledged writes survive a process crash but not an OS crash until the next
    /// [`Engine::flush`]. Metadata writes are always synced.
    pub sync_writes: bool,
    /// Size of the block cache shared by all column families.
    pub block_cache_bytes: usize,
    /// Size of one memtable of the `data` column family.
    pub write_buffer_bytes: usize,
    /// Maximum concurrent background flushes and compactions.
    pub max_background_jobs: i32,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions {
            sync_writes: false,
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
            max_background_jobs: 2,
        }
    }
}

/// An [`Engine`] stored in a RocksDB database.
pub struct RocksEngine {
    db: DB,
    /// Options of record writes (sync per [`RocksOptions::sync_writes`]).
    write_opts: WriteOptions,
    /// Options of metadata writes (always synced).
    sync_opts: WriteOptions,
    /// Held across the read-compare-write of [`Engine::apply`] so concurrent batches serialize.
    apply_lock: Mutex<()>,
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
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(options.max_background_jobs);
        db_opts.set_bytes_per_sync(1 << 20);

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
        let engine = RocksEngine {
            db,
            write_opts,
            sync_opts,
            apply_lock: Mutex::new(()),
            path: path.to_path_buf(),
        };
        engine.check_format()?;
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
    } else {
        o.set_write_buffer_size(4 << 20);
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

    fn apply(&self, writes: &[Write]) -> Result<Vec<bool>, StorageError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let data = self.cf(CF_DATA)?;
        // The lock guards no data, only the read-compare-write below: poisoning is harmless.
        let _guard = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        // Records already chosen earlier in this slice, which later writes must compare against.
        let mut pending: HashMap<&[u8], &Record> = HashMap::new();
        let mut applied = Vec::with_capacity(writes.len());
        for w in writes {
            let dk = data_key(&w.key);
            let ok = match pending.get(w.key.as_slice()) {
                Some(&chosen) => w.record.supersedes(Some(chosen)),
                None => {
                    let stored = match self.db.get_pinned_cf(data, &dk)? {
                        Some(raw) => Some(decode_record(&w.key, &raw)?),
                        None => None,
                    };
                    w.record.supersedes(stored.as_ref())
                }
            };
            if ok {
                batch.put_cf(data, &dk, encode_record(&w.record));
                pending.insert(&w.key, &w.record);
            }
            applied.push(ok);
        }
        if !batch.is_empty() {
            self.db.write_opt(batch, &self.write_opts)?;
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
            if out.len() >= limit {
                break;
            }
            let mut ro = ReadOptions::default();
            // Range scans are background work: keep them from evicting hot blocks.
            ro.fill_cache(false);
            if let Some(upper) = span.upper {
                ro.set_iterate_upper_bound(upper);
            }
            let mode = IteratorMode::From(&span.lower, Direction::Forward);
            for item in self.db.iterator_cf_opt(data, ro, mode) {
                if out.len() >= limit {
                    break;
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
}
