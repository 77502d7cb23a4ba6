//! One conformance suite for every [`Engine`] backend: each `check_*` function is generic over the
//! engine and run against [`MemEngine`] and [`RocksEngine`] (in a temporary directory), plus
//! proptests comparing random operation sequences against models: records against a `BTreeMap`,
//! hints against a list, and Merkle trees kept up to date from [`Applied`] and purge results
//! against trees rebuilt from scratch.

use proptest::prelude::*;
use proto::{Record, Version};
use ring::{token_of, NodeId, Token, TokenRange};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use storage::merkle::TreeSet;
use storage::{
    Applied, Engine, Hint, HintId, MemEngine, RocksEngine, RocksOptions, ScanCursor, StorageError,
    Write,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Harness: the backends under test, and reopening (a no-op in memory).

trait Harness: Engine + Sized {
    /// Closes and reopens the store; every acknowledged write must survive.
    fn reopen(self) -> Self;
}

impl Harness for MemEngine {
    fn reopen(self) -> Self {
        self
    }
}

/// A RocksEngine that owns its temporary directory (dropped after the engine).
struct TempRocks {
    engine: RocksEngine,
    dir: TempDir,
}

fn temp_rocks() -> TempRocks {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path(), small_options()).unwrap();
    TempRocks { engine, dir }
}

fn small_options() -> RocksOptions {
    RocksOptions {
        block_cache_bytes: 1 << 20,
        write_buffer_bytes: 1 << 20,
        ..Default::default()
    }
}

impl Harness for TempRocks {
    fn reopen(self) -> Self {
        let TempRocks { engine, dir } = self;
        drop(engine);
        let engine = RocksEngine::open(dir.path(), small_options()).unwrap();
        TempRocks { engine, dir }
    }
}

impl Engine for TempRocks {
    fn get(&self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        self.engine.get(key)
    }
    fn get_cached(&self, key: &[u8]) -> Result<Option<Option<Record>>, StorageError> {
        self.engine.get_cached(key)
    }
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Record>>, StorageError> {
        self.engine.get_many(keys)
    }
    fn apply(&self, writes: &[Write]) -> Result<Vec<Applied>, StorageError> {
        self.engine.apply(writes)
    }
    fn scan(
        &self,
        range: TokenRange,
        start_after: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StorageError> {
        self.engine.scan(range, start_after, limit)
    }
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.engine.get_meta(name)
    }
    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        self.engine.put_meta(name, value)
    }
    fn clock_reservation(&self) -> Result<u64, StorageError> {
        self.engine.clock_reservation()
    }
    fn put_clock_reservation(&self, hlc: u64) -> Result<(), StorageError> {
        self.engine.put_clock_reservation(hlc)
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.engine.flush()
    }
    fn approximate_len(&self) -> u64 {
        self.engine.approximate_len()
    }
    fn purge_tombstones(
        &self,
        range: TokenRange,
        older_than_hlc: u64,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Version)>, StorageError> {
        self.engine.purge_tombstones(range, older_than_hlc, limit)
    }
    fn put_hint(
        &self,
        target: NodeId,
        key: &[u8],
        record: &Record,
        now_ms: u64,
    ) -> Result<HintId, StorageError> {
        self.engine.put_hint(target, key, record, now_ms)
    }
    fn hints(
        &self,
        target: NodeId,
        after: Option<&HintId>,
        limit: usize,
    ) -> Result<Vec<(HintId, Hint)>, StorageError> {
        self.engine.hints(target, after, limit)
    }
    fn delete_hints(&self, ids: &[HintId]) -> Result<(), StorageError> {
        self.engine.delete_hints(ids)
    }
    fn hint_targets(&self) -> Result<Vec<(NodeId, u64)>, StorageError> {
        self.engine.hint_targets()
    }
    fn drop_hints_older_than(&self, target: NodeId, cutoff_ms: u64) -> Result<u64, StorageError> {
        self.engine.drop_hints_older_than(target, cutoff_ms)
    }
}

/// Declares one `#[test]` per backend for a generic check.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod mem {
            $( #[test] fn $check() { super::$check(storage::MemEngine::new); } )*
        }
        mod rocks {
            $( #[test] fn $check() { super::$check(super::temp_rocks); } )*
        }
    };
}

conformance!(
    check_get_missing,
    check_put_then_get,
    check_get_many_matches_get,
    check_lww_versions,
    check_tombstones_by_version,
    check_same_key_twice_in_one_batch,
    check_empty_apply,
    check_scan_plain_ranges,
    check_scan_wrapping_ranges,
    check_scan_cursor_resumption,
    check_scan_edge_cases,
    check_meta_round_trip,
    check_clock_reservation_survives_reopen_and_never_goes_back,
    check_approximate_len,
    check_concurrent_apply,
    check_reopen_keeps_acknowledged_writes,
    check_purge_tombstones_by_range_age_and_limit,
    check_purge_spares_rewritten_keys,
    check_purge_races_apply_without_losing_transitions,
    check_hints_put_list_delete,
    check_hints_paginate_oldest_first,
    check_hint_counts_stay_exact,
    check_drop_hints_older_than,
    check_hints_survive_reopen,
    check_rebuild_matches_incremental_trees,
);

// ---------------------------------------------------------------------------------------------
// Helpers.

fn v(hlc: u64, node: u32) -> Version {
    Version { hlc, node }
}

const IGNORED: Applied = Applied::Ignored;

fn stored(previous: Option<Version>) -> Applied {
    Applied::Stored { previous }
}

fn put(key: &[u8], version: Version, value: &[u8]) -> Write {
    Write {
        key: key.to_vec(),
        record: Record {
            version,
            value: Some(value.to_vec()),
        },
    }
}

