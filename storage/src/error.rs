//! Errors returned by the storage engines.

/// Everything that can go wrong in a storage engine.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A stored key or value could not be decoded (unknown format, truncated, bad tag...).
    #[error("corrupt entry under key {key:?}: {reason}")]
    Corrupt {
        /// The user key when it is known, otherwise the raw stored key.
        key: Vec<u8>,
        /// What was wrong with it.
        reason: String,
    },
    /// The database was written by a newer ringkv with an on-disk format this build cannot read.
    #[error(
        "database has on-disk format {found}, newer than the newest supported format {supported}; \
         run a newer ringkv or point it at another directory"
    )]
    NewerFormat {
        /// The format found on disk.
        found: u8,
        /// The newest format this build supports.
        supported: u8,
    },
    /// A column family that open() creates is missing (should never happen).
    #[error("column family {0:?} is missing")]
    MissingColumnFamily(&'static str),
    /// A filesystem error outside RocksDB (e.g. creating the data directory).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
