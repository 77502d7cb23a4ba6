//! Tokens: positions on the 64-bit ring, how keys and nodes are hashed onto it, and ranges of
//! the ring. Everything here is a pure function of its inputs, so every node and client agrees.

use serde::{Deserialize, Serialize};

use crate::topology::NodeId;

/// A position on the ring: the full `u64` space, wrapping from `u64::MAX` back to `0`.
pub type Token = u64;

/// Domain separator for [`tokens_for`], so node tokens never coincide with key tokens by design.
const NODE_TOKEN_DOMAIN: &[u8] = b"ringkv-token";

/// The first 8 bytes of a blake3 hash, big-endian.
fn token_from_hash(hash: blake3::Hash) -> Token {
    let bytes = hash.as_bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(first)
}

/// Token of a key: the first 8 bytes of `blake3(key)` as a big-endian `u64`.
pub fn token_of(key: &[u8]) -> Token {
    token_from_hash(blake3::hash(key))
}

/// Deterministic tokens for a node that has none configured.
///
/// Returns `count` tokens; the i-th is the first 8 bytes (big-endian) of
/// `blake3(b"ringkv-token" ++ id as u32 BE ++ i as u32 BE)`.
pub fn tokens_for(id: NodeId, count: u32) -> Vec<Token> {
    (0..count)
        .map(|i| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(NODE_TOKEN_DOMAIN);
            hasher.update(&id.to_be_bytes());
            hasher.update(&i.to_be_bytes());
            token_from_hash(hasher.finalize())
        })
        .collect()
}

/// A token range `(start, end]`: open at the start, closed at the end, wrapping past `u64::MAX`
/// when `start >= end`. `start == end` means the whole ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenRange {
    /// Exclusive start: the token of the previous virtual node.
    pub start: Token,
    /// Inclusive end: the token of the virtual node that owns the range.
    pub end: Token,
}

impl TokenRange {
    /// Whether `t` lies in `(start, end]`, wrapping; every token when `start == end`.
    pub fn contains(&self, t: Token) -> bool {
        if self.start < self.end {
            self.start < t && t <= self.end
        } else if self.start > self.end {
            t > self.start || t <= self.end
        } else {
            true
        }
    }

    /// Whether the range is the whole ring (`start == end`).
    pub fn is_full(&self) -> bool {
        self.start == self.end
    }

    /// Number of tokens in the range, as a fraction of the ring's 2^64 tokens (`0.0 < f <= 1.0`).
    pub fn fraction(&self) -> f64 {
        self.width() as f64 / TOKEN_SPACE
    }

    /// Number of tokens in the range; 2^64 for the whole ring.
    pub(crate) fn width(&self) -> u128 {
        if self.is_full() {
            1u128 << 64
        } else {
            u128::from(self.end.wrapping_sub(self.start))
        }
    }
}

/// 2^64, the number of tokens on the ring.
pub(crate) const TOKEN_SPACE: f64 = 18_446_744_073_709_551_616.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_of_is_stable() {
        // blake3("hello") = ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f
        // (computed with the blake3 crate; it is also the published digest of "hello").
        assert_eq!(token_of(b"hello"), 0xea8f_163d_b386_8292);
        assert_eq!(token_of(b"hello"), token_of(b"hello"));
        assert_ne!(token_of(b"hello"), token_of(b"hellp"));
    }

    #[test]
    fn tokens_for_is_deterministic_and_distinct() {
        let a = tokens_for(7, 16);
        assert_eq!(a.len(), 16);
        assert_eq!(a, tokens_for(7, 16));
        assert_eq!(&tokens_for(7, 4)[..], &a[..4]);
        assert_ne!(a, tokens_for(8, 16));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 16);
        assert!(tokens_for(1, 0).is_empty());
    }

    #[test]
    fn tokens_for_matches_its_definition() {
        let mut input = Vec::new();
        input.extend_from_slice(b"ringkv-token");
        input.extend_from_slice(&3u32.to_be_bytes());
        input.extend_from_slice(&2u32.to_be_bytes());
        assert_eq!(tokens_for(3, 3)[2], token_of(&input));
    }

    #[test]
    fn contains_plain_range() {
        let r = TokenRange { start: 10, end: 20 };
        assert!(!r.contains(10));
        assert!(r.contains(11));
        assert!(r.contains(20));
        assert!(!r.contains(21));
        assert!(!r.contains(0));
        assert!(!r.contains(u64::MAX));
        assert_eq!(r.width(), 10);
    }

    #[test]
    fn contains_wrapping_range() {
        let r = TokenRange {
            start: u64::MAX - 5,
            end: 5,
        };
        assert!(!r.contains(u64::MAX - 5));
        assert!(r.contains(u64::MAX - 4));
        assert!(r.contains(u64::MAX));
        assert!(r.contains(0));
        assert!(r.contains(5));
        assert!(!r.contains(6));
        assert!(!r.contains(1 << 40));
        assert_eq!(r.width(), 11);
    }

    #[test]
    fn contains_range_ending_at_max_and_starting_at_zero() {
        let to_max = TokenRange {
            start: 100,
            end: u64::MAX,
        };
        assert!(to_max.contains(u64::MAX));
        assert!(!to_max.contains(0));
        let from_zero = TokenRange { start: 0, end: 100 };
        assert!(!from_zero.contains(0));
        assert!(from_zero.contains(1));
        let from_max = TokenRange {
            start: u64::MAX,
            end: 0,
        };
        assert!(from_max.contains(0));
        assert!(!from_max.contains(u64::MAX));
        assert!(!from_max.contains(1));
        assert_eq!(from_max.width(), 1);
    }

    #[test]
    fn equal_bounds_is_whole_ring() {
        let r = TokenRange { start: 42, end: 42 };
        assert!(r.is_full());
        for t in [0, 41, 42, 43, u64::MAX] {
            assert!(r.contains(t));
        }
        assert_eq!(r.fraction(), 1.0);
    }
}
