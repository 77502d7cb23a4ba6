//! The cost of [`Engine::apply`] per write, without the network: applies batches of 100-byte
//! writes to a [`RocksEngine`] with the default [`RocksOptions`] (the node's, but for its
//! staggered 8 to 10 MiB memtables and its `sync` durability) and prints the time per write.
//! It leaves out the rest of the node's storage writer (the Merkle tree updates, the answers to
//! the runtime), and its Rust allocations go to the system allocator, not the node's mimalloc.
//!
//! Two key patterns: `insert` writes keys no earlier write used (every version lookup misses the
//! version cache and reads RocksDB, as in a fresh cluster's benchmark over 1,000,000 keys);
//! `overwrite` rewrites a set of 10,000 keys (every lookup hits the cache). The last argument
//! sets [`RocksOptions::memtable_bloom_ratio`] (0 turns the memtable filter off).
//!
//! ```text
//! cargo run --release -p ringkv-storage --example apply_bench -- [WRITES] [BATCH] [insert|overwrite|both] [MEMTABLE_BLOOM_RATIO]
//! ```
//!
//! Wall time on a shared virtual machine varies by tens of percent between runs. For a
//! repeatable figure run it under `valgrind --tool=callgrind` (instructions, not seconds):
//! the instruction count of the same binary and arguments is the same on every run.

use proto::version::Version;
use proto::Record;
use std::time::Instant;
use storage::engine::{Engine, Write};
use storage::{RocksEngine, RocksOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let writes: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let batch: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
        .clamp(1, 4096);
    let only = args.next().filter(|o| o != "both");
    let defaults = RocksOptions::default();
    let options = RocksOptions {
        memtable_bloom_ratio: args
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or(defaults.memtable_bloom_ratio),
        ..defaults
    };
    for pattern in ["insert", "overwrite"] {
        if only.as_deref().is_some_and(|o| o != pattern) {
            continue;
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let engine = RocksEngine::open(dir.path(), options.clone()).expect("open");
        let value = vec![b'v'; 100];
        let started = Instant::now();
        let mut n = 0u64;
        while n < writes {
            let ws: Vec<Write> = (n..(n + batch).min(writes))
                .map(|i| {
                    let k = match pattern {
                        "insert" => i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        _ => (i % 10_000).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    };
                    Write {
                        key: format!("key-{k:016x}").into_bytes(),
                        record: Record::value(
                            Version {
                                hlc: (i + 1) << 16,
                                node: 1,
                            },
                            value.clone(),
                        ),
                    }
                })
                .collect();
            n += ws.len() as u64;
            engine.apply(&ws).expect("apply");
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{pattern:>9}: {writes} writes in batches of {batch}: {:.2} µs per write ({:.0} writes/s)",
            secs * 1e6 / writes as f64,
            writes as f64 / secs
        );
    }
}
