//! RocksDB-only tests: what is on disk after a reopen, and damaged or foreign databases (corrupt
//! values and hints, newer formats, unknown column families) giving clear errors instead of
//! panics.

use proto::{Record, Version};
use ring::TokenRange;
use std::path::Path;
use storage::encoding::{data_key, encode_hint_value, HintKey, DB_FORMAT, FORMAT_KEY, HINT_FORMAT};
use storage::rocks::{CF_DATA, CF_HINTS, CF_META, CF_NAMES};
use storage::{Engine, RocksEngine, RocksOptions, StorageError, Write};

fn open(path: &Path) -> Result<RocksEngine, StorageError> {
    RocksEngine::open(path, RocksOptions::default())
}

fn put(key: &[u8], hlc: u64, value: Option<&[u8]>) -> Write {
    Write {
        key: key.to_vec(),
        record: Record {
            version: Version { hlc, node: 1 },
            value: value.map(<[u8]>::to_vec),
        },
    }
}

/// Opens the database with plain rocksdb (every column family) to tamper with it.
fn raw(path: &Path) -> rocksdb::DB {
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, path).unwrap();
    rocksdb::DB::open_cf(&opts, path, cfs).unwrap()
}

const WHOLE_RING: TokenRange = TokenRange { start: 0, end: 0 };

/// Bytes of write-ahead log files in `dir`. RocksDB deletes obsolete log files in the
/// background, so a file listed may be gone a moment later: it counts as nothing.
fn wal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn write_ahead_log_stays_bounded_while_a_small_column_family_holds_its_oldest_file() {
    let dir = tempfile::tempdir().unwrap();
    let options = RocksOptions {
        write_buffer_bytes: 1 << 20,
        ..Default::default()
    };
    let bound = storage::rocks::max_total_wal_bytes(&options);
    let e = RocksEngine::open(dir.path(), options).unwrap();
    // One metadata write in the first log file: without a bound on the log, that file and
    // every later one stay until `meta`'s memtable is flushed, which its size alone never does.
    e.put_meta("pin", b"1").unwrap();
    let value = vec![7u8; 1000];
    let mut most = 0;
    // About 40 MiB of records, ten times the bound.
    for batch in 0..400u64 {
        let writes: Vec<Write> = (0..100u64)
            .map(|i| put(format!("k{batch}-{i}").as_bytes(), 1, Some(&value)))
            .collect();
        e.apply(&writes).unwrap();
        most = most.max(wal_bytes(dir.path()));
    }
    // The bound is checked when a new log file starts, so one memtable's worth can be on top.
    assert!(
        most <= bound + (2 << 20),
        "write-ahead log reached {most} bytes, bound {bound}"
    );
    assert_eq!(e.get_meta("pin").unwrap().as_deref(), Some(&b"1"[..]));
    drop(e);
    let e = open(dir.path()).unwrap();
    assert_eq!(e.get_meta("pin").unwrap().as_deref(), Some(&b"1"[..]));
    assert!(e.get(b"k399-99").unwrap().is_some());
}

#[test]
fn reopen_finds_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let e = RocksEngine::open(
            dir.path(),
            RocksOptions {
                sync_writes: true,
                ..Default::default()
            },
        )
        .unwrap();
        for batch in 0..20u64 {
            let writes: Vec<Write> = (0..50u64)
                .map(|i| {
                    let key = format!("k{}", (batch * 50 + i) % 700).into_bytes();
                    if i % 7 == 0 {
                        put(&key, batch + 1, None)
                    } else {
                        put(&key, batch + 1, Some(format!("v{batch}").as_bytes()))
                    }
                })
                .collect();
            e.apply(&writes).unwrap();
            expected.extend(writes);
        }
        e.put_meta("hlc", b"42").unwrap();
        e.flush().unwrap();
    }
    let mut newest = std::collections::HashMap::new();
    for w in expected {
        newest.insert(w.key, w.record);
    }
    assert!(newest.values().any(Record::is_tombstone));
    let e = open(dir.path()).unwrap();
    for (k, r) in &newest {
        assert_eq!(e.get(k).unwrap().as_ref(), Some(r), "key {k:?}");
    }
    assert_eq!(
        e.scan(WHOLE_RING, None, usize::MAX).unwrap().len(),
        newest.len()
    );
    assert_eq!(e.get_meta("hlc").unwrap(), Some(b"42".to_vec()));
}

