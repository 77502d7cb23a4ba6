//! Shared test helpers: membership builders and a slow, literal reference implementation of
//! placement (walk the sorted virtual-node list from the key's token, Cassandra style) that the
//! precomputed tables of `Ring` are compared against.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use ring::{Member, NodeId, Strategy, Token};

/// A member with the given placement.
pub fn member(id: NodeId, dc: &str, rack: &str, tokens: Vec<Token>) -> Member {
    Member {
        id,
        datacenter: dc.to_string(),
        rack: rack.to_string(),
        tokens,
    }
}

/// Every (token, node) virtual node, sorted by token.
pub fn sorted_vnodes(members: &[Member]) -> Vec<(Token, NodeId)> {
    let mut vnodes: Vec<(Token, NodeId)> = members
        .iter()
        .flat_map(|m| m.tokens.iter().map(move |&t| (t, m.id)))
        .collect();
    vnodes.sort_unstable();
    vnodes
}

/// The preference list of `token`, walking `vnodes` (from [`sorted_vnodes`]) one by one.
pub fn reference_replicas(
    members: &[Member],
    vnodes: &[(Token, NodeId)],
    strategy: &Strategy,
    token: Token,
) -> Vec<NodeId> {
    let start = vnodes.iter().position(|&(t, _)| t >= token).unwrap_or(0);
    let walk = (0..vnodes.len()).map(|step| vnodes[(start + step) % vnodes.len()].1);
    let by_id: BTreeMap<NodeId, &Member> = members.iter().map(|m| (m.id, m)).collect();
    match strategy {
        Strategy::Simple { rf } => {
            let mut chosen = Vec::new();
            for id in walk {
                if chosen.len() == *rf {
                    break;
                }
                if !chosen.contains(&id) {
                    chosen.push(id);
                }
            }
            chosen
        }
        Strategy::PerDatacenter { rf } => {
            // Cassandra 3.x NetworkTopologyStrategy.calculateNaturalEndpoints, with its sets
            // (insertion-ordered where Cassandra uses LinkedHashSet) written out as vectors.
            fn add(set: &mut Vec<NodeId>, id: NodeId) {
                if !set.contains(&id) {
                    set.push(id);
                }
            }
            let mut all_racks: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            for m in members {
                all_racks
                    .entry(m.datacenter.as_str())
                    .or_default()
                    .insert(m.rack.as_str());
            }
            let wanted: BTreeMap<&str, usize> = rf
                .iter()
                .filter(|(_, &n)| n > 0)
                .map(|(dc, &n)| (dc.as_str(), n))
                .collect();
            let mut replicas: Vec<NodeId> = Vec::new();
            let mut dc_replicas: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
            let mut seen_racks: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            let mut skipped: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
            for id in walk {
                if wanted
                    .iter()
                    .all(|(dc, &n)| dc_replicas.get(dc).map_or(0, Vec::len) >= n)
                {
                    break;
                }
                let m = by_id[&id];
                let dc = m.datacenter.as_str();
                let Some(&dc_rf) = wanted.get(dc) else {
                    continue;
                };
                if dc_replicas.get(dc).map_or(0, Vec::len) >= dc_rf {
                    continue;
                }
                let racks_in_dc = all_racks[dc].len();
                let seen = seen_racks.entry(dc).or_default();
                if seen.len() == racks_in_dc {
                    add(dc_replicas.entry(dc).or_default(), id);
                    add(&mut replicas, id);
                } else if seen.contains(m.rack.as_str()) {
                    add(skipped.entry(dc).or_default(), id);
                } else {
                    add(dc_replicas.entry(dc).or_default(), id);
                    add(&mut replicas, id);
                    seen.insert(m.rack.as_str());
                    if seen.len() == racks_in_dc {
                        for &s in skipped.get(dc).map(Vec::as_slice).unwrap_or(&[]) {
                            if dc_replicas[dc].len() >= dc_rf {
                                break;
                            }
                            add(dc_replicas.entry(dc).or_default(), s);
                            add(&mut replicas, s);
                        }
                    }
                }
            }
            replicas
        }
    }
}
