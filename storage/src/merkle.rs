//! Incremental Merkle trees for anti-entropy: one [`RangeTree`] per token range a node
//! replicates, grouped in a [`TreeSet`]. A pure data structure (the only I/O is
//! [`TreeSet::rebuild`], which scans an [`Engine`]).
//!
//! A tree splits its range into [`leaf_count`] leaves of equal token width. A leaf is an XOR
//! accumulator: the XOR of [`entry_hash`] of every `(key, version)` stored in it, tombstones
//! included. XOR makes an update O(1) (XOR the old entry out, the new one in) and the result
//! independent of the order of writes, so two replicas holding the same records have identical
//! trees. Only leaves are stored; an inner node is the XOR of its [`FANOUT`] children (that is, of
//! every leaf below it) and is computed on demand. Level 0 is the leaves, level
//! [`RangeTree::levels`] is the root.
//!
//! The leaf count depends only on the range, so both replicas of a range build trees of the same
//! shape and can compare them node by node ([`RangeTree::children`]), then scan the token interval
//! of each differing leaf ([`RangeTree::leaf_range`]).

use crate::engine::{Engine, ScanCursor};
use crate::error::StorageError;
use proto::Version;
use ring::{Token, TokenRange};

/// A tree hash: the first 16 bytes of a blake3 hash, or an XOR of such.
pub type Digest = [u8; 16];

/// Children per inner node.
pub const FANOUT: u32 = 16;
/// Fewest leaves a tree has (one level under the root).
pub const MIN_LEAVES: u32 = FANOUT;
/// Most leaves a tree has: the whole ring's tree, whose leaves span 2^48 tokens each.
pub const MAX_LEAVES: u32 = 1 << 16;
/// Leaves of one tree are sized so that a leaf spans at most this many tokens (until
/// [`MAX_LEAVES`] caps the count): the whole ring over [`MAX_LEAVES`].
const LEAF_TOKENS_LOG2: u32 = 64 - MAX_LEAVES.trailing_zeros();

/// The first 16 bytes of `blake3(key)`: how anti-entropy names a key without sending it.
pub fn key_digest(key: &[u8]) -> Digest {
    first_16(blake3::hash(key))
}

/// The hash of one stored entry: the first 16 bytes of
/// `blake3(key_len u32 BE ++ key ++ version.hlc u64 BE ++ version.node u32 BE)`.
pub fn entry_hash(key: &[u8], version: Version) -> Digest {
    // Keys are far below 4 GiB; the length only delimits key from version.
    let len = u32::try_from(key.len()).unwrap_or(u32::MAX);
    let mut h = blake3::Hasher::new();
    h.update(&len.to_be_bytes());
    h.update(key);
    h.update(&version.hlc.to_be_bytes());
    h.update(&version.node.to_be_bytes());
    first_16(h.finalize())
}

fn first_16(hash: blake3::Hash) -> Digest {
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash.as_bytes()[..16]);
    out
}

fn xor(a: Digest, b: Digest) -> Digest {
    (u128::from_ne_bytes(a) ^ u128::from_ne_bytes(b)).to_ne_bytes()
}

/// XOR of a slice of digests.
fn xor_all(digests: &[Digest]) -> Digest {
    digests
        .iter()
        .fold(0u128, |acc, d| acc ^ u128::from_ne_bytes(*d))
        .to_ne_bytes()
}

/// Number of tokens in `range`: 2^64 for the whole ring (`start == end`).
fn width(range: TokenRange) -> u128 {
    if range.start == range.end {
        1u128 << 64
    } else {
        u128::from(range.end.wrapping_sub(range.start))
    }
}

/// The number of leaves of a range's tree: the smallest power of [`FANOUT`] that is at least
/// `range_fraction * 65536` (`range_fraction` = width / 2^64, the whole ring when
/// `start == end`), clamped to [`MIN_LEAVES`]..=[`MAX_LEAVES`]. A function of the range alone, so
/// every replica computes the same shape.
pub fn leaf_count(range: TokenRange) -> u32 {
    // FANOUT^k >= width / 2^48  <=>  FANOUT^k >= ceil(width / 2^48), as FANOUT^k is an integer.
    let needed = width(range).div_ceil(1u128 << LEAF_TOKENS_LOG2);
    let mut leaves = MIN_LEAVES;
    while u128::from(leaves) < needed && leaves < MAX_LEAVES {
        leaves *= FANOUT;
    }
    leaves
}

