//! Property tests: random memberships (1..=12 nodes, 1..=3 datacenters, 1..=3 racks, 1..=64
//! virtual nodes each, tokens including the ring's edges) checked against the reference walk
//! in `common` and against the invariants of each strategy.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::strategy::Strategy as _;
use ring::{Member, NodeId, Ring, Strategy, Token};

use common::reference_replicas;

/// A token, biased towards the ring's edges and towards small values so that tokens crowd.
fn token() -> impl proptest::strategy::Strategy<Value = Token> {
    prop_oneof![
        6 => any::<u64>(),
        1 => Just(0u64),
        1 => Just(u64::MAX),
        2 => 0u64..64,
        1 => (u64::MAX - 64)..=u64::MAX,
    ]
}

/// Random members: 1..=12 nodes over `dcs` datacenters and `racks` racks per datacenter, each
/// with 1..=64 distinct tokens, no token shared.
fn members() -> impl proptest::strategy::Strategy<Value = Vec<Member>> {
    (1usize..=12, 1usize..=3, 1usize..=3)
        .prop_flat_map(|(nodes, dcs, racks)| {
            proptest::collection::vec(
                (0..dcs, 0..racks, proptest::collection::vec(token(), 1..=64)),
                nodes,
            )
        })
        .prop_map(|specs| {
            let mut used = BTreeSet::new();
            specs
                .into_iter()
                .enumerate()
                .map(|(j, (dc, rack, raw))| {
                    let tokens = raw
                        .into_iter()
                        .map(|mut t| {
                            while !used.insert(t) {
                                t = t.wrapping_add(0x9e37_79b9_7f4a_7c15);
                            }
                            t
                        })
                        .collect();
                    common::member(
                        j as NodeId * 3 + 1,
                        &format!("dc{dc}"),
                        &format!("r{rack}"),
                        tokens,
                    )
                })
                .collect()
        })
}

/// Datacenter name to node count.
fn dc_nodes(members: &[Member]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in members {
        *out.entry(m.datacenter.clone()).or_insert(0) += 1;
    }
    out
}

/// Datacenter name to its set of racks.
fn dc_racks(members: &[Member]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in members {
        out.entry(m.datacenter.clone())
            .or_default()
            .insert(m.rack.clone());
    }
    out
}

/// Members plus a valid strategy of either kind.
fn ring_input() -> impl proptest::strategy::Strategy<Value = (Vec<Member>, Strategy)> {
    members().prop_flat_map(|members| {
        let n = members.len();
        let counts: Vec<(String, usize)> = dc_nodes(&members).into_iter().collect();
        let per_dc: Vec<BoxedStrategy<usize>> =
            counts.iter().map(|(_, c)| (0..=*c).boxed()).collect();
        let names: Vec<String> = counts.iter().map(|(dc, _)| dc.clone()).collect();
        let simple = (1..=n).prop_map(|rf| Strategy::Simple { rf });
        let per_datacenter = per_dc.prop_map(move |rfs| {
            let mut rf: BTreeMap<String, usize> = names.iter().cloned().zip(rfs).collect();
            if rf.values().all(|&r| r == 0) {
                if let Some(first) = rf.values_mut().next() {
                    *first = 1;
                }
            }
            Strategy::PerDatacenter { rf }
        });
        (Just(members), prop_oneof![simple, per_datacenter])
    })
}

