//! Hinted handoff's storage side: a [`Hint`] is a write kept for a replica that missed it, under
//! an opaque, time-ordered [`HintId`]. Both backends store hints under the same key encoding
//! ([`crate::encoding::HintKey`]) and keep per-target counts in memory (`HintCounts`) so that
//! [`crate::Engine::hint_targets`] is cheap. Replay, bounding and expiry are the node's policy.

use crate::encoding::{decode_hint_key, decode_hint_value, HintKey};
use crate::error::StorageError;
use proto::Record;
use ring::NodeId;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// A write to hand to `target` once it is reachable again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The replica that missed the write.
    pub target: NodeId,
    /// The user key.
    pub key: Vec<u8>,
    /// The record to deliver (a tombstone included).
    pub record: Record,
    /// When the hint was stored (the `now_ms` given to [`crate::Engine::put_hint`]).
    pub stored_at_ms: u64,
}

/// Identifies one stored hint. Ids of one target order like the hints were stored: by storage
/// time, then by a per-process sequence number. Opaque: only an engine makes them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HintId(Vec<u8>);

impl HintId {
    /// The id of an encoded hint key (already validated by [`decode_hint_key`]).
    pub(crate) fn from_key(raw: Vec<u8>) -> HintId {
        HintId(raw)
    }

    /// The encoded hint key.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The target encoded in the id (`None` only for an id not made by an engine, which cannot
    /// exist outside this crate).
    pub(crate) fn target(&self) -> Option<NodeId> {
        decode_hint_key(&self.0).ok().map(|k| k.target)
    }
}

/// Source of hint sequence numbers: unique and increasing within the process, shared by every
/// engine. A RocksDB engine raises it on open past every sequence number on disk, so a restart
/// within the same millisecond cannot reuse an id.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The next hint sequence number.
pub(crate) fn next_sequence() -> u64 {
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

/// Makes every later [`next_sequence`] larger than `seen`.
pub(crate) fn observe_sequence(seen: u64) {
    SEQUENCE.fetch_max(seen.saturating_add(1), Ordering::Relaxed);
}

/// The encoded key of a new hint (taking a fresh sequence number).
pub(crate) fn new_hint_key(target: NodeId, key: &[u8], now_ms: u64) -> Vec<u8> {
    HintKey {
        target,
        stored_at_ms: now_ms,
        sequence: next_sequence(),
        key,
    }
    .encode()
}

/// Decodes a stored hint from its key and value.
pub(crate) fn decode_hint(
    raw_key: &[u8],
    raw_value: &[u8],
) -> Result<(HintId, Hint), StorageError> {
    let parts = decode_hint_key(raw_key)?;
    let record = decode_hint_value(raw_key, raw_value)?;
    let hint = Hint {
        target: parts.target,
        key: parts.key.to_vec(),
        record,
        stored_at_ms: parts.stored_at_ms,
    };
    Ok((HintId::from_key(raw_key.to_vec()), hint))
}

/// Number of stored hints per target, kept exact by the engine (which updates it under the same
/// lock as the hint writes). Targets with no hints are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HintCounts(BTreeMap<NodeId, u64>);

impl HintCounts {
    /// Counts `n` more hints for `target`.
    pub(crate) fn add(&mut self, target: NodeId, n: u64) {
        if n > 0 {
            *self.0.entry(target).or_default() += n;
        }
    }

    /// Counts `n` fewer hints for `target` (never below zero).
    pub(crate) fn sub(&mut self, target: NodeId, n: u64) {
        if let Some(count) = self.0.get_mut(&target) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.0.remove(&target);
            }
        }
    }

    /// Every target with hints and its count, ascending by target.
    pub(crate) fn list(&self) -> Vec<(NodeId, u64)> {
        self.0.iter().map(|(&t, &n)| (t, n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_never_go_negative_and_forget_empty_targets() {
        let mut c = HintCounts::default();
        c.add(2, 3);
        c.add(1, 1);
        c.add(5, 0);
        assert_eq!(c.list(), vec![(1, 1), (2, 3)]);
        c.sub(2, 1);
        c.sub(1, 5);
        c.sub(9, 1);
        assert_eq!(c.list(), vec![(2, 2)]);
    }

    #[test]
    fn sequence_numbers_increase_and_skip_past_observed_ones() {
        let a = next_sequence();
        let b = next_sequence();
        assert!(b > a);
        observe_sequence(b + 1000);
        assert!(next_sequence() > b + 1000);
        // Observing an older number changes nothing.
        let c = next_sequence();
        observe_sequence(0);
        assert!(next_sequence() > c);
    }

    #[test]
    fn ids_order_by_target_then_time_then_sequence() {
        let id = |target, ms, key: &[u8]| HintId::from_key(new_hint_key(target, key, ms));
        let first = id(1, 100, b"zzz");
        let later_same_ms = id(1, 100, b"aaa");
        let later_ms = id(1, 101, b"");
        let other_target = id(2, 0, b"");
        assert!(first < later_same_ms);
        assert!(later_same_ms < later_ms);
        assert!(later_ms < other_target);
        assert_eq!(first.target(), Some(1));
        assert_eq!(other_target.target(), Some(2));
    }
}