#[test]
fn corrupt_values_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = open(dir.path()).unwrap();
        e.apply(&[put(b"good", 1, Some(b"fine"))]).unwrap();
    }
    {
        let db = raw(dir.path());
        let data = db.cf_handle(CF_DATA).unwrap();
        db.put_cf(data, data_key(b"garbage"), b"\x07not a record")
            .unwrap();
        db.put_cf(data, data_key(b"truncated"), [1u8, 0, 0, 0])
            .unwrap();
        db.put_cf(data, data_key(b"empty"), b"").unwrap();
    }
    let e = open(dir.path()).unwrap();
    for key in [&b"garbage"[..], b"truncated", b"empty"] {
        match e.get(key) {
            Err(StorageError::Corrupt { key: k, reason }) => {
                assert_eq!(k, key);
                assert!(!reason.is_empty());
            }
            other => panic!("get {key:?}: {other:?}"),
        }
        // Writing over a corrupt record is refused too (its version is unknown).
        assert!(matches!(
            e.apply(&[put(key, 9, Some(b"x"))]),
            Err(StorageError::Corrupt { .. })
        ));
    }
    assert_eq!(
        e.get(b"good").unwrap().unwrap().value,
        Some(b"fine".to_vec())
    );
    assert!(matches!(
        e.scan(WHOLE_RING, None, 100),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn short_data_key_is_corrupt_in_scans() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).unwrap());
    {
        let db = raw(dir.path());
        let data = db.cf_handle(CF_DATA).unwrap();
        db.put_cf(data, b"abc", b"whatever").unwrap();
    }
    let e = open(dir.path()).unwrap();
    match e.scan(WHOLE_RING, None, 10) {
        Err(StorageError::Corrupt { key, .. }) => assert_eq!(key, b"abc"),
        other => panic!("{other:?}"),
    }
    // A range whose key span does not reach the short key (first byte 0x61 < 0x80) still works.
    let range = TokenRange {
        start: u64::MAX / 2,
        end: u64::MAX - 1,
    };
    e.apply(&[put(b"fine", 1, Some(b"v"))]).unwrap();
    assert!(e.scan(range, None, 10).is_ok());
}

#[test]
fn newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).unwrap());
    {
        let db = raw(dir.path());
        let meta = db.cf_handle(CF_META).unwrap();
        assert_eq!(db.get_cf(meta, FORMAT_KEY).unwrap(), Some(vec![DB_FORMAT]));
        db.put_cf(meta, FORMAT_KEY, [DB_FORMAT + 1]).unwrap();
    }
    match open(dir.path()) {
        Err(StorageError::NewerFormat { found, supported }) => {
            assert_eq!((found, supported), (DB_FORMAT + 1, DB_FORMAT));
            let msg = StorageError::NewerFormat { found, supported }.to_string();
            assert!(msg.contains("newer"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_format_marker_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).unwrap());
    {
        let db = raw(dir.path());
        let meta = db.cf_handle(CF_META).unwrap();
        db.put_cf(meta, FORMAT_KEY, b"one").unwrap();
    }
    assert!(matches!(
        open(dir.path()),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn user_meta_named_format_does_not_touch_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = open(dir.path()).unwrap();
        e.put_meta("format", &[255]).unwrap();
    }
    let e = open(dir.path()).unwrap();
    assert_eq!(e.get_meta("format").unwrap(), Some(vec![255]));
}

#[test]
fn unknown_column_families_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).unwrap());
    {
        let mut opts = rocksdb::Options::default();
        opts.create_missing_column_families(true);
        let mut cfs: Vec<&str> = CF_NAMES.to_vec();
        cfs.push("future");
        let db = rocksdb::DB::open_cf(&opts, dir.path(), cfs).unwrap();
        db.put_cf(db.cf_handle("future").unwrap(), b"x", b"y")
            .unwrap();
    }
    {
        let e = open(dir.path()).unwrap();
        e.apply(&[put(b"k", 1, Some(b"v"))]).unwrap();
    }
    let db = raw(dir.path());
    assert_eq!(
        db.get_cf(db.cf_handle("future").unwrap(), b"x").unwrap(),
        Some(b"y".to_vec())
    );
}

