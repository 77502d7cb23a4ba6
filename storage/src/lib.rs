//! ringkv's local storage engine: versioned records (a value or a tombstone, each with a
//! [`proto::Version`]) kept in token order, behind one [`Engine`] trait with a RocksDB backend
//! ([`RocksEngine`]) and an in-memory backend ([`MemEngine`]).
//!
//! Records are stored under their ring token followed by their user key, so every
//! [`ring::TokenRange`] is one contiguous scan (anti-entropy, streaming on join/leave). Writes are
//! last-write-wins: [`Engine::apply`] keeps a record only if its version is newer than the stored
//! one, atomically for the whole batch.
//!
//! The engine is synchronous; the node calls it from blocking threads.
//!
//! # Layout
//!
//! - [`engine`]: the [`Engine`] trait, [`Write`] (one record to apply) and [`ScanCursor`] (where a
//!   range scan resumes).
//! - [`encoding`]: the persisted formats: data keys (token ++ user key), record values (format
//!   byte, version, tag, value), the meta keys, and how a token range maps to key spans.
//! - [`memory`]: [`MemEngine`], a `BTreeMap` backend for tests and simulation.
//! - [`rocks`]: [`RocksEngine`], the RocksDB backend, its [`RocksOptions`] and column families.
//! - [`error`]: the [`StorageError`] type.
//!
//! Hints and Merkle trees will live in their own modules (and, for hints, their own column family,
//! see [`rocks::CF_NAMES`]).

pub mod encoding;
pub mod engine;
pub mod error;
pub mod memory;
pub mod rocks;

pub use engine::{Engine, ScanCursor, Write};
pub use error::StorageError;
pub use memory::MemEngine;
pub use rocks::{RocksEngine, RocksOptions};
