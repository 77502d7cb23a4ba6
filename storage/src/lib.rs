//! ringkv's local storage engine: versioned records (a value or a tombstone, each with a
//! [`proto::Version`]) kept in token order, behind one [`Engine`] trait with a RocksDB backend
//! ([`RocksEngine`]) and an in-memory backend ([`MemEngine`]).
//!
//! Records are stored under their ring token followed by their user key, so every
//! [`ring::TokenRange`] is one contiguous scan (anti-entropy, streaming on join/leave). Writes are
//! last-write-wins: [`Engine::apply`] keeps a record only if its version is newer than the stored
//! one, atomically for the whole batch, and reports which version each stored write replaced.
//!
//! For self-healing the engine also keeps hints (writes for replicas that missed them, see
//! [`hints`]), purges old tombstones ([`Engine::purge_tombstones`]), and [`merkle`] provides the
//! incremental hash trees that anti-entropy compares, fed by [`Applied`] and purge results.
//!
//! The engine is synchronous; the node calls it from blocking threads.
//!
//! # Layout
//!
//! - [`engine`]: the [`Engine`] trait, [`Write`] (one record to apply), [`Applied`] (what
//!   applying it did) and [`ScanCursor`] (where a range scan resumes).
//! - [`encoding`]: the persisted formats: data keys (token ++ user key), record values (format
//!   byte, version, tag, value), the meta keys, hint keys and values, and how a token range maps
//!   to key spans.
//! - [`hints`]: hinted handoff's storage side: [`Hint`], its time-ordered [`HintId`], and the
//!   per-target counts both backends keep in memory.
//! - [`merkle`]: per-token-range XOR hash trees ([`merkle::RangeTree`], [`merkle::TreeSet`]),
//!   updated in O(1) per write and compared level by level by anti-entropy; no I/O except
//!   [`merkle::TreeSet::rebuild`], which scans an engine.
//! - [`memory`]: [`MemEngine`], a `BTreeMap` backend for tests and simulation.
//! - [`rocks`]: [`RocksEngine`], the RocksDB backend, its [`RocksOptions`] and column families
//!   (`data`, `meta`, `hints`: see [`rocks::CF_NAMES`]).
//! - [`reservation`]: [`reservation::ReservationFile`], the file beside the RocksDB files that
//!   holds the node clock's reservation ([`Engine::put_clock_reservation`]), synced on its own.
//! - [`version_cache`]: [`version_cache::Generations`], a map bounded by two generations, and
//!   on it the cache of recently written keys' versions that lets apply skip the read half of its
//!   read-compare-write for hot keys.
//! - [`error`]: the [`StorageError`] type.

pub mod encoding;
pub mod engine;
pub mod error;
pub mod hints;
pub mod memory;
pub mod merkle;
pub mod reservation;
pub mod rocks;
pub mod version_cache;

pub use engine::{Applied, Engine, ScanCursor, Write};
pub use error::StorageError;
pub use hints::{Hint, HintId};
pub use memory::MemEngine;
pub use rocks::{RocksEngine, RocksOptions};