fn del(key: &[u8], version: Version) -> Write {
    Write {
        key: key.to_vec(),
        record: Record {
            version,
            value: None,
        },
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

/// Position of `token` in the scan order of a range starting after `start`.
fn ring_pos(start: Token, token: Token) -> Token {
    token.wrapping_sub(start.wrapping_add(1))
}

/// What a scan of `range` must return, computed from ring's own `contains`.
fn expected_scan(model: &BTreeMap<Vec<u8>, Record>, range: TokenRange) -> Vec<(Vec<u8>, Record)> {
    let mut out: Vec<(Vec<u8>, Record)> = model
        .iter()
        .filter(|(k, _)| range.contains(token_of(k)))
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect();
    out.sort_by_key(|(k, _)| (ring_pos(range.start, token_of(k)), k.clone()));
    out
}

/// Scans the whole range in pages of `limit`.
fn scan_all<E: Engine>(engine: &E, range: TokenRange, limit: usize) -> Vec<(Vec<u8>, Record)> {
    let mut out: Vec<(Vec<u8>, Record)> = Vec::new();
    let mut cursor: Option<ScanCursor> = None;
    loop {
        let page = engine.scan(range, cursor.as_ref(), limit).unwrap();
        assert!(
            page.len() <= limit,
            "page of {} over limit {limit}",
            page.len()
        );
        let done = page.len() < limit;
        if let Some((k, _)) = page.last() {
            cursor = Some(ScanCursor::after(k));
        }
        out.extend(page);
        assert!(out.len() <= 100_000, "pagination does not terminate");
        if done {
            return out;
        }
    }
}

/// Fills `engine` with `n` keys (every fifth a tombstone) and returns the model.
fn populate<E: Engine>(engine: &E, n: usize) -> BTreeMap<Vec<u8>, Record> {
    let writes: Vec<Write> = (0..n)
        .map(|i| {
            if i % 5 == 0 {
                del(&key(i), v(7, 1))
            } else {
                put(&key(i), v(7, 1), &key(i))
            }
        })
        .collect();
    assert!(engine.apply(&writes).unwrap().iter().all(Applied::stored));
    writes.into_iter().map(|w| (w.key, w.record)).collect()
}

/// Ranges worth testing over `model`'s keys: boundaries on, just before and just after key tokens,
/// plus the extremes.
fn interesting_ranges(model: &BTreeMap<Vec<u8>, Record>) -> Vec<TokenRange> {
    let mut tokens: Vec<Token> = model.keys().map(|k| token_of(k)).collect();
    tokens.sort_unstable();
    let t = |i: usize| tokens[i % tokens.len()];
    let mut out = vec![
        TokenRange {
            start: 0,
            end: u64::MAX,
        },
        TokenRange {
            start: u64::MAX,
            end: 0,
        },
        TokenRange {
            start: u64::MAX,
            end: u64::MAX,
        },
        TokenRange { start: 0, end: 0 },
        TokenRange {
            start: u64::MAX / 2,
            end: u64::MAX / 2,
        },
        TokenRange {
            start: u64::MAX / 4,
            end: u64::MAX / 2,
        },
        TokenRange {
            start: u64::MAX / 2,
            end: u64::MAX / 4,
        },
    ];
    for (a, b) in [(0, 3), (5, 40), (17, 18), (40, 5), (60, 2), (3, 3)] {
        for (da, db) in [(0u64, 0u64), (1, 0), (0, 1), (u64::MAX, u64::MAX)] {
            out.push(TokenRange {
                start: t(a).wrapping_add(da),
                end: t(b).wrapping_add(db),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Checks.

fn check_get_missing<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    assert_eq!(e.get(b"nope").unwrap(), None);
    assert_eq!(e.get(b"").unwrap(), None);
    e.apply(&[put(b"a", v(1, 1), b"x")]).unwrap();
    assert_eq!(e.get(b"b").unwrap(), None);
}

fn check_put_then_get<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    let writes = [
        put(b"a", v(1, 1), b"alpha"),
        put(b"", v(2, 3), b"empty key"),
        put(b"empty value", v(3, 1), b""),
        del(b"gone", v(4, 2)),
        put(&[0xff; 300], v(u64::MAX, u32::MAX), &[0u8; 10_000]),
    ];
    assert_eq!(e.apply(&writes).unwrap(), vec![stored(None); writes.len()]);
    for w in &writes {
        assert_eq!(
            e.get(&w.key).unwrap().as_ref(),
            Some(&w.record),
            "key {:?}",
            w.key
        );
    }
}

fn check_get_many_matches_get<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    let mut writes: Vec<Write> = (0..200)
        .map(|i| put(&key(i), v(i as u64 + 1, 1), b"x"))
        .collect();
    writes.push(del(b"tomb", v(9, 9)));
    e.apply(&writes).unwrap();
    // Present, absent, tombstoned, repeated and empty keys, in no particular order.
    let mut keys: Vec<Vec<u8>> = (0..300).rev().map(key).collect();
    keys.extend([b"tomb".to_vec(), key(5), Vec::new(), b"absent".to_vec()]);
    let many = e.get_many(&keys).unwrap();
    assert_eq!(many.len(), keys.len());
    for (k, got) in keys.iter().zip(&many) {
        assert_eq!(got, &e.get(k).unwrap(), "key {k:?}");
    }
    assert_eq!(many.iter().filter(|r| r.is_some()).count(), 200 + 2);
    assert_eq!(e.get_many(&[]).unwrap(), Vec::new());
    // A cache-only read either does not know or gives exactly what a read gives; what a read
    // just brought into memory, it knows.
    for k in &keys {
        if let Some(cached) = e.get_cached(k).unwrap() {
            assert_eq!(cached, e.get(k).unwrap(), "key {k:?}");
        }
    }
    assert_eq!(
        e.get_cached(&key(7)).unwrap(),
        Some(e.get(&key(7)).unwrap())
    );
}

fn check_lww_versions<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    assert_eq!(
        e.apply(&[put(b"k", v(10, 2), b"ten")]).unwrap(),
        vec![stored(None)]
    );
    // Older clock: ignored.
    assert_eq!(
        e.apply(&[put(b"k", v(9, 9), b"nine")]).unwrap(),
        vec![IGNORED]
    );
    // Same clock, lower node: ignored.
    assert_eq!(
        e.apply(&[put(b"k", v(10, 1), b"ten-1")]).unwrap(),
        vec![IGNORED]
    );
    // Equal version: ignored (first write wins ties of identical versions).
    assert_eq!(
        e.apply(&[put(b"k", v(10, 2), b"other")]).unwrap(),
        vec![IGNORED]
    );
    assert_eq!(
        e.get(b"k").unwrap(),
        Some(Record {
            version: v(10, 2),
            value: Some(b"ten".to_vec())
        })
    );
    // Same clock, higher node: applied.
    assert_eq!(
        e.apply(&[put(b"k", v(10, 3), b"ten-3")]).unwrap(),
        vec![stored(Some(v(10, 2)))]
    );
    // Newer clock: applied.
    assert_eq!(
        e.apply(&[put(b"k", v(11, 0), b"eleven")]).unwrap(),
        vec![stored(Some(v(10, 3)))]
    );
    assert_eq!(
        e.get(b"k").unwrap(),
        Some(Record {
            version: v(11, 0),
            value: Some(b"eleven".to_vec())
        })
    );
}

fn check_tombstones_by_version<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    e.apply(&[put(b"k", v(5, 1), b"five")]).unwrap();
    // An older tombstone does not delete a newer value.
    assert_eq!(e.apply(&[del(b"k", v(4, 1))]).unwrap(), vec![IGNORED]);
    assert_eq!(
        e.get(b"k").unwrap().unwrap().value.as_deref(),
        Some(&b"five"[..])
    );
    // A newer tombstone does.
    assert_eq!(
        e.apply(&[del(b"k", v(6, 1))]).unwrap(),
        vec![stored(Some(v(5, 1)))]
    );
    assert_eq!(
        e.get(b"k").unwrap(),
        Some(Record {
            version: v(6, 1),
            value: None
        })
    );
    // An older value does not resurrect it.
    assert_eq!(
        e.apply(&[put(b"k", v(5, 9), b"zombie")]).unwrap(),
        vec![IGNORED]
    );
    assert!(e.get(b"k").unwrap().unwrap().is_tombstone());
    // Equal version does not either.
    assert_eq!(
        e.apply(&[put(b"k", v(6, 1), b"zombie")]).unwrap(),
        vec![IGNORED]
    );
    // A newer value replaces the tombstone.
    // The previous version reported is the tombstone's.
    assert_eq!(
        e.apply(&[put(b"k", v(7, 1), b"back")]).unwrap(),
        vec![stored(Some(v(6, 1)))]
    );
    assert_eq!(
        e.get(b"k").unwrap().unwrap().value.as_deref(),
        Some(&b"back"[..])
    );
    // A tombstone for a never-written key is stored.
    assert_eq!(
        e.apply(&[del(b"fresh", v(1, 1))]).unwrap(),
        vec![stored(None)]
    );
    assert_eq!(
        e.get(b"fresh").unwrap(),
        Some(Record {
            version: v(1, 1),
            value: None
        })
    );
}

fn check_same_key_twice_in_one_batch<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    // Older then newer: both applied, newer wins.
    let r = e
        .apply(&[put(b"a", v(1, 1), b"1"), put(b"a", v(2, 1), b"2")])
        .unwrap();
    assert_eq!(r, vec![stored(None), stored(Some(v(1, 1)))]);
    assert_eq!(e.get(b"a").unwrap().unwrap().version, v(2, 1));
    // Newer then older: the older one sees the newer one of the same batch.
    let r = e
        .apply(&[put(b"b", v(2, 1), b"2"), put(b"b", v(1, 1), b"1")])
        .unwrap();
    assert_eq!(r, vec![stored(None), IGNORED]);
    assert_eq!(
        e.get(b"b").unwrap().unwrap().value.as_deref(),
        Some(&b"2"[..])
    );
    // Equal versions: only the first.
    let r = e
        .apply(&[put(b"c", v(3, 1), b"first"), put(b"c", v(3, 1), b"second")])
        .unwrap();
    assert_eq!(r, vec![stored(None), IGNORED]);
    assert_eq!(
        e.get(b"c").unwrap().unwrap().value.as_deref(),
        Some(&b"first"[..])
    );
    // Mixed with a stored record and other keys; a tombstone in the middle.
    let r = e
        .apply(&[
            put(b"a", v(1, 5), b"stale"),
            del(b"a", v(3, 1)),
            put(b"d", v(1, 1), b"d"),
            put(b"a", v(4, 1), b"4"),
            put(b"a", v(3, 9), b"late"),
        ])
        .unwrap();
    assert_eq!(
        r,
        vec![
            IGNORED,
            stored(Some(v(2, 1))),
            stored(None),
            stored(Some(v(3, 1))),
            IGNORED
        ]
    );
    assert_eq!(
        e.get(b"a").unwrap(),
        Some(Record {
            version: v(4, 1),
            value: Some(b"4".to_vec())
        })
    );
    assert_eq!(
        e.get(b"d").unwrap().unwrap().value.as_deref(),
        Some(&b"d"[..])
    );
}

fn check_empty_apply<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    assert_eq!(e.apply(&[]).unwrap(), Vec::<Applied>::new());
    assert_eq!(
        e.apply(&[put(b"a", v(1, 1), b"1")]).unwrap(),
        vec![stored(None)]
    );
    // A batch where nothing applies.
    assert_eq!(e.apply(&[put(b"a", v(0, 1), b"0")]).unwrap(), vec![IGNORED]);
    assert_eq!(e.get(b"a").unwrap().unwrap().version, v(1, 1));
}

