//! The phi-accrual failure detector (Hayashibara et al., as in Cassandra and Akka).
//!
//! Every heartbeat answer from a peer is an arrival; the detector keeps the last
//! [`WINDOW`] inter-arrival times and, from their mean and standard deviation, the suspicion
//! level `phi = -log10(P(a heartbeat arrives later than now))` under a normal distribution whose
//! mean is widened by an acceptable pause. A peer is down while `phi` exceeds the threshold (8 by
//! default: a one in 10^8 chance of being wrong about a regular peer), or when nothing was heard
//! for `down-after-ms` whatever the history says. Peers start down until first heard from.
//!
//! Any answer a peer gives (a replica request, gossip) resets its silence too, but only
//! heartbeats feed the interval history, which should describe the heartbeat schedule. Peers can
//! be added as membership changes; a node is never removed from the ring by the detector.

use proto::message::PeerStatus;
use ring::NodeId;
use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Inter-arrival samples kept per peer.
pub const WINDOW: usize = 100;

/// Settings of the detector.
#[derive(Clone, Copy, Debug)]
pub struct PhiConfig {
    /// Down above this phi.
    pub threshold: f64,
    /// The expected heartbeat interval: seeds the history of a newly heard peer.
    pub heartbeat: Duration,
    /// Floor on the standard deviation, so a very regular peer is not declared down by the first
    /// slightly late heartbeat.
    pub min_std_dev: Duration,
    /// Silence tolerated on top of the mean interval (GC pauses, a busy machine).
    pub acceptable_pause: Duration,
    /// Down after this much silence, whatever phi says.
    pub down_after: Duration,
}

#[derive(Default)]
struct PeerState {
    /// Last heartbeat arrival.
    last_heartbeat: Option<Instant>,
    /// Last time anything was heard.
    last_heard: Option<Instant>,
    intervals: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
    generation: Option<u64>,
}

impl PeerState {
    fn push(&mut self, ms: f64) {
        if self.intervals.len() == WINDOW {
            if let Some(old) = self.intervals.pop_front() {
                self.sum -= old;
                self.sum_sq -= old * old;
            }
        }
        self.intervals.push_back(ms);
        self.sum += ms;
        self.sum_sq += ms * ms;
    }
}

/// Liveness of every known peer.
pub struct FailureDetector {
    me: NodeId,
    cfg: PhiConfig,
    peers: RwLock<HashMap<NodeId, std::sync::Mutex<PeerState>>>,
}

/// `-log10(1 - Phi((x - mean) / sd))` for the normal CDF Phi, with the logistic approximation
/// of the CDF that Akka uses (error below 1e-4 over the whole range, no special functions).
pub fn phi_of(elapsed_ms: f64, mean_ms: f64, sd_ms: f64) -> f64 {
    let y = (elapsed_ms - mean_ms) / sd_ms;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    if elapsed_ms > mean_ms {
        -(e / (1.0 + e)).log10()
    } else {
        -(1.0 - 1.0 / (1.0 + e)).log10()
    }
}

impl FailureDetector {
    /// A detector for `peers`, all initially down until they answer.
    pub fn new(me: NodeId, peers: impl IntoIterator<Item = NodeId>, cfg: PhiConfig) -> Self {
        let fd = FailureDetector {
            me,
            cfg,
            peers: RwLock::default(),
        };
        for p in peers {
            fd.add_peer(p);
        }
        fd
    }

    /// Starts tracking `peer` (down until heard from). No-op for this node or a known peer.
    pub fn add_peer(&self, peer: NodeId) {
        if peer == self.me {
            return;
        }
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        peers.entry(peer).or_default();
    }

    /// Stops tracking every peer not in `keep` (nodes that left the ring).
    pub fn retain_peers(&self, keep: &[NodeId]) {
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        peers.retain(|id, _| keep.contains(id));
    }

    fn with<T>(&self, peer: NodeId, f: impl FnOnce(&mut PeerState) -> T) -> Option<T> {
        let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
        let slot = peers.get(&peer)?;
        let mut state = slot.lock().unwrap_or_else(|p| p.into_inner());
        Some(f(&mut state))
    }

