//! Which client write ops (by their client-chosen id) this node has versioned or stored, and with
//! which version: what makes a retried write apply once.
//!
//! A coordinator remembers the version it gave each op; a replica remembers the version it stored
//! each op with. A retry of the op (same id, after an ambiguous timeout) then reuses that version
//! instead of stamping a second one.
//! Each op is remembered with its write's fingerprint ([`proto::message::op_fingerprint`]), so
//! an id reused for a different write is told apart from a retry.
//!
//! The memory is bounded: two generations of at most `capacity` ops each. When the current
//! generation is full it becomes the old one and the previous old one is emptied, so the last
//! `capacity` ops are always remembered, and at most `2 * capacity`.

use proto::message::OpId;
use proto::Version;
use storage::version_cache::Generations;

/// Ops remembered per generation by default: a full generation of 262,144 entries of 48 bytes
/// takes about 25 MB with the hash table's spare buckets, two about 50 MB (computed, not
/// measured); the last 262,144 ops
/// a node saw are always remembered.
pub const DEFAULT_OPS_PER_GENERATION: usize = 1 << 18;

/// A bounded map from op id to the version and fingerprint it was first recorded with.
#[derive(Debug)]
pub struct OpMemory(Generations<OpId, (Version, u64)>);

impl OpMemory {
    /// Remembers at least the last `capacity` ops (at least 1), at most twice that many.
    pub fn new(capacity: usize) -> OpMemory {
        // Allocated and touched now: growing a table, or faulting its pages in, while requests
        // wait for the op memory's lock stalled every node at once, once per generation (they
        // all see the same ops), for 30 to 80 ms.
        let mut generations = Generations::presized(capacity.max(1));
        generations.prefault(|i| i as OpId, (Version { hlc: 0, node: 0 }, 0));
        OpMemory(generations)
    }

    /// The version and fingerprint `op` was recorded with.
    pub fn get(&self, op: OpId) -> Option<(Version, u64)> {
        self.0.get(&op)
    }

    /// Records `op` with `version` and `fingerprint`, unless it is already recorded (the first
    /// record stays). Returns what is now recorded.
    pub fn record(&mut self, op: OpId, version: Version, fingerprint: u64) -> (Version, u64) {
        if let Some(first) = self.get(op) {
            return first;
        }
        self.0.insert(&op, (version, fingerprint));
        (version, fingerprint)
    }

    /// Ops remembered now.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no op is remembered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64) -> Version {
        Version { hlc, node: 1 }
    }

    #[test]
    fn the_first_version_of_an_op_stays() {
        let mut m = OpMemory::new(4);
        assert_eq!(m.record(7, v(10), 1), (v(10), 1));
        assert_eq!(m.record(7, v(20), 2), (v(10), 1));
        assert_eq!(m.get(7), Some((v(10), 1)));
        assert_eq!(m.get(8), None);
    }

    #[test]
    fn keeps_at_least_the_last_capacity_ops_and_at_most_twice_that() {
        let mut m = OpMemory::new(3);
        for op in 0..10u128 {
            m.record(op, v(op as u64), 0);
            assert!(m.len() <= 6, "len {}", m.len());
            // The last three ops recorded are always there.
            for recent in op.saturating_sub(2)..=op {
                assert_eq!(m.get(recent), Some((v(recent as u64), 0)), "after {op}");
            }
        }
        assert_eq!(m.get(0), None, "the oldest op is forgotten");
    }
}