fn check_scan_plain_ranges<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    let model = populate(&e, 300);
    for range in interesting_ranges(&model)
        .into_iter()
        .filter(|r| r.start < r.end)
    {
        let got = e.scan(range, None, usize::MAX).unwrap();
        assert_eq!(
            got,
            expected_scan(&model, range),
            "range {}..={}",
            range.start,
            range.end
        );
        // Plain ranges are in plain (token, key) order.
        let order: Vec<(Token, Vec<u8>)> =
            got.iter().map(|(k, _)| (token_of(k), k.clone())).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    }
    // Half-open at the start: a range ending exactly on a key's token includes it, one starting
    // exactly on it excludes it.
    let k = key(42);
    let t = token_of(&k);
    let incl = e
        .scan(
            TokenRange {
                start: t - 1,
                end: t,
            },
            None,
            10,
        )
        .unwrap();
    assert_eq!(
        incl.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        vec![k.clone()]
    );
    let excl = e
        .scan(
            TokenRange {
                start: t,
                end: t.saturating_add(1),
            },
            None,
            10,
        )
        .unwrap();
    assert!(excl.iter().all(|(x, _)| x != &k));
}

fn check_scan_wrapping_ranges<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    let model = populate(&e, 300);
    let mut saw_whole_ring = false;
    for range in interesting_ranges(&model)
        .into_iter()
        .filter(|r| r.start >= r.end)
    {
        let got = e.scan(range, None, usize::MAX).unwrap();
        assert_eq!(
            got,
            expected_scan(&model, range),
            "range {}..={}",
            range.start,
            range.end
        );
        if range.start == range.end {
            assert_eq!(got.len(), model.len(), "start == end is the whole ring");
            saw_whole_ring = true;
        }
    }
    assert!(saw_whole_ring);
}

fn check_scan_cursor_resumption<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    let model = populate(&e, 200);
    for range in interesting_ranges(&model) {
        let expected = expected_scan(&model, range);
        for limit in [1, 2, 3, 7, 64, 1000] {
            let got = scan_all(&e, range, limit);
            assert_eq!(
                got, expected,
                "range {}..={} limit {limit}",
                range.start, range.end
            );
        }
    }
}

fn check_scan_edge_cases<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    let whole = TokenRange { start: 0, end: 0 };
    assert!(e.scan(whole, None, 10).unwrap().is_empty());
    let model = populate(&e, 50);
    assert!(e.scan(whole, None, 0).unwrap().is_empty());
    // Tombstones are returned by scans.
    let all = e.scan(whole, None, usize::MAX).unwrap();
    assert_eq!(all.len(), 50);
    assert_eq!(all.iter().filter(|(_, r)| r.is_tombstone()).count(), 10);
    // A cursor on the last key yields nothing more; one outside the range yields nothing.
    let (last, _) = all.last().unwrap();
    assert!(e
        .scan(whole, Some(&ScanCursor::after(last)), 10)
        .unwrap()
        .is_empty());
    let tokens: Vec<Token> = {
        let mut t: Vec<Token> = model.keys().map(|k| token_of(k)).collect();
        t.sort_unstable();
        t
    };
    let range = TokenRange {
        start: tokens[10],
        end: tokens[20],
    };
    let outside = ScanCursor::after(
        &model
            .keys()
            .find(|k| token_of(k) == tokens[30])
            .unwrap()
            .clone(),
    );
    assert!(e.scan(range, Some(&outside), 10).unwrap().is_empty());
    // A cursor at a key that is not stored (but inside the range) resumes after its position.
    let cursor = ScanCursor {
        token: tokens[15],
        key: Vec::new(),
    };
    let got = e.scan(range, Some(&cursor), usize::MAX).unwrap();
    let expected: Vec<_> = expected_scan(&model, range)
        .into_iter()
        .filter(|(k, _)| token_of(k) >= tokens[15])
        .collect();
    assert_eq!(got, expected);
}

fn check_clock_reservation_survives_reopen_and_never_goes_back<H: Harness>(make: impl Fn() -> H) {
    let e = make();
    assert_eq!(e.clock_reservation().unwrap(), 0);
    e.put_clock_reservation(1_000).unwrap();
    e.put_clock_reservation(2_000).unwrap();
    assert_eq!(e.clock_reservation().unwrap(), 2_000);
    e.put_clock_reservation(1_500).unwrap();
    assert_eq!(e.clock_reservation().unwrap(), 2_000, "never goes back");
    // Kept apart from the metadata and the records.
    assert_eq!(e.get_meta("hlc-high-water").unwrap(), None);
    assert_eq!(e.approximate_len(), 0);
    let e = e.reopen();
    assert_eq!(e.clock_reservation().unwrap(), 2_000);
    e.put_clock_reservation(3_000).unwrap();
    let e = e.reopen();
    assert_eq!(e.clock_reservation().unwrap(), 3_000);
}

