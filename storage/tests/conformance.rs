//! One conformance suite for every [`Engine`] backend: each `check_*` function is generic over the
//! engine and run against [`MemEngine`] and [`RocksEngine`] (in a temporary directory), plus a
//! proptest comparing random operation sequences against a `BTreeMap` model.

use proptest::prelude::*;
use proto::{Record, Version};
use ring::{token_of, Token, TokenRange};
use std::collections::BTreeMap;
use std::sync::Arc;
use storage::{Engine, MemEngine, RocksEngine, RocksOptions, ScanCursor, StorageError, Write};
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
    fn apply(&self, writes: &[Write]) -> Result<Vec<bool>, StorageError> {
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
    fn flush(&self) -> Result<(), StorageError> {
        self.engine.flush()
    }
    fn approximate_len(&self) -> u64 {
        self.engine.approximate_len()
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
    check_lww_versions,
    check_tombstones_by_version,
    check_same_key_twice_in_one_batch,
    check_empty_apply,
    check_scan_plain_ranges,
    check_scan_wrapping_ranges,
    check_scan_cursor_resumption,
    check_scan_edge_cases,
    check_meta_round_trip,
    check_approximate_len,
    check_concurrent_apply,
    check_reopen_keeps_acknowledged_writes,
);

// ---------------------------------------------------------------------------------------------
// Helpers.

fn v(hlc: u64, node: u32) -> Version {
    Version { hlc, node }
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
    assert!(engine.apply(&writes).unwrap().iter().all(|&a| a));
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
    assert_eq!(e.apply(&writes).unwrap(), vec![true; writes.len()]);
    for w in &writes {
        assert_eq!(
            e.get(&w.key).unwrap().as_ref(),
            Some(&w.record),
            "key {:?}",
            w.key
        );
    }
}

fn check_lww_versions<E: Engine>(make: impl Fn() -> E) {
    let e = make();
    assert_eq!(e.apply(&[put(b"k", v(10, 2), b"ten")]).unwrap(), vec![true]);
    // Older clock: ignored.
    assert_eq!(
        e.apply(&[put(b"k", v(9, 9), b"nine")]).unwrap(),
        vec![false]
    );
    // Same clock, lower node: ignored.
    assert_eq!(
        e.apply(&[put(b"k", v(10, 1), b"ten-1")]).unwrap(),
        vec![false]
    );
    // Equal version: ignored (first write wins ties of identical versions).
    assert_eq!(
        e.apply(&[put(b"k", v(10, 2), b"other")]).unwrap(),
        vec![false]
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
        vec![true]
    );
    // Newer clock: applied.
    assert_eq!(
        e.apply(&[put(b"k", v(11, 0), b"eleven")]).unwrap(),
        vec![true]
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
    assert_eq!(e.apply(&[del(b"k", v(4, 1))]).unwrap(), vec![false]);
    assert_eq!(
        e.get(b"k").unwrap().unwrap().value.as_deref(),
        Some(&b"five"[..])
    );
    // A newer tombstone does.
    assert_eq!(e.apply(&[del(b"k", v(6, 1))]).unwrap(), vec![true]);
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
        vec![false]
    );
    assert!(e.get(b"k").unwrap().unwrap().is_tombstone());
    // Equal version does not either.
    assert_eq!(
        e.apply(&[put(b"k", v(6, 1), b"zombie")]).unwrap(),
        vec![false]
    );
    // A newer value replaces the tombstone.
    assert_eq!(e.apply(&[put(b"k", v(7, 1), b"back")]).unwrap(), vec![true]);
    assert_eq!(
        e.get(b"k").unwrap().unwrap().value.as_deref(),
        Some(&b"back"[..])
    );
    // A tombstone for a never-written key is stored.
    assert_eq!(e.apply(&[del(b"fresh", v(1, 1))]).unwrap(), vec![true]);
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
    assert_eq!(r, vec![true, true]);
    assert_eq!(e.get(b"a").unwrap().unwrap().version, v(2, 1));
    // Newer then older: the older one sees the newer one of the same batch.
    let r = e
        .apply(&[put(b"b", v(2, 1), b"2"), put(b"b", v(1, 1), b"1")])
        .unwrap();
    assert_eq!(r, vec![true, false]);
    assert_eq!(
        e.get(b"b").unwrap().unwrap().value.as_deref(),
        Some(&b"2"[..])
    );
    // Equal versions: only the first.
    let r = e
        .apply(&[put(b"c", v(3, 1), b"first"), put(b"c", v(3, 1), b"second")])
        .unwrap();
    assert_eq!(r, vec![true, false]);
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
    assert_eq!(r, vec![false, true, true, true, false]);
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
    assert_eq!(e.apply(&[]).unwrap(), Vec::<bool>::new());
    assert_eq!(e.apply(&[put(b"a", v(1, 1), b"1")]).unwrap(), vec![true]);
    // A batch where nothing applies.
    assert_eq!(e.apply(&[put(b"a", v(0, 1), b"0")]).unwrap(), vec![false]);
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
                    assert!(r[1], "private key versions only grow");
                    if r[0] {
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
        vec![false]
    );
    let e = e.reopen();
    assert_eq!(e.get(&key(2)).unwrap(), model.get(&key(2)).cloned());
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
                    let ok = w.record.supersedes(model.get(&w.key));
                    if ok {
                        model.insert(w.key.clone(), w.record.clone());
                    }
                    expected.push(ok);
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