/// Tokens worth checking: every virtual-node token and its neighbours, the ring's edges, and
/// some random ones.
fn probe_tokens(members: &[Member], random: &[Token]) -> Vec<Token> {
    let mut probes: Vec<Token> = vec![0, 1, u64::MAX - 1, u64::MAX];
    for m in members {
        for &t in &m.tokens {
            probes.extend([t.wrapping_sub(1), t, t.wrapping_add(1)]);
        }
    }
    probes.extend_from_slice(random);
    probes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replicas_match_reference_walk((members, strategy) in ring_input(), random in proptest::collection::vec(any::<u64>(), 16)) {
        let ring = Ring::new(members.clone(), strategy.clone()).expect("valid ring");
        let vnodes = common::sorted_vnodes(&members);
        for t in probe_tokens(&members, &random) {
            let got = ring.replicas(t);
            prop_assert_eq!(got, &reference_replicas(&members, &vnodes, &strategy, t)[..], "token {}", t);
        }
    }

    #[test]
    fn every_token_gets_rf_distinct_nodes((members, strategy) in ring_input(), random in proptest::collection::vec(any::<u64>(), 16)) {
        let ring = Ring::new(members.clone(), strategy.clone()).expect("valid ring");
        let rf = match &strategy {
            Strategy::Simple { rf } => *rf,
            Strategy::PerDatacenter { rf } => rf.values().sum(),
        };
        prop_assert_eq!(ring.replication_factor(), rf);
        for t in probe_tokens(&members, &random) {
            let list = ring.replicas(t);
            prop_assert_eq!(list.len(), rf);
            let distinct: BTreeSet<NodeId> = list.iter().copied().collect();
            prop_assert_eq!(distinct.len(), rf);
            for id in list {
                prop_assert!(ring.member(*id).is_some());
            }
        }
    }

    #[test]
    fn per_datacenter_counts_and_rack_spread((members, strategy) in ring_input(), random in proptest::collection::vec(any::<u64>(), 16)) {
        let Strategy::PerDatacenter { rf } = &strategy else { return Ok(()); };
        let ring = Ring::new(members.clone(), strategy.clone()).expect("valid ring");
        let racks = dc_racks(&members);
        let by_id: BTreeMap<NodeId, &Member> = members.iter().map(|m| (m.id, m)).collect();
        for t in probe_tokens(&members, &random) {
            for (dc, &dc_rf) in rf {
                let in_dc: Vec<NodeId> = ring.replicas_in(t, dc).collect();
                prop_assert_eq!(in_dc.len(), dc_rf, "dc {} token {}", dc, t);
                prop_assert_eq!(ring.replication_factor_in(dc), dc_rf);
                let used: BTreeSet<&str> = in_dc.iter().map(|id| by_id[id].rack.as_str()).collect();
                let available = racks[dc].len();
                // At least RF racks: RF distinct racks. Fewer: every rack is used.
                prop_assert_eq!(used.len(), dc_rf.min(available), "dc {} token {}", dc, t);
            }
            // Every replica is in a datacenter with replication.
            for id in ring.replicas(t) {
                prop_assert!(rf.get(&by_id[id].datacenter).copied().unwrap_or(0) > 0);
            }
        }
        let expected: Vec<String> = rf.iter().filter(|(_, &n)| n > 0).map(|(dc, _)| dc.clone()).collect();
        prop_assert_eq!(ring.datacenters(), expected);
    }

    #[test]
    fn replicas_in_partitions_the_list((members, strategy) in ring_input(), random in proptest::collection::vec(any::<u64>(), 8)) {
        let ring = Ring::new(members.clone(), strategy).expect("valid ring");
        let by_id: BTreeMap<NodeId, &Member> = members.iter().map(|m| (m.id, m)).collect();
        for t in probe_tokens(&members, &random) {
            let list = ring.replicas(t);
            let mut total = 0;
            for dc in dc_nodes(&members).keys() {
                let in_dc: Vec<NodeId> = ring.replicas_in(t, dc).collect();
                let expected: Vec<NodeId> = list.iter().copied().filter(|id| &by_id[id].datacenter == dc).collect();
                prop_assert!(in_dc.len() <= ring.replication_factor_in(dc));
                prop_assert_eq!(&in_dc, &expected);
                total += in_dc.len();
            }
            prop_assert_eq!(total, list.len());
            prop_assert_eq!(ring.replicas_in(t, "no-such-dc").count(), 0);
        }
    }

    #[test]
    fn ranges_of_covers_exactly_the_replicated_tokens((members, strategy) in ring_input(), random in proptest::collection::vec(any::<u64>(), 16)) {
        let ring = Ring::new(members.clone(), strategy).expect("valid ring");
        let probes = probe_tokens(&members, &random);
        for m in &members {
            let ranges = ring.ranges_of(m.id);
            for (range, list) in &ranges {
                prop_assert!(list.contains(&m.id));
                prop_assert_eq!(ring.replicas(range.end), &list[..]);
            }
            for &t in &probes {
                let holding: Vec<&(ring::TokenRange, Vec<NodeId>)> = ranges.iter().filter(|(r, _)| r.contains(t)).collect();
                let replica = ring.replicas(t).contains(&m.id);
                prop_assert_eq!(holding.len(), usize::from(replica), "node {} token {}", m.id, t);
                if let Some((_, list)) = holding.first() {
                    prop_assert_eq!(&list[..], ring.replicas(t));
                }
            }
        }
        prop_assert!(ring.ranges_of(0).is_empty());
    }

    #[test]
    fn ownership_sums_to_one((members, strategy) in ring_input()) {
        let ring = Ring::new(members.clone(), strategy).expect("valid ring");
        let mut sum = 0.0;
        for m in &members {
            let share = ring.ownership(m.id);
            prop_assert!((0.0..=1.0).contains(&share));
            let from_ranges: f64 = ring.ranges_of(m.id).iter().map(|(r, _)| r.fraction()).sum::<f64>()
                / ring.replication_factor() as f64;
            prop_assert!((share - from_ranges).abs() < 1e-9);
            sum += share;
        }
        prop_assert!((sum - 1.0).abs() < 1e-9, "sum {}", sum);
    }

    #[test]
    fn member_order_does_not_matter((members, strategy) in ring_input(), random in proptest::collection::vec(any::<u64>(), 16)) {
        let ring = Ring::new(members.clone(), strategy.clone()).expect("valid ring");
        let mut reversed = members.clone();
        reversed.reverse();
        let other = Ring::new(reversed, strategy).expect("valid ring");
        prop_assert_eq!(ring.members(), other.members());
        for t in probe_tokens(&members, &random) {
            prop_assert_eq!(ring.replicas(t), other.replicas(t));
        }
    }
}