#[test]
fn missing_column_families_are_created() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A database with only the default column family.
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        drop(rocksdb::DB::open(&opts, dir.path()).unwrap());
    }
    let e = open(dir.path()).unwrap();
    e.apply(&[put(b"k", 1, Some(b"v"))]).unwrap();
    drop(e);
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    for name in CF_NAMES {
        assert!(cfs.iter().any(|c| c == name), "{name} missing from {cfs:?}");
    }
}

#[test]
fn unusable_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    assert!(open(&file).is_err());
    assert!(open(&file.join("below")).is_err());
}

#[test]
fn a_second_open_of_the_same_path_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path()).unwrap();
    assert!(matches!(open(dir.path()), Err(StorageError::Rocks(_))));
}

fn hint_key(target: u32, stored_at_ms: u64, sequence: u64, key: &[u8]) -> Vec<u8> {
    HintKey {
        target,
        stored_at_ms,
        sequence,
        key,
    }
    .encode()
}

#[test]
fn hints_are_stored_in_their_documented_format() {
    let dir = tempfile::tempdir().unwrap();
    let record = Record {
        version: Version { hlc: 3, node: 2 },
        value: Some(b"v".to_vec()),
    };
    {
        let e = open(dir.path()).unwrap();
        e.put_hint(0x0102_0304, b"user-key", &record, 0x1122)
            .unwrap();
    }
    let db = raw(dir.path());
    let hints = db.cf_handle(CF_HINTS).unwrap();
    let stored: Vec<_> = db
        .iterator_cf(hints, rocksdb::IteratorMode::Start)
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), 1);
    let (k, value) = &stored[0];
    assert_eq!(k[..4], [1, 2, 3, 4]);
    assert_eq!(k[4..12], 0x1122u64.to_be_bytes());
    assert_eq!(&k[20..], b"user-key");
    assert_eq!(value[0], HINT_FORMAT);
    assert_eq!(value.to_vec(), encode_hint_value(&record));
    // Records are untouched.
    assert!(db
        .iterator_cf(db.cf_handle(CF_DATA).unwrap(), rocksdb::IteratorMode::Start)
        .next()
        .is_none());
}

#[test]
fn hint_ids_after_a_restart_never_reuse_sequence_numbers_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let record = Record {
        version: Version { hlc: 1, node: 1 },
        value: None,
    };
    drop(open(dir.path()).unwrap());
    {
        // A hint stored by an earlier process whose sequence had grown large.
        let db = raw(dir.path());
        let hints = db.cf_handle(CF_HINTS).unwrap();
        db.put_cf(
            hints,
            hint_key(1, 500, 1 << 62, b"k"),
            encode_hint_value(&record),
        )
        .unwrap();
    }
    let e = open(dir.path()).unwrap();
    assert_eq!(e.hint_targets().unwrap(), vec![(1, 1)]);
    // Same target, same millisecond, same key: a new hint, ordered after the old one.
    let id = e.put_hint(1, b"k", &record, 500).unwrap();
    let listed = e.hints(1, None, 10).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].0, id);
    assert_eq!(e.hint_targets().unwrap(), vec![(1, 2)]);
}

#[test]
fn corrupt_hints_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).unwrap());
    {
        let db = raw(dir.path());
        let hints = db.cf_handle(CF_HINTS).unwrap();
        db.put_cf(
            hints,
            hint_key(1, 1, 1, b"bad-format"),
            [HINT_FORMAT + 1, 1],
        )
        .unwrap();
        db.put_cf(hints, hint_key(2, 1, 1, b"empty"), b"").unwrap();
        db.put_cf(hints, hint_key(3, 1, 1, b"bad-record"), [HINT_FORMAT, 9])
            .unwrap();
    }
    let e = open(dir.path()).unwrap();
    assert_eq!(e.hint_targets().unwrap(), vec![(1, 1), (2, 1), (3, 1)]);
    for target in 1..=3 {
        match e.hints(target, None, 10) {
            Err(StorageError::Corrupt { reason, .. }) => assert!(!reason.is_empty()),
            other => panic!("target {target}: {other:?}"),
        }
    }
    // They can still be dropped (without decoding) and counted down.
    assert_eq!(e.drop_hints_older_than(1, u64::MAX).unwrap(), 1);
    assert_eq!(e.hint_targets().unwrap(), vec![(2, 1), (3, 1)]);
}

