//! The set checker: every write of the set workload uses a unique key; at the end each key is read
//! at ALL. An acknowledged write must be present (else it is *lost*), a write that certainly failed
//! must be absent, and an unknown one may be either (both are counted).

use super::Verdict;
use crate::history::{Op, OpKind, Outcome, Phase};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Keys listed per category in the result; the counts are complete.
pub const MAX_LISTED_KEYS: usize = 20;

/// What the set checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetResult {
    /// Valid when nothing acknowledged was lost and nothing failed appeared.
    pub verdict: Verdict,
    /// One line explaining the verdict.
    pub reason: String,
    /// Writes attempted in the workload.
    pub attempted: u64,
    /// Writes acknowledged (`ok`).
    pub acknowledged: u64,
    /// Writes that certainly failed (`fail`).
    pub failed: u64,
    /// Writes with an unknown outcome (`info`).
    pub unknown: u64,
    /// Acknowledged writes absent from the final reads.
    pub lost: u64,
    /// Acknowledged writes whose final read returned another value.
    pub wrong_value: u64,
    /// Writes reported failed that are present at the end (a broken `fail` promise).
    pub failed_present: u64,
    /// Unknown writes present at the end.
    pub unknown_present: u64,
    /// Unknown writes absent at the end.
    pub unknown_absent: u64,
    /// Acknowledged writes whose final read never succeeded (cannot be judged).
    pub unverified: u64,
    /// Some lost keys.
    pub lost_keys: Vec<String>,
    /// Some keys reported failed yet present.
    pub failed_present_keys: Vec<String>,
    /// Some acknowledged keys that could not be read at the end.
    pub unverified_keys: Vec<String>,
}

/// Checks a set-workload history: main-phase writes against final-phase reads.
pub fn check(ops: &[Op]) -> SetResult {
    // The last successful final read of each key: Some(value) present, None absent.
    let mut finals: HashMap<&str, Option<&str>> = HashMap::new();
    for op in ops {
        if op.phase == Phase::Final && op.kind == OpKind::Read && op.outcome == Outcome::Ok {
            finals.insert(op.key.as_str(), op.value.as_deref());
        }
    }
    let mut r = SetResult::default();
    for op in ops
        .iter()
        .filter(|o| o.phase == Phase::Main && o.kind == OpKind::Write)
    {
        r.attempted += 1;
        let read = finals.get(op.key.as_str());
        match op.outcome {
            Outcome::Ok => {
                r.acknowledged += 1;
                match read {
                    None => push(&mut r.unverified, &mut r.unverified_keys, &op.key),
                    Some(None) => push(&mut r.lost, &mut r.lost_keys, &op.key),
                    Some(Some(v)) if Some(*v) != op.value.as_deref() => r.wrong_value += 1,
                    Some(Some(_)) => {}
                }
            }
            Outcome::Fail => {
                r.failed += 1;
                if matches!(read, Some(Some(_))) {
                    push(&mut r.failed_present, &mut r.failed_present_keys, &op.key);
                }
            }
            Outcome::Info => {
                r.unknown += 1;
                match read {
                    Some(Some(_)) => r.unknown_present += 1,
                    Some(None) => r.unknown_absent += 1,
                    None => {}
                }
            }
        }
    }
    (r.verdict, r.reason) = verdict_of(&r);
    r
}

fn push(count: &mut u64, keys: &mut Vec<String>, key: &str) {
    *count += 1;
    if keys.len() < MAX_LISTED_KEYS {
        keys.push(key.to_string());
    }
}

fn verdict_of(r: &SetResult) -> (Verdict, String) {
    let mut problems = Vec::new();
    if r.lost > 0 {
        problems.push(format!("{} acknowledged write(s) lost", r.lost));
    }
    if r.wrong_value > 0 {
        problems.push(format!(
            "{} acknowledged write(s) read back with another value",
            r.wrong_value
        ));
    }
    if r.failed_present > 0 {
        problems.push(format!(
            "{} write(s) reported as failed are present",
            r.failed_present
        ));
    }
    if !problems.is_empty() {
        return (Verdict::Invalid, problems.join("; "));
    }
    if r.unverified > 0 {
        return (
            Verdict::Unknown,
            format!(
                "{} acknowledged write(s) could not be read at the end",
                r.unverified
            ),
        );
    }
    if r.acknowledged == 0 {
        return (
            Verdict::Unknown,
            "no write was acknowledged: nothing to check".into(),
        );
    }
    (
        Verdict::Valid,
        format!("all {} acknowledged writes present", r.acknowledged),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: &str, outcome: Outcome) -> Op {
        Op {
            process: 0,
            kind: OpKind::Write,
            key: key.into(),
            value: Some(key.into()),
            outcome,
            invoke_ns: 0,
            complete_ns: 1,
            error: None,
            coordinator: None,
            phase: Phase::Main,
            attempts: None,
        }
    }

    fn final_read(key: &str, value: Option<&str>) -> Op {
        Op {
            kind: OpKind::Read,
            value: value.map(str::to_string),
            phase: Phase::Final,
            ..write(key, Outcome::Ok)
        }
    }

    #[test]
    fn all_acknowledged_present_is_valid_and_counts_unknowns() {
        let ops = vec![
            write("a", Outcome::Ok),
            write("b", Outcome::Info),
            write("c", Outcome::Info),
            write("d", Outcome::Fail),
            final_read("a", Some("a")),
            final_read("b", Some("b")),
            final_read("c", None),
            final_read("d", None),
        ];
        let r = check(&ops);
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
        assert_eq!(
            (r.attempted, r.acknowledged, r.unknown, r.failed),
            (4, 1, 2, 1)
        );
        assert_eq!((r.unknown_present, r.unknown_absent, r.lost), (1, 1, 0));
    }

    #[test]
    fn a_lost_acknowledged_write_is_invalid_and_named() {
        let ops = vec![
            write("a", Outcome::Ok),
            write("b", Outcome::Ok),
            final_read("a", Some("a")),
            final_read("b", None),
        ];
        let r = check(&ops);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.lost, 1);
        assert_eq!(r.lost_keys, ["b"]);
        assert!(
            r.reason.contains("1 acknowledged write(s) lost"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn a_failed_write_that_appears_is_invalid() {
        let ops = vec![
            write("a", Outcome::Ok),
            write("f", Outcome::Fail),
            final_read("a", Some("a")),
            final_read("f", Some("f")),
        ];
        let r = check(&ops);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.failed_present_keys, ["f"]);
    }

    #[test]
    fn a_wrong_value_is_invalid() {
        let ops = vec![write("a", Outcome::Ok), final_read("a", Some("other"))];
        assert_eq!(check(&ops).verdict, Verdict::Invalid);
    }

    #[test]
    fn an_acknowledged_write_never_read_back_is_unknown_not_valid() {
        let ops = vec![
            write("a", Outcome::Ok),
            write("b", Outcome::Ok),
            final_read("a", Some("a")),
        ];
        let r = check(&ops);
        assert_eq!(r.verdict, Verdict::Unknown);
        assert_eq!(r.unverified_keys, ["b"]);
        assert_eq!(check(&[]).verdict, Verdict::Unknown, "nothing acknowledged");
    }
}
