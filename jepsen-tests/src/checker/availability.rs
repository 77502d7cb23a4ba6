//! The availability checker, for nemeses that remove no replica a level needs (the membership
//! nemesis: every change keeps the old owners serving until the new ones hold the data). Every
//! main-phase operation must end `ok`: a `fail` or an `info` is a request the level should have
//! served and did not.

use super::Verdict;
use crate::history::{Op, Outcome, Phase};
use serde::{Deserialize, Serialize};

/// Unserved operations listed in the result; the counts are complete.
pub const MAX_LISTED: usize = 20;

/// What the availability checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailabilityResult {
    /// Valid when every main-phase operation ended `ok`.
    pub verdict: Verdict,
    /// One line explaining the verdict.
    pub reason: String,
    /// Main-phase operations.
    pub operations: u64,
    /// Those that certainly failed.
    pub failed: u64,
    /// Those whose outcome is unknown (timeouts).
    pub unknown: u64,
    /// Some unserved operations: key, outcome, coordinator, error, start (s into the run).
    pub unserved: Vec<String>,
}

/// Checks that every main-phase operation of `ops` was served.
pub fn check(ops: &[Op]) -> AvailabilityResult {
    let mut r = AvailabilityResult::default();
    for op in ops.iter().filter(|o| o.phase == Phase::Main) {
        r.operations += 1;
        match op.outcome {
            Outcome::Ok => continue,
            Outcome::Fail => r.failed += 1,
            Outcome::Info => r.unknown += 1,
        }
        if r.unserved.len() < MAX_LISTED {
            r.unserved.push(format!(
                "{} {:?} via {:?} at {:.2} s: {}",
                op.key,
                op.outcome,
                op.coordinator,
                op.invoke_ns as f64 / 1e9,
                op.error.as_deref().unwrap_or("")
            ));
        }
    }
    let unserved = r.failed + r.unknown;
    (r.verdict, r.reason) = if r.operations == 0 {
        (Verdict::Unknown, "no operations were recorded".into())
    } else if unserved == 0 {
        (
            Verdict::Valid,
            format!("all {} operations were served", r.operations),
        )
    } else {
        (
            Verdict::Invalid,
            format!(
                "{unserved} of {} operations were not served ({} failed, {} unknown)",
                r.operations, r.failed, r.unknown
            ),
        )
    };
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::OpKind;

    fn op(key: &str, outcome: Outcome, phase: Phase) -> Op {
        Op {
            process: 0,
            kind: OpKind::Write,
            key: key.into(),
            value: Some(key.into()),
            outcome,
            invoke_ns: 1_000_000_000,
            complete_ns: 1_002_000_000,
            error: (outcome != Outcome::Ok).then(|| "unavailable: 1 of 2".into()),
            coordinator: Some(3),
            phase,
            attempts: None,
        }
    }

    #[test]
    fn every_served_operation_is_valid() {
        let ops = vec![
            op("a", Outcome::Ok, Phase::Main),
            op("b", Outcome::Ok, Phase::Main),
            // Final reads are the set checker's business.
            op("c", Outcome::Fail, Phase::Final),
        ];
        let r = check(&ops);
        assert_eq!(r.verdict, Verdict::Valid, "{}", r.reason);
        assert_eq!(r.operations, 2);
    }

    #[test]
    fn one_failed_or_unknown_operation_is_invalid_and_listed() {
        for bad in [Outcome::Fail, Outcome::Info] {
            let ops = vec![op("a", Outcome::Ok, Phase::Main), op("b", bad, Phase::Main)];
            let r = check(&ops);
            assert_eq!(r.verdict, Verdict::Invalid);
            assert_eq!(r.failed + r.unknown, 1);
            assert_eq!(r.unserved.len(), 1);
            assert!(r.unserved[0].starts_with("b "), "{:?}", r.unserved);
        }
    }

    #[test]
    fn an_empty_history_proves_nothing() {
        assert_eq!(check(&[]).verdict, Verdict::Unknown);
    }
}