#[test]
fn a_short_hint_key_is_corrupt_on_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).unwrap());
    {
        let db = raw(dir.path());
        let hints = db.cf_handle(CF_HINTS).unwrap();
        db.put_cf(hints, b"short", b"x").unwrap();
    }
    match open(dir.path()) {
        Err(StorageError::Corrupt { key, .. }) => assert_eq!(key, b"short"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn purge_of_a_corrupt_record_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).unwrap());
    {
        let db = raw(dir.path());
        let data = db.cf_handle(CF_DATA).unwrap();
        db.put_cf(data, data_key(b"garbage"), b"\x07not a record")
            .unwrap();
    }
    let e = open(dir.path()).unwrap();
    assert!(matches!(
        e.purge_tombstones(WHOLE_RING, u64::MAX, 10),
        Err(StorageError::Corrupt { .. })
    ));
}

/// The `data` column family's options as RocksDB wrote them to the newest `OPTIONS-*` file.
fn data_cf_options(dir: &Path) -> String {
    let newest = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("OPTIONS-"))
        .max_by_key(|n| n["OPTIONS-".len()..].parse::<u64>().unwrap_or(0))
        .expect("an OPTIONS file");
    let text = std::fs::read_to_string(dir.join(newest)).unwrap();
    let header = format!("[CFOptions \"{CF_DATA}\"]");
    let start = text
        .find(&header)
        .expect("the data column family's section");
    let rest = &text[start + header.len()..];
    rest[..rest.find("\n[").unwrap_or(rest.len())].to_string()
}

#[test]
fn data_memtables_have_a_whole_key_bloom_filter_that_keeps_lookups_exact() {
    let dir = tempfile::tempdir().unwrap();
    let options = RocksOptions {
        write_buffer_bytes: 256 << 10,
        version_cache_keys: 0,
        ..Default::default()
    };
    let e = RocksEngine::open(dir.path(), options).unwrap();
    let data = data_cf_options(dir.path());
    assert!(
        data.contains("memtable_whole_key_filtering=true"),
        "data column family options: {data}"
    );
    assert!(
        data.contains("memtable_prefix_bloom_size_ratio=0.020000"),
        "data column family options: {data}"
    );
    // Without the version cache every apply reads through the filter: new keys (absent),
    // rewrites (present in a memtable, or in a flushed file once the small memtables fill).
    for round in 1..=3u64 {
        let writes: Vec<Write> = (0..2_000u64)
            .map(|i| {
                put(
                    format!("k{i}").as_bytes(),
                    round * 10,
                    Some(&round.to_be_bytes()),
                )
            })
            .collect();
        for applied in e.apply(&writes).unwrap() {
            let expected = (round > 1).then_some(Version {
                hlc: (round - 1) * 10,
                node: 1,
            });
            assert_eq!(applied, storage::Applied::Stored { previous: expected });
        }
    }
    // An older write loses against what the filter lets the lookup find.
    let stale = e.apply(&[put(b"k7", 5, Some(b"old"))]).unwrap();
    assert_eq!(stale, vec![storage::Applied::Ignored]);
    assert_eq!(
        e.get(b"k7").unwrap().and_then(|r| r.value),
        Some(3u64.to_be_bytes().to_vec())
    );
    assert_eq!(e.get(b"never-written").unwrap(), None);

    let off = tempfile::tempdir().unwrap();
    let _e = RocksEngine::open(
        off.path(),
        RocksOptions {
            memtable_bloom_ratio: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(data_cf_options(off.path()).contains("memtable_whole_key_filtering=false"));
}
