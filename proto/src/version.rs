//! Versions and the hybrid logical clock.
//!
//! Every record carries one [`Version`]: a hybrid-logical-clock timestamp and the id of the node
//! that issued it. Versions order records for last-write-wins; the node id breaks ties so two
//! coordinators never produce equal versions.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Bits of an HLC timestamp that hold the logical counter; the rest hold wall-clock milliseconds.
pub const HLC_LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << HLC_LOGICAL_BITS) - 1;

/// The version of a record: `(hlc, node)`, compared in that order.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Version {
    /// Hybrid logical clock timestamp: wall-clock milliseconds << 16 | logical counter.
    pub hlc: u64,
    /// Id of the node whose clock issued the timestamp.
    pub node: u32,
}

impl Version {
    /// Wall-clock milliseconds since the Unix epoch encoded in this version.
    pub fn millis(&self) -> u64 {
        self.hlc >> HLC_LOGICAL_BITS
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}@{}",
            self.millis(),
            self.hlc & LOGICAL_MASK,
            self.node
        )
    }
}

/// Packs wall-clock milliseconds into an HLC timestamp with a zero logical counter.
pub fn hlc_from_millis(millis: u64) -> u64 {
    millis << HLC_LOGICAL_BITS
}

/// Milliseconds since the Unix epoch from the system clock.
pub fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A remote timestamp was refused because it is too far ahead of this node's physical time.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("timestamp {remote_ms} ms is {ahead_ms} ms ahead of local time (limit {max_ms} ms)")]
pub struct ClockSkewError {
    /// The refused timestamp's wall-clock part.
    pub remote_ms: u64,
    /// How far ahead of local physical time it was.
    pub ahead_ms: u64,
    /// The configured limit.
    pub max_ms: u64,
}

/// A hybrid logical clock: never goes backwards, absorbs timestamps it sees, and refuses timestamps
/// too far ahead of physical time so one skewed node cannot drag the cluster's clocks forward.
///
/// A std `Mutex` (not tokio's) guards one u64: the critical section is a few instructions and never
/// awaits.
pub struct HybridClock {
    last: Mutex<u64>,
    max_ahead_ms: u64,
    physical: fn() -> u64,
}

impl HybridClock {
    /// A clock that will never issue a timestamp at or below `floor` (the persisted high-water
    /// mark of a previous run), and refuses peer timestamps more than `max_ahead_ms` in the future.
    pub fn new(floor: u64, max_ahead_ms: u64) -> Self {
        Self::with_physical(floor, max_ahead_ms, wall_millis)
    }

    /// As [`HybridClock::new`], with an injected physical clock (for tests and simulation).
    pub fn with_physical(floor: u64, max_ahead_ms: u64, physical: fn() -> u64) -> Self {
        HybridClock {
            last: Mutex::new(floor),
            max_ahead_ms,
            physical,
        }
    }

    /// Issues a new timestamp, strictly greater than every timestamp issued or observed before.
    pub fn now(&self) -> u64 {
        let pt = hlc_from_millis((self.physical)());
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = if pt > *last { pt } else { *last + 1 };
        *last
    }

    /// The largest timestamp issued or observed so far (without issuing one).
    pub fn peek(&self) -> u64 {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Absorbs a timestamp seen in a message, so later local timestamps order after it.
    /// Refuses (and does not absorb) one too far ahead of local physical time.
    pub fn observe(&self, remote: u64) -> Result<(), ClockSkewError> {
        let local_ms = (self.physical)();
        let remote_ms = remote >> HLC_LOGICAL_BITS;
        if remote_ms > local_ms + self.max_ahead_ms {
            return Err(ClockSkewError {
                remote_ms,
                ahead_ms: remote_ms - local_ms,
                max_ms: self.max_ahead_ms,
            });
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if remote > *last {
            *last = remote;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frozen() -> u64 {
        1_000_000
    }

    #[test]
    fn never_goes_backwards_and_is_strictly_increasing() {
        let c = HybridClock::with_physical(0, 1000, frozen);
        let a = c.now();
        let b = c.now();
        assert!(b > a);
        assert_eq!(a >> HLC_LOGICAL_BITS, 1_000_000);
    }

    #[test]
    fn floor_from_a_previous_run_is_respected() {
        let floor = hlc_from_millis(2_000_000) + 7;
        let c = HybridClock::with_physical(floor, 1000, frozen);
        assert!(c.now() > floor);
    }

    #[test]
    fn observe_absorbs_and_refuses_far_future() {
        let c = HybridClock::with_physical(0, 1000, frozen);
        let ahead = hlc_from_millis(1_000_500);
        c.observe(ahead).expect("within limit");
        assert!(c.now() > ahead);
        let too_far = hlc_from_millis(1_002_000);
        let err = c.observe(too_far).expect_err("beyond limit");
        assert_eq!(err.ahead_ms, 2000);
        assert!(c.peek() < too_far);
    }

    #[test]
    fn versions_order_by_clock_then_node() {
        let a = Version { hlc: 5, node: 9 };
        let b = Version { hlc: 6, node: 1 };
        let c = Version { hlc: 6, node: 2 };
        assert!(a < b && b < c);
    }
}
