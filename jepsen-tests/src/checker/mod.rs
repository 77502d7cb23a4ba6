//! Checkers turn a history (and, for convergence, what each replica holds) into verdicts. Each is
//! a pure function of its input, so it can be tested on hand-made bad histories.
//!
//! - [`set`]: every acknowledged write of the set workload is present at the end.
//! - [`register`]: per-key linearizability of the register workload (Wing-Gong-Lowe search).
//! - [`convergence`]: after healing and a repair round, every replica holds the same version.
//! - [`availability`]: every main-phase operation was served (for the membership nemesis, which
//!   takes away no replica a level needs).

pub mod availability;
pub mod convergence;
pub mod register;
pub mod set;

use serde::{Deserialize, Serialize};

/// The result of one checker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The property holds on this history.
    Valid,
    /// The property is violated; the checker's details say where.
    Invalid,
    /// The checker could not decide (search budget exhausted, replicas unreachable).
    #[default]
    Unknown,
}

impl Verdict {
    /// `valid`, `INVALID` or `unknown`, for summaries.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Invalid => "INVALID",
            Verdict::Unknown => "unknown",
        }
    }

    /// The worse of two verdicts (invalid over unknown over valid).
    pub fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Invalid, _) | (_, Verdict::Invalid) => Verdict::Invalid,
            (Verdict::Unknown, _) | (_, Verdict::Unknown) => Verdict::Unknown,
            _ => Verdict::Valid,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Every checker result of a run (the ones that do not apply to the workload are `None`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckResults {
    /// Set workload: lost acknowledged writes.
    pub set: Option<set::SetResult>,
    /// Register workload: linearizability per key.
    pub linearizability: Option<register::LinearizabilityResult>,
    /// Replica convergence after heal and repair.
    pub convergence: Option<convergence::ConvergenceResult>,
    /// Every operation served (membership nemesis only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<availability::AvailabilityResult>,
}

impl CheckResults {
    /// `(checker name, verdict)` of every checker that ran.
    pub fn verdicts(&self) -> Vec<(&'static str, Verdict)> {
        let mut v = Vec::new();
        if let Some(s) = &self.set {
            v.push(("set", s.verdict));
        }
        if let Some(l) = &self.linearizability {
            v.push(("linearizability", l.verdict));
        }
        if let Some(c) = &self.convergence {
            v.push(("convergence", c.verdict));
        }
        if let Some(a) = &self.availability {
            v.push(("availability", a.verdict));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::Verdict::*;

    #[test]
    fn and_keeps_the_worst() {
        assert_eq!(Valid.and(Valid), Valid);
        assert_eq!(Valid.and(Unknown), Unknown);
        assert_eq!(Unknown.and(Invalid), Invalid);
        assert_eq!(Invalid.and(Valid), Invalid);
    }
}
