//! What a consistency level requires of a key's replicas. A requirement is a list of groups (a
//! set of replicas and how many of them must answer); the level is met when every group is. This
//! one shape covers every level: ONE..ALL have one group of all replicas, LOCAL_* one group of the
//! coordinator's datacenter, EACH_QUORUM one group per datacenter.

use proto::Consistency;
use ring::NodeId;

/// One group of replicas and how many of them must answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Replicas that count toward this group.
    pub members: Vec<NodeId>,
    /// How many of them must answer.
    pub needed: usize,
}

/// What a level requires for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// Every group must be met.
    pub groups: Vec<Group>,
}

/// The level cannot be met for this key, whatever is up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    /// The level needs more replicas than the key has (in total or in a datacenter).
    #[error("{level} needs {needed} replicas but the key has {have}{}", in_dc(.datacenter))]
    TooFewReplicas {
        level: Consistency,
        needed: usize,
        have: usize,
        datacenter: Option<String>,
    },
    /// ANY applies to writes only.
    #[error("ANY is a write-only consistency level")]
    AnyForRead,
}

fn in_dc(dc: &Option<String>) -> String {
    dc.as_ref()
        .map(|d| format!(" in datacenter {d}"))
        .unwrap_or_default()
}

fn quorum(n: usize) -> usize {
    n / 2 + 1
}

impl Requirement {
    /// The requirement of `level` for a key whose preference list is `replicas`. `dc_of` names a
    /// node's datacenter; `local_dc` is the coordinator's.
    pub fn new<'a>(
        level: Consistency,
        replicas: &[NodeId],
        dc_of: impl Fn(NodeId) -> &'a str,
        local_dc: &str,
        for_read: bool,
    ) -> Result<Requirement, LevelError> {
        let all = || replicas.to_vec();
        let in_dc = |dc: &str| {
            replicas
                .iter()
                .copied()
                .filter(|r| dc_of(*r) == dc)
                .collect::<Vec<_>>()
        };
        let group = |members: Vec<NodeId>, needed: usize, dc: Option<&str>| {
            if needed > members.len() || members.is_empty() {
                Err(LevelError::TooFewReplicas {
                    level,
                    needed: needed.max(1),
                    have: members.len(),
                    datacenter: dc.map(str::to_string),
                })
            } else {
                Ok(Group { members, needed })
            }
        };
        let groups = match level {
            Consistency::Any if for_read => return Err(LevelError::AnyForRead),
            Consistency::Any | Consistency::One => vec![group(all(), 1, None)?],
            Consistency::Two => vec![group(all(), 2, None)?],
            Consistency::Three => vec![group(all(), 3, None)?],
            // LINEARIZABLE's two phases each meet a majority of all replicas.
            Consistency::Quorum | Consistency::Linearizable => {
                vec![group(all(), quorum(replicas.len()), None)?]
            }
            Consistency::All => vec![group(all(), replicas.len(), None)?],
            Consistency::LocalOne => vec![group(in_dc(local_dc), 1, Some(local_dc))?],
            Consistency::LocalQuorum => {
                let local = in_dc(local_dc);
                let n = quorum(local.len());
                vec![group(local, n, Some(local_dc))?]
            }
            Consistency::EachQuorum => {
                let mut dcs: Vec<&str> = replicas.iter().map(|r| dc_of(*r)).collect();
                dcs.sort_unstable();
                dcs.dedup();
                dcs.into_iter()
                    .map(|dc| {
                        let members = in_dc(dc);
                        let n = quorum(members.len());
                        group(members, n, Some(dc))
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(Requirement { groups })
    }

    /// Whether the answers of `answered` meet every group.
    pub fn met_by(&self, answered: &[NodeId]) -> bool {
        self.groups
            .iter()
            .all(|g| g.members.iter().filter(|m| answered.contains(m)).count() >= g.needed)
    }

    /// `None` if `alive` could meet every group; otherwise `(alive, needed)` of the first group
    /// that cannot be met.
    pub fn shortfall(&self, alive: &[NodeId]) -> Option<(usize, usize)> {
        self.groups.iter().find_map(|g| {
            let up = g.members.iter().filter(|m| alive.contains(m)).count();
            (up < g.needed).then_some((up, g.needed))
        })
    }

    /// Total answers needed (for error messages).
    pub fn total_needed(&self) -> usize {
        self.groups.iter().map(|g| g.needed).sum()
    }

    /// A smallest set of nodes from `preferred` (best first) that meets every group.
    pub fn choose(&self, preferred: &[NodeId]) -> Vec<NodeId> {
        let mut chosen: Vec<NodeId> = Vec::new();
        for g in &self.groups {
            let mut have = g.members.iter().filter(|m| chosen.contains(m)).count();
            for n in preferred {
                if have >= g.needed {
                    break;
                }
                if g.members.contains(n) && !chosen.contains(n) {
                    chosen.push(*n);
                    have += 1;
                }
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Nodes 1..=3 in dc1, 4..=6 in dc2.
    fn dc(n: NodeId) -> &'static str {
        if n <= 3 {
            "dc1"
        } else {
            "dc2"
        }
    }

    fn req(level: Consistency, replicas: &[NodeId]) -> Result<Requirement, LevelError> {
        Requirement::new(level, replicas, dc, "dc1", false)
    }

    #[test]
    fn single_dc_levels() {
        let r = [1, 2, 3];
        assert!(req(Consistency::One, &r).expect("one").met_by(&[3]));
        let q = req(Consistency::Quorum, &r).expect("quorum");
        assert!(!q.met_by(&[1]) && q.met_by(&[1, 3]));
        let all = req(Consistency::All, &r).expect("all");
        assert!(!all.met_by(&[1, 2]) && all.met_by(&[1, 2, 3]));
        assert_eq!(all.shortfall(&[1, 2]), Some((2, 3)));
        assert_eq!(q.shortfall(&[1, 2]), None);
        assert!(matches!(
            req(Consistency::Three, &[1, 2]),
            Err(LevelError::TooFewReplicas {
                needed: 3,
                have: 2,
                ..
            })
        ));
        assert_eq!(
            Requirement::new(Consistency::Any, &r, dc, "dc1", true),
            Err(LevelError::AnyForRead)
        );
    }

    #[test]
    fn datacenter_levels() {
        let r = [1, 2, 3, 4, 5, 6];
        let lq = req(Consistency::LocalQuorum, &r).expect("local quorum");
        assert!(lq.met_by(&[1, 2]) && !lq.met_by(&[1, 4, 5, 6]));
        assert_eq!(lq.shortfall(&[1, 4, 5, 6]), Some((1, 2)));
        let each = req(Consistency::EachQuorum, &r).expect("each quorum");
        assert!(!each.met_by(&[1, 2, 3]) && each.met_by(&[1, 2, 4, 5]));
        let q = req(Consistency::Quorum, &r).expect("quorum");
        assert!(q.met_by(&[1, 2, 3, 4]) && !q.met_by(&[1, 2, 3]));
        assert!(req(Consistency::LocalOne, &[4, 5]).is_err());
    }

    #[test]
    fn choose_prefers_given_order_and_meets_every_group() {
        let r = [1, 2, 3, 4, 5, 6];
        let each = req(Consistency::EachQuorum, &r).expect("each quorum");
        let chosen = each.choose(&[4, 1, 5, 2, 6, 3]);
        assert!(each.met_by(&chosen));
        assert_eq!(chosen.len(), 4);
        let one = req(Consistency::One, &r).expect("one");
        assert_eq!(one.choose(&[5, 1]), vec![5]);
    }
}
