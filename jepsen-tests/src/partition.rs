//! Partition shapes, as in Jepsen's nemeses: which nodes may no longer exchange packets. Pure
//! planning (no I/O): [`plan`] returns, for each node, the peers it is cut from; the network
//! module turns that into nftables rules. Cuts are symmetric, and clients always reach every node.

use ring::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The partitions the harness can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// Two random halves that cannot talk to each other.
    Halves,
    /// One random node cut from all others.
    One,
    /// Each node sees a majority, but no two nodes see the same one (nodes in a random ring,
    /// each seeing its nearest neighbours). Needs at least 4 nodes.
    MajoritiesRing,
    /// Two sides that cannot talk to each other, and a middle node that both sides see.
    /// Needs at least 3 nodes.
    Bridge,
}

/// A planned partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// What it looks like, for reports (`{1,3} | {2,4,5}`).
    pub description: String,
    /// For each node, the nodes it must not exchange packets with (symmetric).
    pub cuts: BTreeMap<NodeId, BTreeSet<NodeId>>,
}

impl Partition {
    /// Whether `a` and `b` can talk.
    pub fn connected(&self, a: NodeId, b: NodeId) -> bool {
        !self.cuts.get(&a).is_some_and(|c| c.contains(&b))
    }
}

/// Plans a partition of `nodes` (the order is used as the random permutation: shuffle before).
pub fn plan(shape: Shape, shuffled: &[NodeId]) -> Result<Partition, String> {
    let n = shuffled.len();
    let need = match shape {
        Shape::Halves | Shape::One => 2,
        Shape::Bridge => 3,
        Shape::MajoritiesRing => 4,
    };
    if n < need {
        return Err(format!(
            "the {shape:?} partition needs at least {need} nodes, the cluster has {n}"
        ));
    }
    let mut cuts: BTreeMap<NodeId, BTreeSet<NodeId>> =
        shuffled.iter().map(|&id| (id, BTreeSet::new())).collect();
    let mut cut = |a: NodeId, b: NodeId| {
        cuts.entry(a).or_default().insert(b);
        cuts.entry(b).or_default().insert(a);
    };
    let description = match shape {
        Shape::Halves | Shape::One => {
            let split = if shape == Shape::One { 1 } else { n / 2 };
            let (left, right) = shuffled.split_at(split);
            for &a in left {
                for &b in right {
                    cut(a, b);
                }
            }
            if shape == Shape::One {
                format!("isolated {}", left[0])
            } else {
                format!("{} | {}", set(left), set(right))
            }
        }
        Shape::Bridge => {
            let middle = shuffled[0];
            let rest = &shuffled[1..];
            let (left, right) = rest.split_at(rest.len() / 2);
            for &a in left {
                for &b in right {
                    cut(a, b);
                }
            }
            format!("{} - {middle} - {}", set(left), set(right))
        }
        Shape::MajoritiesRing => {
            let majority = n / 2 + 1;
            // Neighbours on each side: at least `majority - 1` visible nodes in total.
            let reach = (majority - 1).div_ceil(2);
            for (i, &a) in shuffled.iter().enumerate() {
                for (j, &b) in shuffled.iter().enumerate() {
                    let distance = (i + n - j) % n;
                    let distance = distance.min(n - distance);
                    if distance > reach {
                        cut(a, b);
                    }
                }
            }
            let ring: Vec<String> = shuffled.iter().map(|id| id.to_string()).collect();
            format!(
                "ring {} (each sees {} neighbour(s) per side)",
                ring.join("-"),
                reach
            )
        }
    };
    Ok(Partition { description, cuts })
}

fn set(ids: &[NodeId]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let ids: Vec<String> = sorted.iter().map(|id| id.to_string()).collect();
    format!("{{{}}}", ids.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: [NodeId; 5] = [3, 1, 4, 5, 2];

    fn visible(p: &Partition, a: NodeId, all: &[NodeId]) -> BTreeSet<NodeId> {
        all.iter().copied().filter(|&b| p.connected(a, b)).collect()
    }

    fn assert_symmetric(p: &Partition, all: &[NodeId]) {
        for &a in all {
            assert!(p.connected(a, a), "{a} cut from itself");
            for &b in all {
                assert_eq!(p.connected(a, b), p.connected(b, a), "{a} {b}");
            }
        }
    }

    #[test]
    fn halves_and_one_split_the_cluster_in_two() {
        let p = plan(Shape::Halves, &FIVE).expect("plan");
        assert_symmetric(&p, &FIVE);
        assert_eq!(p.description, "{1,3} | {2,4,5}");
        assert!(p.connected(3, 1) && !p.connected(3, 4) && p.connected(4, 2));
        let p = plan(Shape::One, &FIVE).expect("plan");
        assert_eq!(visible(&p, 3, &FIVE), BTreeSet::from([3]));
        assert_eq!(visible(&p, 1, &FIVE).len(), 4);
    }

    #[test]
    fn majorities_ring_gives_everyone_a_different_majority() {
        for all in [&FIVE[..], &[1, 2, 3, 4], &[7, 1, 6, 2, 5, 3, 4]] {
            let p = plan(Shape::MajoritiesRing, all).expect("plan");
            assert_symmetric(&p, all);
            let mut seen = BTreeSet::new();
            for &a in all {
                let v = visible(&p, a, all);
                assert!(v.len() > all.len() / 2, "{a} sees {v:?}: not a majority");
                assert!(v.len() < all.len(), "{a} sees everyone");
                assert!(seen.insert(v.clone()), "two nodes see {v:?}");
            }
        }
        assert!(plan(Shape::MajoritiesRing, &[1, 2, 3]).is_err());
    }

    #[test]
    fn bridge_has_a_middle_seen_by_both_sides() {
        let p = plan(Shape::Bridge, &FIVE).expect("plan");
        assert_symmetric(&p, &FIVE);
        assert_eq!(visible(&p, 3, &FIVE).len(), 5, "the middle sees all");
        assert_eq!(p.description, "{1,4} - 3 - {2,5}");
        assert!(!p.connected(1, 5) && p.connected(1, 4));
        assert!(plan(Shape::Bridge, &[1, 2]).is_err());
    }
}