fn check_meta_round_trip<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    assert_eq!(e.get_meta("hlc").unwrap(), None);
    e.put_meta("hlc", &42u64.to_be_bytes()).unwrap();
    e.put_meta("other", b"").unwrap();
    assert_eq!(
        e.get_meta("hlc").unwrap(),
        Some(42u64.to_be_bytes().to_vec())
    );
    e.put_meta("hlc", &43u64.to_be_bytes()).unwrap();
    assert_eq!(
        e.get_meta("hlc").unwrap(),
        Some(43u64.to_be_bytes().to_vec())
    );
    assert_eq!(e.get_meta("other").unwrap(), Some(Vec::new()));
    // Metadata and records live apart.
    assert_eq!(e.get(b"hlc").unwrap(), None);
    // A user name equal to the format marker's key does not clobber anything.
    assert_eq!(e.get_meta("format").unwrap(), None);
    e.put_meta("format", &[200]).unwrap();
    assert_eq!(e.get_meta("format").unwrap(), Some(vec![200]));
    e.flush().unwrap();
}

fn check_approximate_len<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    populate(&e, 100);
    e.flush().unwrap();
    let n = e.approximate_len();
    assert!(n > 0 && n <= 200, "estimate {n}");
}

fn check_concurrent_apply<E: Engine>(make: impl Fn() -> E) {
    let e = Arc::new(make());
    let threads = 4;
    let per_thread = 200u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let e = Arc::clone(&e);
            std::thread::spawn(move || {
                let mut newest_applied = Vec::new();
                for i in 0..per_thread {
                    // Versions interleave across threads; each batch also touches a private key.
                    let version = v(i * 3 + (t as u64 % 3), t);
                    let private = format!("private-{t}").into_bytes();
                    let r = e
                        .apply(&[
                            put(b"shared", version, &[t as u8]),
                            put(&private, version, b"p"),
                        ])
                        .unwrap();
                    assert!(r[1].stored(), "private key versions only grow");
                    if r[0].stored() {
                        newest_applied.push(version);
                    }
                }
                newest_applied
            })
        })
        .collect();
    let applied: Vec<Version> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let max = (0..threads)
        .map(|t| v((per_thread - 1) * 3 + (t as u64 % 3), t))
        .max()
        .unwrap();
    assert!(
        applied.contains(&max),
        "the newest version must have been applied"
    );
    assert_eq!(e.get(b"shared").unwrap().unwrap().version, max);
    for t in 0..threads {
        let r = e.get(format!("private-{t}").as_bytes()).unwrap().unwrap();
        assert_eq!(r.version, v((per_thread - 1) * 3 + (t as u64 % 3), t));
    }
}

fn check_reopen_keeps_acknowledged_writes<H: Harness>(make: impl Fn() -> H) {
    let e = make();
    let model = populate(&e, 100);
    e.apply(&[del(&key(1), v(8, 1)), put(&key(5), v(8, 1), b"revived")])
        .unwrap();
    e.put_meta("hlc", b"high-water").unwrap();
    let e = e.reopen();
    assert_eq!(
        e.get(&key(1)).unwrap(),
        Some(Record {
            version: v(8, 1),
            value: None
        })
    );
    assert_eq!(
        e.get(&key(5)).unwrap(),
        Some(Record {
            version: v(8, 1),
            value: Some(b"revived".to_vec())
        })
    );
    assert_eq!(e.get(&key(10)).unwrap(), model.get(&key(10)).cloned());
    assert!(e.get(&key(10)).unwrap().unwrap().is_tombstone());
    let whole = TokenRange { start: 0, end: 0 };
    assert_eq!(e.scan(whole, None, usize::MAX).unwrap().len(), 100);
    assert_eq!(e.get_meta("hlc").unwrap(), Some(b"high-water".to_vec()));
    // Still last-write-wins against what was stored before the reopen.
    assert_eq!(
        e.apply(&[put(&key(2), v(6, 1), b"old")]).unwrap(),
        vec![IGNORED]
    );
    let e = e.reopen();
    assert_eq!(e.get(&key(2)).unwrap(), model.get(&key(2)).cloned());
}

// ---------------------------------------------------------------------------------------------
// Tombstone purge.

/// Fills `engine` with `n` keys: `i % 3 == 0` a tombstone at hlc 10, `1` a tombstone at hlc 30,
/// `2` a value at hlc 5. Returns the model.
fn populate_for_purge<E: Engine>(engine: &E, n: usize) -> BTreeMap<Vec<u8>, Record> {
    let writes: Vec<Write> = (0..n)
        .map(|i| match i % 3 {
            0 => del(&key(i), v(10, 1)),
            1 => del(&key(i), v(30, 1)),
            _ => put(&key(i), v(5, 1), b"value"),
        })
        .collect();
    engine.apply(&writes).unwrap();
    writes.into_iter().map(|w| (w.key, w.record)).collect()
}

/// Purges `range` in calls of `limit` until a call purges nothing; returns everything purged.
fn purge_all<E: Engine>(
    e: &E,
    range: TokenRange,
    cutoff: u64,
    limit: usize,
) -> Vec<(Vec<u8>, Version)> {
    let mut all = Vec::new();
    loop {
        let page = e.purge_tombstones(range, cutoff, limit).unwrap();
        assert!(
            page.len() <= limit,
            "{} purged over limit {limit}",
            page.len()
        );
        if page.is_empty() {
            return all;
        }
        all.extend(page);
        assert!(all.len() <= 100_000, "purge does not terminate");
    }
}

fn check_purge_tombstones_by_range_age_and_limit<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    let mut model = populate_for_purge(&e, 300);
    // A tombstone exactly at the cutoff is not older than it.
    e.apply(&[del(b"edge", v(20, 1))]).unwrap();
    model.insert(
        b"edge".to_vec(),
        Record {
            version: v(20, 1),
            value: None,
        },
    );
    assert!(e.purge_tombstones(whole_ring(), 20, 0).unwrap().is_empty());
    for range in [
        TokenRange {
            start: u64::MAX / 2,
            end: u64::MAX / 4,
        },
        TokenRange {
            start: u64::MAX / 4,
            end: u64::MAX / 2,
        },
        whole_ring(),
    ] {
        let expected: HashSet<(Vec<u8>, Version)> = model
            .iter()
            .filter(|(k, r)| range.contains(token_of(k)) && r.is_tombstone() && r.version.hlc < 20)
            .map(|(k, r)| (k.clone(), r.version))
            .collect();
        let purged = purge_all(&e, range, 20, 7);
        assert_eq!(purged.len(), expected.len(), "no key purged twice");
        let purged: HashSet<(Vec<u8>, Version)> = purged.into_iter().collect();
        assert_eq!(purged, expected, "range {range:?}");
        for (k, _) in &purged {
            model.remove(k);
        }
        assert_eq!(
            e.scan(whole_ring(), None, usize::MAX).unwrap(),
            expected_scan(&model, whole_ring())
        );
    }
    assert!(
        model.values().any(|r| r.is_tombstone()),
        "newer tombstones stay"
    );
    assert_eq!(e.get(b"edge").unwrap().unwrap().version, v(20, 1));
    // A later cutoff takes the rest of the tombstones and never a value.
    let rest = purge_all(&e, whole_ring(), u64::MAX, 1000);
    assert_eq!(
        rest.len(),
        model.values().filter(|r| r.is_tombstone()).count()
    );
    let left = e.scan(whole_ring(), None, usize::MAX).unwrap();
    assert_eq!(left.len(), 100);
    assert!(left
        .iter()
        .all(|(_, r)| r.value.as_deref() == Some(&b"value"[..])));
}