    /// Records the generation a peer's heartbeat carried; true when it differs from the one seen
    /// before (the peer restarted), false on the first sighting or the same generation.
    pub fn new_generation(&self, peer: NodeId, generation: u64) -> bool {
        self.with(peer, |s| {
            s.generation
                .replace(generation)
                .is_some_and(|old| old != generation)
        })
        .unwrap_or(false)
    }

    /// A heartbeat answer from `peer` arrived just now: one interval sample.
    pub fn heartbeat(&self, peer: NodeId) {
        let heartbeat_ms = self.cfg.heartbeat.as_secs_f64() * 1000.0;
        self.with(peer, |s| {
            let now = Instant::now();
            match s.last_heartbeat {
                Some(last) => s.push(now.duration_since(last).as_secs_f64() * 1000.0),
                None => {
                    // Seed the history with the expected interval, as Akka does, so phi means
                    // something from the first arrival.
                    s.push(heartbeat_ms);
                    s.push(heartbeat_ms);
                }
            }
            s.last_heartbeat = Some(now);
            s.last_heard = Some(now);
        });
    }

    /// `peer` answered something just now (not a heartbeat): it is alive.
    pub fn record_ok(&self, peer: NodeId) {
        self.with(peer, |s| s.last_heard = Some(Instant::now()));
    }

    /// The peer's suspicion level now; `None` if never heard from (or unknown).
    pub fn phi(&self, peer: NodeId) -> Option<f64> {
        self.with(peer, |s| self.phi_now(s)).flatten()
    }

    fn phi_now(&self, s: &PeerState) -> Option<f64> {
        let last = s.last_heard?;
        let n = s.intervals.len().max(1) as f64;
        let mean = s.sum / n;
        let variance = (s.sum_sq / n - mean * mean).max(0.0);
        let min_sd = self.cfg.min_std_dev.as_secs_f64() * 1000.0;
        let sd = variance.sqrt().max(min_sd).max(0.001);
        let pause = self.cfg.acceptable_pause.as_secs_f64() * 1000.0;
        let elapsed = last.elapsed().as_secs_f64() * 1000.0;
        Some(phi_of(elapsed, mean + pause, sd))
    }

    fn up(&self, s: &PeerState) -> bool {
        match (s.last_heard, self.phi_now(s)) {
            (Some(last), Some(phi)) => {
                last.elapsed() < self.cfg.down_after && phi < self.cfg.threshold
            }
            _ => false,
        }
    }

    /// Whether `peer` is considered up. A node is always up to itself; unknown peers are down.
    pub fn is_up(&self, peer: NodeId) -> bool {
        peer == self.me || self.with(peer, |s| self.up(s)).unwrap_or(false)
    }

    /// Whether `peer` was heard from before and is down now (a peer never heard from is not
    /// known down: it may simply not have been pinged yet).
    pub fn known_down(&self, peer: NodeId) -> bool {
        peer != self.me
            && self
                .with(peer, |s| s.last_heard.is_some() && !self.up(s))
                .unwrap_or(false)
    }

    /// Whether `peer` has answered anything since this node started (an untracked peer counts
    /// as heard: there is nothing to wait for).
    pub fn heard_from(&self, peer: NodeId) -> bool {
        self.with(peer, |s| s.last_heard.is_some()).unwrap_or(true)
    }

    /// Every peer's state, for status reports.
    pub fn snapshot(&self) -> Vec<PeerStatus> {
        let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<PeerStatus> = peers
            .iter()
            .map(|(&id, slot)| {
                let s = slot.lock().unwrap_or_else(|p| p.into_inner());
                PeerStatus {
                    id,
                    up: self.up(&s),
                    last_seen_ms: s.last_heard.map(|t| t.elapsed().as_millis() as u64),
                    phi: self.phi_now(&s).map(|p| (p * 100.0).round() / 100.0),
                }
            })
            .collect();
        v.sort_by_key(|p| p.id);
        v
    }