/// The hash tree of one token range: its leaves (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeTree {
    range: TokenRange,
    leaves: Vec<Digest>,
}

impl RangeTree {
    /// The tree of an empty range: every leaf zero.
    pub fn new(range: TokenRange) -> Self {
        RangeTree {
            range,
            leaves: vec![[0; 16]; leaf_count(range) as usize],
        }
    }

    /// The token range this tree covers.
    pub fn range(&self) -> TokenRange {
        self.range
    }

    /// Number of leaves ([`leaf_count`] of the range).
    pub fn leaf_count(&self) -> u32 {
        // The length is a power of FANOUT no larger than MAX_LEAVES.
        self.leaves.len() as u32
    }

    /// Number of levels above the leaves: log16 of the leaf count (1 to 4). The root is at this
    /// level.
    pub fn levels(&self) -> u8 {
        (self.leaf_count().trailing_zeros() / FANOUT.trailing_zeros()) as u8
    }

    /// The leaf holding `token`, or `None` if `token` is outside the range.
    ///
    /// With offset `o = token - start - 1` and width `W` (both wrapping; `W` = 2^64 for the whole
    /// ring), the leaf is `o * leaf_count / W`.
    pub fn leaf_of(&self, token: Token) -> Option<u32> {
        if !self.range.contains(token) {
            return None;
        }
        let offset = u128::from(token.wrapping_sub(self.range.start).wrapping_sub(1));
        // offset < width, so the quotient is below the leaf count.
        Some((offset * u128::from(self.leaf_count()) / width(self.range)) as u32)
    }

    /// The exact token interval of `leaf`: a scan of it returns exactly the keys whose token maps
    /// to `leaf`. `None` for a leaf index out of bounds (indices may come from peers) and for a
    /// leaf that holds no token, which happens only when the range has fewer tokens than leaves.
    pub fn leaf_range(&self, leaf: u32) -> Option<TokenRange> {
        if leaf >= self.leaf_count() {
            return None;
        }
        let count = u128::from(self.leaf_count());
        let w = width(self.range);
        // Offsets o with leaf * W <= o * count < (leaf + 1) * W.
        let first = (u128::from(leaf) * w).div_ceil(count);
        let past_last = (u128::from(leaf + 1) * w).div_ceil(count);
        if first >= past_last {
            return None;
        }
        // Tokens start + 1 + first ..= start + past_last, i.e. (start + first, start + past_last].
        // Both offsets are at most 2^64; truncating to u64 is the wrap-around of the ring.
        Some(TokenRange {
            start: self.range.start.wrapping_add(first as u64),
            end: self.range.start.wrapping_add(past_last as u64),
        })
    }

    /// Records that `key` (whose token is `token`) changed from `previous` to `new` (`None` =
    /// absent): XORs the old entry out of its leaf and the new one in. O(1). A token outside the
    /// range is ignored.
    pub fn update(
        &mut self,
        token: Token,
        key: &[u8],
        previous: Option<Version>,
        new: Option<Version>,
    ) {
        if previous == new {
            return;
        }
        let Some(leaf) = self
            .leaf_of(token)
            .and_then(|l| self.leaves.get_mut(l as usize))
        else {
            return;
        };
        for version in [previous, new].into_iter().flatten() {
            *leaf = xor(*leaf, entry_hash(key, version));
        }
    }

    /// The root hash: the XOR of every entry in the range.
    pub fn root(&self) -> Digest {
        xor_all(&self.leaves)
    }

    /// Every hash at `level`, left to right: the leaves at level 0, `[root]` at level
    /// [`RangeTree::levels`], nothing above.
    pub fn level_hashes(&self, level: u8) -> Vec<Digest> {
        if level > self.levels() {
            return Vec::new();
        }
        let mut hashes = self.leaves.clone();
        for _ in 0..level {
            hashes = hashes.chunks_exact(FANOUT as usize).map(xor_all).collect();
        }
        hashes
    }

