//! Consistency levels: how many replicas must answer a read or acknowledge a write.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The consistency level a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Consistency {
    /// Writes only: succeeds once any node (a replica, or the coordinator as a hint) stored it.
    Any,
    /// One replica.
    One,
    /// Two replicas.
    Two,
    /// Three replicas.
    Three,
    /// A majority of all replicas: floor(RF/2)+1 where RF sums every datacenter.
    Quorum,
    /// One replica in the coordinator's datacenter.
    LocalOne,
    /// A majority of the replicas in the coordinator's datacenter.
    LocalQuorum,
    /// A majority of the replicas in every datacenter.
    EachQuorum,
    /// Every replica.
    All,
    /// Linearizable single-key reads and writes on majorities of all replicas, without a leader
    /// (the two-phase quorum register of Attiya, Bar-Noy and Dolev): a write first asks a
    /// majority for the key's highest version and writes above it; a read whose replies disagree
    /// writes the newest back to a majority before answering.
    Linearizable,
}

impl Consistency {
    /// Every level, in the order they are documented.
    pub const ALL_LEVELS: [Consistency; 10] = [
        Consistency::Any,
        Consistency::One,
        Consistency::Two,
        Consistency::Three,
        Consistency::Quorum,
        Consistency::LocalOne,
        Consistency::LocalQuorum,
        Consistency::EachQuorum,
        Consistency::All,
        Consistency::Linearizable,
    ];

    /// The level's name as users write it.
    pub fn name(self) -> &'static str {
        match self {
            Consistency::Any => "ANY",
            Consistency::One => "ONE",
            Consistency::Two => "TWO",
            Consistency::Three => "THREE",
            Consistency::Quorum => "QUORUM",
            Consistency::LocalOne => "LOCAL_ONE",
            Consistency::LocalQuorum => "LOCAL_QUORUM",
            Consistency::EachQuorum => "EACH_QUORUM",
            Consistency::All => "ALL",
            Consistency::Linearizable => "LINEARIZABLE",
        }
    }

    /// Whether reads may use this level (ANY is for writes only).
    pub fn valid_for_reads(self) -> bool {
        self != Consistency::Any
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The text did not name a consistency level.
#[derive(Debug, thiserror::Error)]
#[error("unknown consistency level {0:?} (expected one of ANY, ONE, TWO, THREE, QUORUM, LOCAL_ONE, LOCAL_QUORUM, EACH_QUORUM, ALL, LINEARIZABLE)")]
pub struct UnknownConsistency(pub String);

impl FromStr for Consistency {
    type Err = UnknownConsistency;

    /// Case-insensitive; `-` and `_` are interchangeable (`local-quorum` = `LOCAL_QUORUM`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_uppercase().replace('-', "_");
        Consistency::ALL_LEVELS
            .into_iter()
            .find(|c| c.name() == norm)
            .ok_or_else(|| UnknownConsistency(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_level_case_insensitively() {
        for c in Consistency::ALL_LEVELS {
            assert_eq!(c.name().to_lowercase().parse::<Consistency>().ok(), Some(c));
            assert_eq!(c.name().parse::<Consistency>().ok(), Some(c));
        }
        assert_eq!(
            "local-quorum".parse::<Consistency>().ok(),
            Some(Consistency::LocalQuorum)
        );
        assert!("QUOROM".parse::<Consistency>().is_err());
    }
}