    /// The tracked peers (not including this node).
    pub fn peers(&self) -> Vec<NodeId> {
        let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<NodeId> = peers.keys().copied().collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(down_after_ms: u64) -> PhiConfig {
        PhiConfig {
            threshold: 8.0,
            heartbeat: Duration::from_millis(20),
            min_std_dev: Duration::from_millis(5),
            acceptable_pause: Duration::from_millis(0),
            down_after: Duration::from_millis(down_after_ms),
        }
    }

    #[test]
    fn phi_grows_with_silence() {
        assert!(phi_of(100.0, 200.0, 50.0) < 0.1);
        let at_mean = phi_of(200.0, 200.0, 50.0);
        assert!((at_mean - 0.301).abs() < 0.01, "{at_mean}");
        assert!(phi_of(400.0, 200.0, 50.0) > 4.0);
        assert!(phi_of(600.0, 200.0, 50.0) > 8.0);
        // Monotone.
        let mut last = 0.0;
        for t in (0..1000).step_by(10) {
            let p = phi_of(t as f64, 200.0, 50.0);
            assert!(p >= last - 1e-9, "phi fell at {t}");
            last = p;
        }
    }

    #[test]
    fn peers_are_down_until_heard_and_go_down_when_heartbeats_stop() {
        let fd = FailureDetector::new(1, [1, 2, 3], cfg(10_000));
        assert!(fd.is_up(1));
        assert!(!fd.is_up(2));
        assert_eq!(fd.phi(2), None);
        for _ in 0..5 {
            fd.heartbeat(2);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(fd.is_up(2));
        // Silence of ~20 intervals: far beyond mean + 8 phi with sd 5 ms.
        std::thread::sleep(Duration::from_millis(400));
        assert!(!fd.is_up(2), "phi {:?}", fd.phi(2));
        assert!(fd.phi(2).unwrap() > 8.0);
        fd.heartbeat(2);
        assert!(fd.is_up(2));
        assert_eq!(fd.snapshot().len(), 2);
        fd.heartbeat(99); // unknown peers are ignored
        assert!(!fd.is_up(99));
        fd.add_peer(99);
        fd.heartbeat(99);
        assert!(fd.is_up(99));
        assert_eq!(fd.peers(), vec![2, 3, 99]);
        assert!(!fd.new_generation(2, 100), "first sighting");
        assert!(!fd.new_generation(2, 100));
        assert!(fd.new_generation(2, 200), "restart");
    }

    #[test]
    fn irregular_peers_get_more_slack_than_regular_ones() {
        let regular = FailureDetector::new(1, [2], cfg(10_000));
        let jittery = FailureDetector::new(1, [2], cfg(10_000));
        for _ in 0..20 {
            regular.heartbeat(2);
            std::thread::sleep(Duration::from_millis(20));
        }
        regular.heartbeat(2);
        std::thread::sleep(Duration::from_millis(60));
        let r = regular.phi(2).unwrap();
        for i in 0..20 {
            jittery.heartbeat(2);
            // The jittery peer's intervals alternate about 5 and 35 ms (same mean, sd ~15 ms).
            std::thread::sleep(Duration::from_millis(if i % 2 == 0 { 5 } else { 35 }));
        }
        jittery.heartbeat(2);
        std::thread::sleep(Duration::from_millis(60));
        let j = jittery.phi(2).unwrap();
        assert!(r > j + 1.0, "regular {r} vs jittery {j}");
    }

    #[test]
    fn down_after_caps_silence_whatever_phi_says() {
        let mut c = cfg(50);
        c.acceptable_pause = Duration::from_secs(60);
        let fd = FailureDetector::new(1, [2], c);
        fd.heartbeat(2);
        assert!(fd.is_up(2));
        std::thread::sleep(Duration::from_millis(80));
        assert!(fd.phi(2).unwrap() < 1.0, "the pause keeps phi low");
        assert!(!fd.is_up(2), "but down-after still applies");
    }
}