    /// The [`FANOUT`] hashes at `level` under node `node` of level `level + 1`, left to right.
    /// Empty when `level + 1` is above the root or `node` does not exist there (indices may come
    /// from peers: out-of-range input is answered, never a panic).
    pub fn children(&self, level: u8, node: u32) -> Vec<Digest> {
        if level >= self.levels() {
            return Vec::new();
        }
        // Leaves under one node of `level`, and under one node of `level + 1`.
        let child_span = (FANOUT as usize).pow(u32::from(level));
        let node_span = child_span * FANOUT as usize;
        let Some(below) = (node as usize)
            .checked_mul(node_span)
            .and_then(|first| self.leaves.get(first..first + node_span))
        else {
            return Vec::new();
        };
        below.chunks_exact(child_span).map(xor_all).collect()
    }
}

/// The trees of every range a node replicates, found by token. Ranges are fixed at construction
/// and must not overlap (ring ownership ranges never do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeSet {
    /// Sorted by `(range.end, range.start)`: the tree containing a token is the first whose end is
    /// at or after it, or else the first one (the wrapping range, if any).
    trees: Vec<RangeTree>,
}

impl TreeSet {
    /// Empty trees for `ranges` (duplicates are merged).
    pub fn new(mut ranges: Vec<TokenRange>) -> Self {
        ranges.sort_by_key(|r| (r.end, r.start));
        ranges.dedup();
        TreeSet {
            trees: ranges.into_iter().map(RangeTree::new).collect(),
        }
    }

    /// Takes over from `old` the tree of every range both sets have (the same bounds: its
    /// entries are the same keys), and returns the ranges whose trees stay empty (to be built
    /// from storage). A ring change that moves a few ranges rebuilds only those.
    pub fn adopt_from(&mut self, old: &TreeSet) -> Vec<TokenRange> {
        let mut missing = Vec::new();
        for tree in &mut self.trees {
            match old.tree(&tree.range) {
                Some(t) => *tree = t.clone(),
                None => missing.push(tree.range),
            }
        }
        missing
    }

    /// The trees' ranges, ascending by end token.
    pub fn ranges(&self) -> impl Iterator<Item = &TokenRange> {
        self.trees.iter().map(|t| &t.range)
    }

    /// The tree of exactly `range`.
    pub fn tree(&self, range: &TokenRange) -> Option<&RangeTree> {
        self.trees
            .binary_search_by_key(&(range.end, range.start), |t| (t.range.end, t.range.start))
            .ok()
            .and_then(|i| self.trees.get(i))
    }

    /// The tree whose range contains `token`, if any. O(log ranges).
    pub fn tree_of(&self, token: Token) -> Option<&RangeTree> {
        self.index_of(token).and_then(|i| self.trees.get(i))
    }

    fn index_of(&self, token: Token) -> Option<usize> {
        let after = self.trees.partition_point(|t| t.range.end < token);
        // Past every end: only a wrapping range (which has the smallest end) can hold it.
        let candidate = if after < self.trees.len() { after } else { 0 };
        self.trees
            .get(candidate)
            .filter(|t| t.range.contains(token))
            .map(|_| candidate)
    }

    /// Records that `key` changed from `previous` to `new` (`None` = absent) in the tree whose
    /// range holds its token; a key in none of the ranges is ignored. Feed it
    /// [`crate::Applied::Stored`]'s `previous` with the written version, and `(Some(version),
    /// None)` for each tombstone [`Engine::purge_tombstones`] returns.
    pub fn update(&mut self, key: &[u8], previous: Option<Version>, new: Option<Version>) {
        let token = ring::token_of(key);
        if let Some(tree) = self.index_of(token).and_then(|i| self.trees.get_mut(i)) {
            tree.update(token, key, previous, new);
        }
    }

