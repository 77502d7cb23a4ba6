//! A heartbeat failure detector: every peer is pinged at a fixed interval; a peer that has not
//! answered anything (a ping or any replica request) for `down_after` is down. Coordinators consult
//! it before sending so that a level that cannot be met fails fast with `Unavailable`.

use proto::message::PeerStatus;
use ring::NodeId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Liveness of every peer, as last observed.
pub struct FailureDetector {
    me: NodeId,
    down_after: Duration,
    last_ok: HashMap<NodeId, Mutex<Option<Instant>>>,
    generations: Mutex<HashMap<NodeId, u64>>,
}

impl FailureDetector {
    /// A detector for `peers`, all initially down until they answer.
    pub fn new(me: NodeId, peers: impl IntoIterator<Item = NodeId>, down_after: Duration) -> Self {
        let last_ok = peers
            .into_iter()
            .filter(|p| *p != me)
            .map(|p| (p, Mutex::new(None)))
            .collect();
        FailureDetector {
            me,
            down_after,
            last_ok,
            generations: Mutex::default(),
        }
    }

    /// Records the generation a peer's heartbeat carried; true when it differs from the one seen
    /// before (the peer restarted), false on the first sighting or the same generation.
    pub fn new_generation(&self, peer: NodeId, generation: u64) -> bool {
        let mut g = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        g.insert(peer, generation)
            .is_some_and(|old| old != generation)
    }

    /// Records that `peer` answered just now.
    pub fn record_ok(&self, peer: NodeId) {
        if let Some(slot) = self.last_ok.get(&peer) {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
    }

    fn last(&self, peer: NodeId) -> Option<Instant> {
        self.last_ok
            .get(&peer)
            .and_then(|s| *s.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether `peer` is considered up. A node is always up to itself.
    pub fn is_up(&self, peer: NodeId) -> bool {
        peer == self.me
            || self
                .last(peer)
                .is_some_and(|t| t.elapsed() < self.down_after)
    }

    /// Every peer's state, for status reports.
    pub fn snapshot(&self) -> Vec<PeerStatus> {
        let mut v: Vec<PeerStatus> = self
            .last_ok
            .keys()
            .map(|&id| PeerStatus {
                id,
                up: self.is_up(id),
                last_seen_ms: self.last(id).map(|t| t.elapsed().as_millis() as u64),
            })
            .collect();
        v.sort_by_key(|p| p.id);
        v
    }

    /// The peers (not including this node).
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.last_ok.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_down_until_heard_and_go_down_when_silent() {
        let fd = FailureDetector::new(1, [1, 2, 3], Duration::from_millis(50));
        assert!(fd.is_up(1));
        assert!(!fd.is_up(2));
        fd.record_ok(2);
        assert!(fd.is_up(2));
        std::thread::sleep(Duration::from_millis(80));
        assert!(!fd.is_up(2));
        assert_eq!(fd.snapshot().len(), 2);
        fd.record_ok(99); // unknown peers are ignored
        assert!(!fd.is_up(99));
        assert!(!fd.new_generation(2, 100), "first sighting");
        assert!(!fd.new_generation(2, 100));
        assert!(fd.new_generation(2, 200), "restart");
    }
}