fn check_purge_spares_rewritten_keys<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    e.apply(&[
        del(b"revived", v(10, 1)),
        del(b"deleted-again", v(10, 1)),
        del(b"old", v(10, 1)),
    ])
    .unwrap();
    e.apply(&[
        put(b"revived", v(11, 1), b"back"),
        del(b"deleted-again", v(50, 1)),
    ])
    .unwrap();
    let purged = e.purge_tombstones(whole_ring(), 20, 100).unwrap();
    assert_eq!(purged, vec![(b"old".to_vec(), v(10, 1))]);
    assert_eq!(
        e.get(b"revived").unwrap().unwrap().value.as_deref(),
        Some(&b"back"[..])
    );
    assert_eq!(e.get(b"deleted-again").unwrap().unwrap().version, v(50, 1));
    // Once purged, the key is absent: a write older than the tombstone is stored again (which is
    // why purge waits for a grace period).
    assert_eq!(e.get(b"old").unwrap(), None);
    assert_eq!(
        e.apply(&[put(b"old", v(9, 1), b"late")]).unwrap(),
        vec![stored(None)]
    );
}

/// Writers and a purger race on the same keys. Every state change each of them reports
/// (`Applied::Stored { previous }` for writes, `(key, version)` for purges) is fed into Merkle
/// trees; since XOR updates commute, the trees equal a rebuild exactly when every change was
/// reported once and correctly, i.e. when purge and apply were atomic with respect to each other.
fn check_purge_races_apply_without_losing_transitions<E: Engine>(make: impl Fn() -> E) {
    type Transition = (Vec<u8>, Option<Version>, Option<Version>);
    let e = Arc::new(make());
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u32)
        .map(|t| {
            let e = Arc::clone(&e);
            std::thread::spawn(move || {
                let mut seen: Vec<Transition> = Vec::new();
                for i in 0..600u64 {
                    let k = key((i as usize * 7 + t as usize) % 16);
                    let version = v(i, t);
                    let w = if i % 2 == 0 {
                        del(&k, version)
                    } else {
                        put(&k, version, b"v")
                    };
                    if let Applied::Stored { previous } = e.apply(&[w]).unwrap()[0] {
                        seen.push((k, previous, Some(version)));
                    }
                }
                seen
            })
        })
        .collect();
    let purger = {
        let e = Arc::clone(&e);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut seen: Vec<Transition> = Vec::new();
            while !done.load(Ordering::Relaxed) {
                for (k, version) in e.purge_tombstones(whole_ring(), u64::MAX, 4).unwrap() {
                    seen.push((k, Some(version), None));
                }
            }
            seen
        })
    };
    let mut transitions: Vec<Transition> = Vec::new();
    for w in writers {
        transitions.extend(w.join().unwrap());
    }
    done.store(true, Ordering::Relaxed);
    transitions.extend(purger.join().unwrap());
    let ranges = vec![whole_ring()];
    let mut incremental = TreeSet::new(ranges.clone());
    for (k, previous, new) in &transitions {
        incremental.update(k, *previous, *new);
    }
    let rebuilt = TreeSet::rebuild(e.as_ref(), ranges, 5).unwrap();
    assert_eq!(incremental, rebuilt);
}

// ---------------------------------------------------------------------------------------------
// Hints.

fn rec(hlc: u64, value: Option<&[u8]>) -> Record {
    Record {
        version: v(hlc, 1),
        value: value.map(<[u8]>::to_vec),
    }
}

fn hint(target: NodeId, key: &[u8], record: &Record, stored_at_ms: u64) -> Hint {
    Hint {
        target,
        key: key.to_vec(),
        record: record.clone(),
        stored_at_ms,
    }
}

/// Every hint of `target`, paged by `limit`.
fn all_hints<E: Engine>(e: &E, target: NodeId, limit: usize) -> Vec<(HintId, Hint)> {
    let mut out: Vec<(HintId, Hint)> = Vec::new();
    loop {
        let after = out.last().map(|(id, _)| id.clone());
        let page = e.hints(target, after.as_ref(), limit).unwrap();
        assert!(page.len() <= limit);
        let done = page.len() < limit;
        out.extend(page);
        assert!(out.len() <= 100_000, "hint pagination does not terminate");
        if done {
            return out;
        }
    }
}

/// The counts `hint_targets` must report: what listing every target finds.
fn listed_counts<E: Engine>(
    e: &E,
    targets: impl IntoIterator<Item = NodeId>,
) -> Vec<(NodeId, u64)> {
    targets
        .into_iter()
        .map(|t| (t, all_hints(e, t, 1000).len() as u64))
        .filter(|&(_, n)| n > 0)
        .collect()
}

fn check_hints_put_list_delete<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    assert!(e.hint_targets().unwrap().is_empty());
    assert!(e.hints(2, None, 10).unwrap().is_empty());
    let value = rec(1, Some(b"one"));
    let tombstone = rec(2, None);
    let big = rec(3, Some(&[7u8; 10_000]));
    let id1 = e.put_hint(2, b"k1", &value, 1000).unwrap();
    let id2 = e.put_hint(2, b"k2", &tombstone, 1001).unwrap();
    let id3 = e.put_hint(3, b"k1", &value, 999).unwrap();
    let id4 = e.put_hint(u32::MAX, b"", &big, 0).unwrap();
    let id0 = e.put_hint(0, b"zero", &value, u64::MAX).unwrap();
    assert_eq!(
        e.hints(2, None, 10).unwrap(),
        vec![
            (id1.clone(), hint(2, b"k1", &value, 1000)),
            (id2.clone(), hint(2, b"k2", &tombstone, 1001)),
        ]
    );
    assert_eq!(
        e.hints(3, None, 10).unwrap(),
        vec![(id3.clone(), hint(3, b"k1", &value, 999))]
    );
    assert_eq!(
        e.hints(u32::MAX, None, 10).unwrap(),
        vec![(id4.clone(), hint(u32::MAX, b"", &big, 0))]
    );
    assert_eq!(
        e.hints(0, None, 10).unwrap(),
        vec![(id0, hint(0, b"zero", &value, u64::MAX))]
    );
    assert!(e.hints(1, None, 10).unwrap().is_empty());
    assert!(e.hints(2, None, 0).unwrap().is_empty());
    assert_eq!(
        e.hint_targets().unwrap(),
        vec![(0, 1), (2, 2), (3, 1), (u32::MAX, 1)]
    );
    // Hints live apart from records.
    assert_eq!(e.get(b"k1").unwrap(), None);

    e.delete_hints(std::slice::from_ref(&id1)).unwrap();
    assert_eq!(e.hints(2, None, 10).unwrap().len(), 1);
    assert_eq!(e.hints(2, None, 10).unwrap()[0].0, id2);
    // Already deleted and duplicated ids count once.
    e.delete_hints(&[id1, id2.clone(), id2, id4]).unwrap();
    e.delete_hints(&[]).unwrap();
    assert!(e.hints(2, None, 10).unwrap().is_empty());
    assert_eq!(e.hint_targets().unwrap(), vec![(0, 1), (3, 1)]);
    assert_eq!(e.hints(3, None, 10).unwrap()[0].0, id3);
}

