//! The convergence checker: after the nemesis healed and a repair round ran, every replica of
//! every key must hold the same record (same version, same value or tombstone). Replicas are
//! asked one by one for their own record (`Inspect`), so read repair plays no part.

use super::Verdict;
use proto::Version;
use serde::{Deserialize, Serialize};

/// Divergent keys listed in the result; the count is complete.
pub const MAX_LISTED_KEYS: usize = 20;

/// What one replica holds for a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum ReplicaState {
    /// No record at all.
    Absent,
    /// A value or a tombstone with its version.
    Present {
        /// The record's version.
        version: Version,
        /// The value (lossy UTF-8), `None` for a tombstone.
        value: Option<String>,
    },
    /// The replica could not be asked.
    Error {
        /// Why.
        message: String,
    },
}

/// The replicas of one key and what each holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyReplicas {
    /// The key.
    pub key: String,
    /// `(node id, its record)` for every replica of the key.
    pub replicas: Vec<(u32, ReplicaState)>,
}

/// What the convergence checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvergenceResult {
    /// Valid when every replica of every key agrees.
    pub verdict: Verdict,
    /// One line explaining the verdict.
    pub reason: String,
    /// Keys inspected.
    pub keys: u64,
    /// Keys whose replicas disagree.
    pub divergent: u64,
    /// Keys with a replica that could not be inspected.
    pub uninspected: u64,
    /// Some divergent or uninspected keys, with every replica's record.
    pub examples: Vec<KeyReplicas>,
}

/// Checks that the replicas of each key hold the same record.
pub fn check(keys: &[KeyReplicas]) -> ConvergenceResult {
    let mut r = ConvergenceResult {
        keys: keys.len() as u64,
        ..ConvergenceResult::default()
    };
    for k in keys {
        let errors = k
            .replicas
            .iter()
            .any(|(_, s)| matches!(s, ReplicaState::Error { .. }));
        let known: Vec<&ReplicaState> = k
            .replicas
            .iter()
            .map(|(_, s)| s)
            .filter(|s| !matches!(s, ReplicaState::Error { .. }))
            .collect();
        let agree = known.windows(2).all(|w| w[0] == w[1]);
        if !agree {
            r.divergent += 1;
        } else if errors {
            r.uninspected += 1;
        } else {
            continue;
        }
        if r.examples.len() < MAX_LISTED_KEYS {
            r.examples.push(k.clone());
        }
    }
    (r.verdict, r.reason) = if r.divergent > 0 {
        (
            Verdict::Invalid,
            format!(
                "{} of {} key(s) differ between replicas after heal and repair",
                r.divergent, r.keys
            ),
        )
    } else if r.uninspected > 0 {
        (
            Verdict::Unknown,
            format!(
                "{} key(s) had a replica that could not be inspected",
                r.uninspected
            ),
        )
    } else if r.keys == 0 {
        (Verdict::Unknown, "no keys to inspect".into())
    } else {
        (
            Verdict::Valid,
            format!("all replicas agree on all {} key(s)", r.keys),
        )
    };
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(hlc: u64, node: u32, value: &str) -> ReplicaState {
        ReplicaState::Present {
            version: Version { hlc, node },
            value: Some(value.into()),
        }
    }

    fn key(name: &str, replicas: Vec<ReplicaState>) -> KeyReplicas {
        KeyReplicas {
            key: name.into(),
            replicas: replicas
                .into_iter()
                .enumerate()
                .map(|(i, s)| (i as u32 + 1, s))
                .collect(),
        }
    }

    #[test]
    fn identical_replicas_converge() {
        let keys = vec![
            key(
                "a",
                vec![present(5, 1, "x"), present(5, 1, "x"), present(5, 1, "x")],
            ),
            key("b", vec![ReplicaState::Absent, ReplicaState::Absent]),
        ];
        let r = check(&keys);
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
        assert_eq!(r.keys, 2);
    }

    #[test]
    fn a_stale_or_missing_replica_is_divergence() {
        let keys = vec![
            key("ok", vec![present(5, 1, "x"), present(5, 1, "x")]),
            key("stale", vec![present(5, 1, "x"), present(4, 2, "old")]),
            key("missing", vec![present(5, 1, "x"), ReplicaState::Absent]),
            key(
                "tombstone",
                vec![
                    present(5, 1, "x"),
                    ReplicaState::Present {
                        version: Version { hlc: 5, node: 1 },
                        value: None,
                    },
                ],
            ),
        ];
        let r = check(&keys);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.divergent, 3);
        let names: Vec<&str> = r.examples.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(names, ["stale", "missing", "tombstone"]);
    }

    #[test]
    fn an_unreachable_replica_makes_it_unknown() {
        let keys = vec![key(
            "a",
            vec![
                present(5, 1, "x"),
                ReplicaState::Error {
                    message: "timeout".into(),
                },
            ],
        )];
        let r = check(&keys);
        assert_eq!(r.verdict, Verdict::Unknown);
        assert_eq!(r.uninspected, 1);
    }
}