    /// Builds the trees of `ranges` from what `engine` stores (tombstones included), scanning each
    /// range in pages of `batch` records. Writes applied during the rebuild may or may not be
    /// counted: rebuild while writes are held back, or rebuild and then apply the updates made
    /// since.
    pub fn rebuild(
        engine: &dyn Engine,
        ranges: Vec<TokenRange>,
        batch: usize,
    ) -> Result<TreeSet, StorageError> {
        let batch = batch.max(1);
        let mut set = TreeSet::new(ranges);
        for tree in &mut set.trees {
            let mut cursor: Option<ScanCursor> = None;
            loop {
                let page = engine.scan(tree.range, cursor.as_ref(), batch)?;
                for (key, record) in &page {
                    tree.update(ring::token_of(key), key, None, Some(record.version));
                }
                match page.last() {
                    Some((key, _)) if page.len() >= batch => cursor = Some(ScanCursor::after(key)),
                    _ => break,
                }
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    const FULL: TokenRange = TokenRange { start: 7, end: 7 };

    fn v(hlc: u64, node: u32) -> Version {
        Version { hlc, node }
    }

    /// A tree with `n` keys of versions `(1, 1)` in it.
    fn tree_with(range: TokenRange, keys: impl IntoIterator<Item = Vec<u8>>) -> RangeTree {
        let mut t = RangeTree::new(range);
        for k in keys {
            t.update(ring::token_of(&k), &k, None, Some(v(1, 1)));
        }
        t
    }

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("key-{i}").into_bytes()).collect()
    }

    #[test]
    fn hashes_match_their_definitions() {
        let hash = blake3::hash(b"hello");
        assert_eq!(key_digest(b"hello")[..], hash.as_bytes()[..16]);
        let mut input = Vec::new();
        input.extend_from_slice(&3u32.to_be_bytes());
        input.extend_from_slice(b"abc");
        input.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        input.extend_from_slice(&9u32.to_be_bytes());
        let expected = blake3::hash(&input);
        assert_eq!(
            entry_hash(b"abc", v(0x0102_0304_0506_0708, 9))[..],
            expected.as_bytes()[..16]
        );
        // The length prefix keeps key bytes and version bytes apart.
        assert_ne!(entry_hash(b"ab", v(1, 1)), entry_hash(b"abc", v(1, 1)));
        assert_ne!(entry_hash(b"k", v(1, 2)), entry_hash(b"k", v(2, 1)));
    }

    #[test]
    fn leaf_count_depends_on_the_range_width_only() {
        let r = |start: u64, w: u64| TokenRange {
            start,
            end: start.wrapping_add(w),
        };
        assert_eq!(leaf_count(FULL), 65536);
        assert_eq!(leaf_count(r(0, u64::MAX)), 65536);
        assert_eq!(leaf_count(r(5, 1 << 63)), 65536);
        assert_eq!(leaf_count(r(5, 1 << 60)), 4096);
        assert_eq!(leaf_count(r(u64::MAX - 3, (1 << 60) + 1)), 65536);
        assert_eq!(leaf_count(r(1, 1 << 56)), 256);
        assert_eq!(leaf_count(r(1, (1 << 52) + 1)), 256);
        assert_eq!(leaf_count(r(1, 1 << 52)), 16);
        assert_eq!(leaf_count(r(1, 1)), 16);
        // Wrapping and not: same width, same count.
        assert_eq!(
            leaf_count(r(u64::MAX - 10, 1 << 57)),
            leaf_count(r(10, 1 << 57))
        );
        for (range, levels) in [(FULL, 4), (r(0, 1 << 60), 3), (r(0, 100), 1)] {
            let t = RangeTree::new(range);
            assert_eq!(t.levels(), levels);
            assert_eq!(t.leaf_count(), 16u32.pow(u32::from(levels)));
            assert_eq!(t.level_hashes(0).len(), t.leaf_count() as usize);
            assert_eq!(t.level_hashes(levels), vec![t.root()]);
            assert!(t.level_hashes(levels + 1).is_empty());
        }
    }

    /// Ranges worth testing: wrapping, full ring, tiny, ending at the extremes.
    fn range_strategy() -> impl Strategy<Value = TokenRange> {
        prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(start, end)| TokenRange { start, end }),
            (any::<u64>(), 1u64..200).prop_map(|(start, w)| TokenRange {
                start,
                end: start.wrapping_add(w)
            }),
            any::<u64>().prop_map(|t| TokenRange { start: t, end: t }),
            (any::<u64>(), 0u32..4).prop_map(|(start, k)| TokenRange {
                start,
                end: start.wrapping_add(1 << (52 + 4 * k)),
            }),
            Just(TokenRange {
                start: u64::MAX,
                end: 0
            }),
            Just(TokenRange {
                start: 0,
                end: u64::MAX
            }),
            any::<u64>().prop_map(|end| TokenRange {
                start: u64::MAX,
                end
            }),
            any::<u64>().prop_map(|start| TokenRange {
                start,
                end: u64::MAX
            }),
        ]
    }

    /// Checks that `token` maps to the leaf whose `leaf_range` contains it, and that no other leaf
    /// claims it.
    fn check_token(t: &RangeTree, token: Token) -> Result<(), TestCaseError> {
        match t.leaf_of(token) {
            None => prop_assert!(!t.range().contains(token)),
            Some(leaf) => {
                prop_assert!(leaf < t.leaf_count());
                let lr = t.leaf_range(leaf);
                prop_assert!(
                    lr.is_some(),
                    "leaf {} of token {} has no range",
                    leaf,
                    token
                );
                let lr = lr.unwrap_or(t.range());
                prop_assert!(lr.contains(token), "leaf {} {:?} lacks {}", leaf, lr, token);
                for other in [leaf.wrapping_sub(1), leaf + 1] {
                    if let Some(o) = t.leaf_range(other) {
                        prop_assert!(!o.contains(token), "neighbour {} claims {}", other, token);
                    }
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn every_token_maps_to_the_leaf_whose_range_contains_it(
            range in range_strategy(),
            tokens in proptest::collection::vec(any::<u64>(), 8),
            leaves in proptest::collection::vec(any::<u32>(), 4),
        ) {
            let t = RangeTree::new(range);
            let mut probes = tokens;
            // Boundaries of the range and of some leaves, and their neighbours.
            probes.extend([range.start, range.end, 0, u64::MAX]);
            for leaf in leaves.iter().map(|l| l % t.leaf_count()).chain([0, t.leaf_count() - 1]) {
                if let Some(lr) = t.leaf_range(leaf) {
                    prop_assert_eq!(t.leaf_of(lr.end), Some(leaf));
                    prop_assert_eq!(t.leaf_of(lr.start.wrapping_add(1)), Some(leaf));
                    probes.extend([lr.start, lr.end]);
                }
            }
            for p in probes.clone() {
                for d in [-1i64, 0, 1] {
                    check_token(&t, p.wrapping_add_signed(d))?;
                }
            }
            // The first and last leaves start and end where the range does.
            let first = t.leaf_range(0);
            let last = t.leaf_range(t.leaf_count() - 1);
            if let (Some(first), Some(last)) = (first, last) {
                prop_assert_eq!(first.start, range.start);
                prop_assert_eq!(last.end, range.end);
            }
        }
    }

    #[test]
    fn leaves_of_narrow_ranges_partition_them_exactly() {
        for start in [0, 1000, u64::MAX - 40, u64::MAX] {
            for w in [1u64, 2, 15, 16, 17, 31, 100, 257] {
                let range = TokenRange {
                    start,
                    end: start.wrapping_add(w),
                };
                let t = RangeTree::new(range);
                let mut per_leaf = vec![0u64; t.leaf_count() as usize];
                for o in 0..w {
                    let token = start.wrapping_add(1 + o);
                    let leaf = t.leaf_of(token).unwrap();
                    per_leaf[leaf as usize] += 1;
                }
                for (leaf, &n) in per_leaf.iter().enumerate() {
                    let lr = t.leaf_range(leaf as u32);
                    match lr {
                        None => assert_eq!(n, 0, "leaf {leaf} of {range:?}"),
                        Some(lr) => {
                            assert_eq!(u128::from(n), width(lr), "leaf {leaf} of {range:?}: {lr:?}")
                        }
                    }
                }
                // Leaves are contiguous and in ring order.
                let ranges: Vec<TokenRange> = (0..t.leaf_count())
                    .filter_map(|l| t.leaf_range(l))
                    .collect();
                for pair in ranges.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                }
            }
        }
        assert_eq!(
            RangeTree::new(TokenRange { start: 5, end: 6 }).leaves.len(),
            16
        );
    }

    #[test]
    fn out_of_range_indices_are_answered_not_panicked() {
        let t = tree_with(FULL, keys(100));
        assert_eq!(t.leaf_range(t.leaf_count()), None);
        assert_eq!(t.leaf_range(u32::MAX), None);
        assert!(t.leaf_range(t.leaf_count() - 1).is_some());
        for level in 0..t.levels() {
            let nodes_above = t.level_hashes(level + 1).len() as u32;
            assert_eq!(t.children(level, nodes_above - 1).len(), 16);
            assert!(t.children(level, nodes_above).is_empty());
            assert!(t.children(level, u32::MAX).is_empty());
        }
        assert!(t.children(t.levels(), 0).is_empty());
        assert!(t.children(u8::MAX, 0).is_empty());
        assert!(t.level_hashes(u8::MAX).is_empty());
        let small = tree_with(TokenRange { start: 0, end: 10 }, keys(3));
        assert_eq!(small.children(0, 0).len(), 16);
        assert!(small.children(0, 1).is_empty());
        assert!(small.children(1, 0).is_empty());
    }

    #[test]
    fn children_are_the_level_below_and_xor_up_to_the_parent() {
        for range in [
            FULL,
            TokenRange {
                start: 3,
                end: 3 + (1 << 56),
            },
        ] {
            let t = tree_with(range, keys(3000));
            for level in 0..t.levels() {
                let below = t.level_hashes(level);
                let above = t.level_hashes(level + 1);
                assert_eq!(below.len(), above.len() * 16);
                for (node, parent) in above.iter().enumerate() {
                    let children = t.children(level, node as u32);
                    assert_eq!(&children[..], &below[node * 16..node * 16 + 16]);
                    assert_eq!(xor_all(&children), *parent);
                }
            }
        }
    }

    #[test]
    fn insert_then_remove_is_the_empty_tree() {
        let mut t = tree_with(FULL, keys(50));
        assert_ne!(t.root(), [0; 16]);
        for k in keys(50) {
            t.update(ring::token_of(&k), &k, Some(v(1, 1)), None);
        }
        assert_eq!(t, RangeTree::new(FULL));
        assert_eq!(t.root(), [0; 16]);
        // Overwriting a version, then going back, is also the identity.
        let mut t = tree_with(FULL, keys(5));
        let before = t.clone();
        let k = keys(5).remove(2);
        t.update(ring::token_of(&k), &k, Some(v(1, 1)), Some(v(2, 1)));
        assert_ne!(t, before);
        t.update(ring::token_of(&k), &k, Some(v(2, 1)), Some(v(1, 1)));
        assert_eq!(t, before);
        // A token outside the range changes nothing.
        let narrow = TokenRange { start: 10, end: 20 };
        let mut t = RangeTree::new(narrow);
        t.update(21, b"k", None, Some(v(1, 1)));
        t.update(10, b"k", None, Some(v(1, 1)));
        assert_eq!(t, RangeTree::new(narrow));
        t.update(20, b"k", None, Some(v(1, 1)));
        assert_ne!(t, RangeTree::new(narrow));
    }

    #[test]
    fn one_differing_key_differs_in_one_leaf_and_one_path() {
        for range in [
            FULL,
            TokenRange {
                start: u64::MAX - (1 << 58),
                end: 1 << 58,
            },
        ] {
            let keys: Vec<Vec<u8>> = keys(5000)
                .into_iter()
                .filter(|k| range.contains(ring::token_of(k)))
                .collect();
            let a = tree_with(range, keys.clone());
            let mut b = a.clone();
            let changed = &keys[keys.len() / 2];
            let token = ring::token_of(changed);
            b.update(token, changed, Some(v(1, 1)), Some(v(1, 2)));
            let leaf = a.leaf_of(token).unwrap();
            let mut expected_node = leaf as usize;
            for level in 0..=a.levels() {
                let (ha, hb) = (a.level_hashes(level), b.level_hashes(level));
                let differing: Vec<usize> = (0..ha.len()).filter(|&i| ha[i] != hb[i]).collect();
                assert_eq!(differing, vec![expected_node], "level {level}");
                expected_node /= 16;
            }
            assert_ne!(a.root(), b.root());
        }
    }

    proptest! {
        #[test]
        fn updates_commute(
            writes in proptest::collection::vec((0usize..40, 0u64..5), 0..60),
            seed in any::<u64>(),
        ) {
            // Each key's history of versions, applied as (previous, new) steps.
            let steps = |order: &[(usize, u64)]| {
                let mut t = RangeTree::new(FULL);
                let mut current: std::collections::HashMap<usize, Version> = Default::default();
                for &(k, hlc) in order {
                    let key = format!("k{k}").into_bytes();
                    let prev = current.insert(k, v(hlc, 1));
                    t.update(ring::token_of(&key), &key, prev, Some(v(hlc, 1)));
                }
                (t, current)
            };
            let (a, final_a) = steps(&writes);
            // The same final state reached in another order (only final versions matter).
            let mut shuffled: Vec<(usize, u64)> = final_a.iter().map(|(&k, ver)| (k, ver.hlc)).collect();
            let n = shuffled.len();
            if n > 1 {
                shuffled.rotate_left((seed % n as u64) as usize);
                shuffled.swap(0, (seed as usize / 7) % n);
            }
            let (b, _) = steps(&shuffled);
            prop_assert_eq!(a.root(), b.root());
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn tree_set_routes_tokens_to_their_range() {
        let q = u64::MAX / 4;
        let ranges = vec![
            TokenRange {
                start: 3 * q,
                end: q / 2,
            }, // wraps
            TokenRange {
                start: q,
                end: 2 * q,
            },
            TokenRange {
                start: 2 * q,
                end: 3 * q,
            },
            TokenRange {
                start: q,
                end: 2 * q,
            }, // duplicate
        ];
        let set = TreeSet::new(ranges.clone());
        assert_eq!(set.ranges().count(), 3);
        for token in [
            0,
            1,
            q / 2,
            q / 2 + 1,
            q,
            q + 1,
            2 * q,
            2 * q + 1,
            3 * q,
            3 * q + 1,
            u64::MAX,
        ] {
            let expected = ranges.iter().find(|r| r.contains(token));
            assert_eq!(
                set.tree_of(token).map(|t| t.range()),
                expected.copied(),
                "token {token}"
            );
        }
        for r in &ranges {
            assert_eq!(set.tree(r).map(|t| t.range()), Some(*r));
        }
        assert!(set
            .tree(&TokenRange {
                start: q,
                end: 3 * q
            })
            .is_none());
        // Keys in the gap (q/2, q] are ignored; the others land in exactly one tree.
        let mut set = set;
        let mut expected = TreeSet::new(ranges.clone());
        for k in keys(500) {
            let token = ring::token_of(&k);
            set.update(&k, None, Some(v(1, 1)));
            if let Some(i) = expected.trees.iter().position(|t| t.range.contains(token)) {
                expected.trees[i].update(token, &k, None, Some(v(1, 1)));
            }
        }
        assert_eq!(set, expected);
        assert!(set.ranges().all(|r| set.tree(r).unwrap().root() != [0; 16]));
        // A whole-ring set takes everything.
        let mut whole = TreeSet::new(vec![FULL]);
        whole.update(b"x", None, Some(v(1, 1)));
        assert_ne!(whole.tree(&FULL).unwrap().root(), [0; 16]);
        // An empty set ignores everything.
        let mut empty = TreeSet::new(Vec::new());
        empty.update(b"x", None, Some(v(1, 1)));
        assert_eq!(empty, TreeSet::default());
    }

    #[test]
    fn hashing_a_full_tree_is_fast() {
        let t = tree_with(FULL, keys(10_000));
        let started = Instant::now();
        let rounds = 20;
        for _ in 0..rounds {
            for level in 0..=t.levels() {
                assert!(!t.level_hashes(level).is_empty());
            }
            assert_eq!(t.children(3, 0).len(), 16);
            assert_eq!(t.children(0, 4095).len(), 16);
        }
        let per_round = started.elapsed() / rounds;
        // Every level of a 65536-leaf tree costs well under a millisecond in release; the generous
        // bound only catches accidental quadratic work (which would take seconds).
        assert!(per_round < Duration::from_millis(50), "{per_round:?}");
    }
}