fn check_hints_paginate_oldest_first<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    // Stored out of time order, several per millisecond, with neighbours on both sides.
    let mut expected: Vec<(u64, usize, HintId)> = Vec::new();
    for i in 0..60usize {
        let ms = 1000 + ((i * 37) % 20) as u64;
        let record = rec(i as u64, Some(&key(i)));
        let id = e.put_hint(7, &key(i), &record, ms).unwrap();
        expected.push((ms, i, id));
        e.put_hint(6, &key(i), &record, ms).unwrap();
        e.put_hint(8, &key(i), &record, 0).unwrap();
    }
    // Oldest first; within a millisecond, in the order stored.
    expected.sort();
    for limit in [1, 2, 7, 59, 60, 61, 1000] {
        let got = all_hints(&e, 7, limit);
        let ids: Vec<&HintId> = got.iter().map(|(id, _)| id).collect();
        let want: Vec<&HintId> = expected.iter().map(|(_, _, id)| id).collect();
        assert_eq!(ids, want, "limit {limit}");
        for ((_, h), (ms, i, _)) in got.iter().zip(&expected) {
            assert_eq!(h, &hint(7, &key(*i), &rec(*i as u64, Some(&key(*i))), *ms));
        }
    }
    // Ids order like the listing.
    let got = all_hints(&e, 7, 1000);
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    // A cursor of another target: before it, the listing starts over; after it, nothing.
    let of_6 = e.hints(6, None, 1).unwrap().remove(0).0;
    let of_8 = e.hints(8, None, 1).unwrap().remove(0).0;
    assert_eq!(e.hints(7, Some(&of_6), 1000).unwrap(), got);
    assert!(e.hints(7, Some(&of_8), 1000).unwrap().is_empty());
    // A cursor on a deleted hint still resumes after its position.
    let cursor = got[10].0.clone();
    e.delete_hints(std::slice::from_ref(&cursor)).unwrap();
    assert_eq!(e.hints(7, Some(&cursor), 1000).unwrap(), got[11..].to_vec());
}

fn check_hint_counts_stay_exact<E: Engine>(make: impl Fn() -> E) {
    let e = Arc::new(make());
    // Threads store hints for two targets and delete half of them, each deleting some ids twice
    // and some ids that another thread deletes too.
    let handles: Vec<_> = (0..4u32)
        .map(|t| {
            let e = Arc::clone(&e);
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..100u64 {
                    ids.push(
                        e.put_hint(t % 2, &key(i as usize), &rec(i, None), i)
                            .unwrap(),
                    );
                }
                let doomed: Vec<HintId> = ids.iter().step_by(2).cloned().collect();
                e.delete_hints(&doomed[..25]).unwrap();
                e.delete_hints(&doomed).unwrap();
                ids
            })
        })
        .collect();
    let ids: Vec<Vec<HintId>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Racing deletes of the same ids.
    let racers: Vec<_> = (0..3)
        .map(|_| {
            let e = Arc::clone(&e);
            let same: Vec<HintId> = ids[0].iter().skip(1).step_by(4).cloned().collect();
            std::thread::spawn(move || e.delete_hints(&same).unwrap())
        })
        .collect();
    for r in racers {
        r.join().unwrap();
    }
    assert_eq!(e.hint_targets().unwrap(), vec![(0, 75), (1, 100)]);
    assert_eq!(e.hint_targets().unwrap(), listed_counts(e.as_ref(), [0, 1]));
    // Deleting everything (twice) leaves no target behind.
    let all: Vec<HintId> = ids.into_iter().flatten().collect();
    e.delete_hints(&all).unwrap();
    e.delete_hints(&all).unwrap();
    assert!(e.hint_targets().unwrap().is_empty());
}

fn check_drop_hints_older_than<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    for ms in 100..110u64 {
        e.put_hint(5, &ms.to_be_bytes(), &rec(ms, None), ms)
            .unwrap();
        e.put_hint(4, b"k", &rec(ms, None), ms).unwrap();
        e.put_hint(6, b"k", &rec(ms, None), ms).unwrap();
    }
    // Two hints stored in the same millisecond as the cutoff are kept.
    e.put_hint(5, b"at-cutoff", &rec(1, None), 105).unwrap();
    assert_eq!(e.drop_hints_older_than(5, 100).unwrap(), 0);
    assert_eq!(e.drop_hints_older_than(5, 105).unwrap(), 5);
    let left: Vec<u64> = all_hints(&e, 5, 100)
        .iter()
        .map(|(_, h)| h.stored_at_ms)
        .collect();
    assert_eq!(left, vec![105, 105, 106, 107, 108, 109]);
    assert_eq!(e.drop_hints_older_than(5, 105).unwrap(), 0);
    assert_eq!(e.hint_targets().unwrap(), vec![(4, 10), (5, 6), (6, 10)]);
    assert_eq!(e.drop_hints_older_than(5, u64::MAX).unwrap(), 6);
    assert_eq!(e.drop_hints_older_than(9, u64::MAX).unwrap(), 0);
    // Neighbouring targets are untouched.
    assert_eq!(e.hint_targets().unwrap(), vec![(4, 10), (6, 10)]);
    assert_eq!(all_hints(&e, 4, 3).len(), 10);
    assert_eq!(all_hints(&e, 6, 3).len(), 10);
    assert!(all_hints(&e, 5, 3).is_empty());
    // New hints for the target after a drop are stored and counted normally.
    e.put_hint(5, b"k", &rec(1, None), 1).unwrap();
    assert_eq!(e.hint_targets().unwrap(), vec![(4, 10), (5, 1), (6, 10)]);
    assert_eq!(e.drop_hints_older_than(5, 2).unwrap(), 1);
}

fn check_hints_survive_reopen<H: Harness>(make: impl Fn() -> H) {
    let e = make();
    let mut ids = Vec::new();
    for i in 0..30usize {
        let record = rec(i as u64, (i % 3 != 0).then_some(&b"v"[..]));
        ids.push(
            e.put_hint((i % 3) as NodeId, &key(i), &record, 500)
                .unwrap(),
        );
    }
    e.delete_hints(&ids[..6]).unwrap();
    e.drop_hints_older_than(2, 501).unwrap();
    let before: Vec<Vec<(HintId, Hint)>> = (0..3).map(|t| all_hints(&e, t, 4)).collect();
    let counts = e.hint_targets().unwrap();
    assert_eq!(counts, vec![(0, 8), (1, 8)]);
    let e = e.reopen();
    let after: Vec<Vec<(HintId, Hint)>> = (0..3).map(|t| all_hints(&e, t, 4)).collect();
    assert_eq!(after, before);
    assert_eq!(e.hint_targets().unwrap(), counts);
    // Hints stored after the reopen, in the same millisecond, get new ids that sort after the
    // old ones: nothing is overwritten.
    let id = e.put_hint(0, &key(0), &rec(99, None), 500).unwrap();
    assert!(before[0].iter().all(|(old, _)| *old < id));
    assert_eq!(e.hint_targets().unwrap(), vec![(0, 9), (1, 8)]);
    let e = e.reopen();
    assert_eq!(e.hint_targets().unwrap(), vec![(0, 9), (1, 8)]);
    assert_eq!(all_hints(&e, 0, 100).last().unwrap().0, id);
}

// ---------------------------------------------------------------------------------------------
// Merkle trees over an engine.

fn whole_ring() -> TokenRange {
    TokenRange { start: 0, end: 0 }
}

/// Applies `writes` and feeds what was stored into `trees`.
fn apply_tracked<E: Engine>(e: &E, trees: &mut TreeSet, writes: &[Write]) {
    let applied = e.apply(writes).unwrap();
    assert_eq!(applied.len(), writes.len());
    for (w, a) in writes.iter().zip(applied) {
        if let Applied::Stored { previous } = a {
            trees.update(&w.key, previous, Some(w.record.version));
        }
    }
}

fn check_rebuild_matches_incremental_trees<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    let q = u64::MAX / 4;
    // Three ranges, one wrapping, and a gap (q, 2q] tracked by no tree.
    let ranges = vec![
        TokenRange {
            start: 3 * q,
            end: q,
        },
        TokenRange {
            start: 2 * q,
            end: 2 * q + q / 2,
        },
        TokenRange {
            start: 2 * q + q / 2,
            end: 3 * q,
        },
    ];
    let mut trees = TreeSet::new(ranges.clone());
    assert_eq!(TreeSet::rebuild(&e, ranges.clone(), 10).unwrap(), trees);
    let apply = |trees: &mut TreeSet, writes: Vec<Write>| apply_tracked(&e, trees, &writes);
    apply(
        &mut trees,
        (0..500).map(|i| put(&key(i), v(1, 1), b"a")).collect(),
    );
    apply(
        &mut trees,
        (0..500).step_by(3).map(|i| del(&key(i), v(2, 1))).collect(),
    );
    apply(
        &mut trees,
        (0..500)
            .step_by(5)
            .map(|i| put(&key(i), v(1, 9), b"stale"))
            .collect(),
    );
    apply(
        &mut trees,
        (0..500)
            .step_by(7)
            .map(|i| put(&key(i), v(3, 1), b"new"))
            .collect(),
    );
    apply(
        &mut trees,
        (0..500)
            .step_by(11)
            .map(|i| del(&key(i), v(4, 1)))
            .collect(),
    );
    let purged = purge_all(&e, whole_ring(), 3, 50);
    assert!(!purged.is_empty());
    for (k, version) in purged {
        trees.update(&k, Some(version), None);
    }
    // Writes to purged keys see no previous version.
    apply(
        &mut trees,
        (0..500)
            .step_by(6)
            .map(|i| put(&key(i), v(1, 2), b"again"))
            .collect(),
    );
    assert!(e
        .scan(whole_ring(), None, usize::MAX)
        .unwrap()
        .iter()
        .any(|(_, r)| r.is_tombstone()));
    for batch in [1, 7, 1000] {
        let rebuilt = TreeSet::rebuild(&e, ranges.clone(), batch).unwrap();
        assert_eq!(rebuilt, trees, "batch {batch}");
    }
    // A different store differs in its trees.
    let other = make();
    other.apply(&[put(&key(1), v(1, 1), b"a")]).unwrap();
    let rebuilt = TreeSet::rebuild(&other, ranges.clone(), 10).unwrap();
    assert_ne!(rebuilt, trees);
}

// ---------------------------------------------------------------------------------------------
// Model-based property test.

#[derive(Clone, Debug)]
enum Op {
    Apply(Vec<(usize, u64, u32, Option<Vec<u8>>)>),
    Get(usize),
    Scan {
        start: Token,
        end: Token,
        limit: usize,
    },
    Reopen,
}

const MODEL_KEYS: usize = 12;

fn model_key(i: usize) -> Vec<u8> {
    format!("m{i}").into_bytes()
}

/// A token from the model keys' tokens (shifted by -1, 0 or +1) or anywhere on the ring.
fn token_strategy() -> impl Strategy<Value = Token> {
    prop_oneof![
        (0..MODEL_KEYS, -1i64..=1)
            .prop_map(|(i, d)| token_of(&model_key(i)).wrapping_add_signed(d)),
        any::<u64>(),
        Just(0),
        Just(u64::MAX),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let write = (
        0..MODEL_KEYS,
        0u64..6,
        0u32..3,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)),
    );
    prop_oneof![
        4 => proptest::collection::vec(write, 0..5).prop_map(Op::Apply),
        2 => (0..MODEL_KEYS).prop_map(Op::Get),
        2 => (token_strategy(), token_strategy(), 1usize..5)
            .prop_map(|(start, end, limit)| Op::Scan { start, end, limit }),
        1 => Just(Op::Reopen),
    ]
}

fn run_model<H: Harness>(mut engine: H, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut model: BTreeMap<Vec<u8>, Record> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Apply(ws) => {
                let writes: Vec<Write> = ws
                    .into_iter()
                    .map(|(k, hlc, node, value)| Write {
                        key: model_key(k),
                        record: Record {
                            version: v(hlc, node),
                            value,
                        },
                    })
                    .collect();
                let mut expected = Vec::new();
                for w in &writes {
                    let current = model.get(&w.key);
                    if w.record.supersedes(current) {
                        expected.push(stored(current.map(|r| r.version)));
                        model.insert(w.key.clone(), w.record.clone());
                    } else {
                        expected.push(IGNORED);
                    }
                }
                prop_assert_eq!(engine.apply(&writes).unwrap(), expected);
            }
            Op::Get(k) => {
                prop_assert_eq!(
                    engine.get(&model_key(k)).unwrap(),
                    model.get(&model_key(k)).cloned()
                );
            }
            Op::Scan { start, end, limit } => {
                let range = TokenRange { start, end };
                prop_assert_eq!(
                    scan_all(&engine, range, limit),
                    expected_scan(&model, range)
                );
            }
            Op::Reopen => engine = engine.reopen(),
        }
    }
    let whole = TokenRange { start: 0, end: 0 };
    prop_assert_eq!(scan_all(&engine, whole, 3), expected_scan(&model, whole));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn model_mem(ops in proptest::collection::vec(op_strategy(), 0..40)) {
        run_model(MemEngine::new(), ops)?;
    }
}

proptest! {
    // Each case opens (and reopens) a real database: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn model_rocks(ops in proptest::collection::vec(op_strategy(), 0..40)) {
        run_model(temp_rocks(), ops)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Hint model: random puts, deletes, drops, listings and reopens against a list of live hints.

#[derive(Clone, Debug)]
enum HintOp {
    Put {
        target: NodeId,
        key: usize,
        ms: u64,
        tombstone: bool,
    },
    /// Deletes the hints at these positions of every id handed out so far (deleted ones too).
    Delete(Vec<usize>),
    Drop {
        target: NodeId,
        cutoff_ms: u64,
    },
    List {
        target: NodeId,
        limit: usize,
    },
    Reopen,
}

fn hint_op_strategy() -> impl Strategy<Value = HintOp> {
    prop_oneof![
        5 => (0u32..4, 0..MODEL_KEYS, 0u64..6, any::<bool>())
            .prop_map(|(target, key, ms, tombstone)| HintOp::Put { target, key, ms, tombstone }),
        2 => proptest::collection::vec(0usize..64, 0..6).prop_map(HintOp::Delete),
        1 => (0u32..4, 0u64..7).prop_map(|(target, cutoff_ms)| HintOp::Drop { target, cutoff_ms }),
        2 => (0u32..4, 1usize..4).prop_map(|(target, limit)| HintOp::List { target, limit }),
        1 => Just(HintOp::Reopen),
    ]
}

fn run_hint_model<H: Harness>(mut engine: H, ops: Vec<HintOp>) -> Result<(), TestCaseError> {
    // Every id handed out, and the live hints keyed by (target, ms, put order).
    let mut issued: Vec<HintId> = Vec::new();
    let mut live: BTreeMap<(NodeId, u64, usize), (HintId, Hint)> = BTreeMap::new();
    for op in ops {
        match op {
            HintOp::Put {
                target,
                key,
                ms,
                tombstone,
            } => {
                let record = rec(ms, (!tombstone).then_some(&b"v"[..]));
                let id = engine
                    .put_hint(target, &model_key(key), &record, ms)
                    .unwrap();
                prop_assert!(!issued.contains(&id), "id reused");
                live.insert(
                    (target, ms, issued.len()),
                    (id.clone(), hint(target, &model_key(key), &record, ms)),
                );
                issued.push(id);
            }
            HintOp::Delete(positions) => {
                let ids: Vec<HintId> = positions
                    .iter()
                    .filter_map(|&p| issued.get(p).cloned())
                    .collect();
                engine.delete_hints(&ids).unwrap();
                live.retain(|_, (id, _)| !ids.contains(id));
            }
            HintOp::Drop { target, cutoff_ms } => {
                let before = live.len();
                live.retain(|&(t, ms, _), _| t != target || ms >= cutoff_ms);
                let dropped = engine.drop_hints_older_than(target, cutoff_ms).unwrap();
                prop_assert_eq!(dropped, (before - live.len()) as u64);
            }
            HintOp::List { target, limit } => {
                let expected: Vec<(HintId, Hint)> = live
                    .iter()
                    .filter(|((t, _, _), _)| *t == target)
                    .map(|(_, h)| h.clone())
                    .collect();
                prop_assert_eq!(all_hints(&engine, target, limit), expected);
            }
            HintOp::Reopen => engine = engine.reopen(),
        }
        let mut counts: BTreeMap<NodeId, u64> = BTreeMap::new();
        for (target, _, _) in live.keys() {
            *counts.entry(*target).or_default() += 1;
        }
        prop_assert_eq!(
            engine.hint_targets().unwrap(),
            counts.into_iter().collect::<Vec<_>>()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn hint_model_mem(ops in proptest::collection::vec(hint_op_strategy(), 0..40)) {
        run_hint_model(MemEngine::new(), ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn hint_model_rocks(ops in proptest::collection::vec(hint_op_strategy(), 0..40)) {
        run_hint_model(temp_rocks(), ops)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Merkle model: trees kept up to date from `Applied::previous` and purge results equal trees
// rebuilt from scratch, through random writes, overwrites, deletes, purges and reopens.

#[derive(Clone, Debug)]
enum TreeOp {
    Apply(Vec<(usize, u64, u32, Option<Vec<u8>>)>),
    Purge {
        start: Token,
        end: Token,
        older_than_hlc: u64,
        limit: usize,
    },
    Reopen,
}

fn tree_op_strategy() -> impl Strategy<Value = TreeOp> {
    let write = (
        0..MODEL_KEYS,
        0u64..8,
        0u32..3,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..3)),
    );
    prop_oneof![
        5 => proptest::collection::vec(write, 0..6).prop_map(TreeOp::Apply),
        2 => (token_strategy(), token_strategy(), 0u64..9, 1usize..4).prop_map(
            |(start, end, older_than_hlc, limit)| TreeOp::Purge { start, end, older_than_hlc, limit }
        ),
        1 => Just(TreeOp::Reopen),
    ]
}

/// Non-overlapping ranges cut at `cuts` (sorted, deduplicated), leaving out the ranges whose
/// index is in `gaps`; a single cut is the whole ring.
fn ranges_from_cuts(mut cuts: Vec<Token>, gaps: &[usize]) -> Vec<TokenRange> {
    cuts.sort_unstable();
    cuts.dedup();
    let n = cuts.len();
    (0..n)
        .filter(|i| n == 1 || !gaps.contains(i))
        .map(|i| TokenRange {
            start: cuts[(i + n - 1) % n],
            end: cuts[i],
        })
        .collect()
}

fn run_tree_model<H: Harness>(
    mut engine: H,
    ranges: Vec<TokenRange>,
    ops: Vec<TreeOp>,
) -> Result<(), TestCaseError> {
    let mut trees = TreeSet::new(ranges.clone());
    for op in ops {
        match op {
            TreeOp::Apply(ws) => {
                let writes: Vec<Write> = ws
                    .into_iter()
                    .map(|(k, hlc, node, value)| Write {
                        key: model_key(k),
                        record: Record {
                            version: v(hlc, node),
                            value,
                        },
                    })
                    .collect();
                apply_tracked(&engine, &mut trees, &writes);
            }
            TreeOp::Purge {
                start,
                end,
                older_than_hlc,
                limit,
            } => {
                let range = TokenRange { start, end };
                let purged = engine
                    .purge_tombstones(range, older_than_hlc, limit)
                    .unwrap();
                prop_assert!(purged.len() <= limit);
                for (k, version) in purged {
                    prop_assert!(range.contains(token_of(&k)));
                    prop_assert!(version.hlc < older_than_hlc);
                    prop_assert_eq!(engine.get(&k).unwrap(), None);
                    trees.update(&k, Some(version), None);
                }
                prop_assert_eq!(
                    &TreeSet::rebuild(&engine, ranges.clone(), 2).unwrap(),
                    &trees
                );
            }
            TreeOp::Reopen => engine = engine.reopen(),
        }
    }
    prop_assert_eq!(TreeSet::rebuild(&engine, ranges, 3).unwrap(), trees);
    Ok(())
}

fn tree_ranges_strategy() -> impl Strategy<Value = Vec<TokenRange>> {
    (
        proptest::collection::vec(token_strategy(), 1..5),
        proptest::collection::vec(0usize..5, 0..2),
    )
        .prop_map(|(cuts, gaps)| ranges_from_cuts(cuts, &gaps))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn tree_model_mem(
        ranges in tree_ranges_strategy(),
        ops in proptest::collection::vec(tree_op_strategy(), 0..40),
    ) {
        run_tree_model(MemEngine::new(), ranges, ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn tree_model_rocks(
        ranges in tree_ranges_strategy(),
        ops in proptest::collection::vec(tree_op_strategy(), 0..40),
    ) {
        run_tree_model(temp_rocks(), ranges, ops)?;
    }
}
