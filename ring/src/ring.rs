//! The validated ring: members sorted by id, virtual nodes sorted by token, and the precomputed
//! preference list of every virtual-node range, so that a lookup is one binary search into flat
//! vectors and returns a borrowed slice.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::RingError;
use crate::placement;
use crate::token::{token_of, Token, TokenRange, TOKEN_SPACE};
use crate::topology::{Member, NodeId, Strategy};

/// A validated membership plus strategy, with every virtual node's preference list precomputed.
///
/// Virtual node `i` (sorted by token) owns the range `(token[i - 1], token[i]]` (the first one
/// wraps from the last token); a key's replicas are those of the range holding its token.
#[derive(Clone)]
pub struct Ring {
    /// Members, sorted by id.
    members: Vec<Member>,
    /// The strategy the ring was built with.
    strategy: Strategy,
    /// Replicas per key: the stride of `replicas` and `replica_dcs`.
    rf: usize,
    /// Virtual-node tokens, ascending, distinct, non-empty.
    tokens: Vec<Token>,
    /// Preference lists: virtual node `i` owns `[i * rf, (i + 1) * rf)`.
    replicas: Vec<NodeId>,
    /// Datacenter index (into `datacenters`) of each entry of `replicas`.
    replica_dcs: Vec<u32>,
    /// Datacenter names of the members, sorted, distinct.
    datacenters: Vec<String>,
}

impl Ring {
    /// Validates a membership and strategy and precomputes, for every virtual-node range, its
    /// preference list.
    ///
    /// Errors: [`RingError::NoMembers`] for an empty list, [`RingError::DuplicateMember`],
    /// [`RingError::NoTokens`] for a member without tokens, [`RingError::DuplicateToken`] for a
    /// token used twice anywhere; for the strategy, [`RingError::UnknownDatacenter`] when a
    /// datacenter with a positive replication factor has no members,
    /// [`RingError::ReplicationExceedsNodes`] when a replication factor exceeds the nodes
    /// available to it, [`RingError::ZeroReplication`] when keys would have no replicas.
    /// Datacenters mapped to replication factor 0 are ignored, named or not.
    ///
    /// Cost: O(V log V + V * RF log RF) for V virtual nodes, independent of how unevenly tokens,
    /// racks or datacenters are spread.
    pub fn new(mut members: Vec<Member>, strategy: Strategy) -> Result<Ring, RingError> {
        if members.is_empty() {
            return Err(RingError::NoMembers);
        }
        members.sort_by_key(|m| m.id);
        if let Some(pair) = members.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(RingError::DuplicateMember(pair[0].id));
        }
        if let Some(m) = members.iter().find(|m| m.tokens.is_empty()) {
            return Err(RingError::NoTokens(m.id));
        }

        let mut vnodes: Vec<(Token, usize)> = members
            .iter()
            .enumerate()
            .flat_map(|(index, m)| m.tokens.iter().map(move |&t| (t, index)))
            .collect();
        vnodes.sort_unstable();
        if let Some(pair) = vnodes.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(RingError::DuplicateToken(pair[0].0));
        }

        let mut datacenters: Vec<String> = members.iter().map(|m| m.datacenter.clone()).collect();
        datacenters.sort_unstable();
        datacenters.dedup();
        let dc_index = |name: &str| datacenters.binary_search_by(|d| d.as_str().cmp(name)).ok();
        let member_dc: Vec<usize> = members
            .iter()
            .map(|m| dc_index(&m.datacenter).unwrap_or(0))
            .collect();
        let mut dc_nodes = vec![0usize; datacenters.len()];
        for &dc in &member_dc {
            dc_nodes[dc] += 1;
        }

        let owners: Vec<usize> = vnodes.iter().map(|&(_, index)| index).collect();
        let tokens: Vec<Token> = vnodes.iter().map(|&(token, _)| token).collect();

        let (rf, placed) = match &strategy {
            Strategy::Simple { rf } => {
                let rf = *rf;
                if rf == 0 {
                    return Err(RingError::ZeroReplication);
                }
                if rf > members.len() {
                    return Err(RingError::ReplicationExceedsNodes {
                        datacenter: None,
                        rf,
                        nodes: members.len(),
                    });
                }
                (rf, placement::simple(&owners, members.len(), rf))
            }
            Strategy::PerDatacenter { rf: per_dc } => {
                let mut dc_rf = vec![0usize; datacenters.len()];
                for (name, &rf) in per_dc {
                    if rf == 0 {
                        continue;
                    }
                    let Some(dc) = dc_index(name) else {
                        return Err(RingError::UnknownDatacenter(name.clone()));
                    };
                    if rf > dc_nodes[dc] {
                        return Err(RingError::ReplicationExceedsNodes {
                            datacenter: Some(name.clone()),
                            rf,
                            nodes: dc_nodes[dc],
                        });
                    }
                    dc_rf[dc] = rf;
                }
                // Each entry is at most its datacenter's node count: the sum cannot overflow.
                let total: usize = dc_rf.iter().sum();
                if total == 0 {
                    return Err(RingError::ZeroReplication);
                }
                let mut racks: BTreeMap<(usize, &str), usize> = BTreeMap::new();
                for (m, member) in members.iter().enumerate() {
                    let next = racks.len();
                    racks
                        .entry((member_dc[m], member.rack.as_str()))
                        .or_insert(next);
                }
                let member_rack: Vec<usize> = members
                    .iter()
                    .enumerate()
                    .map(|(m, member)| {
                        racks
                            .get(&(member_dc[m], member.rack.as_str()))
                            .copied()
                            .unwrap_or(0)
                    })
                    .collect();
                (
                    total,
                    placement::per_datacenter(&owners, &member_dc, &member_rack, &dc_rf),
                )
            }
        };

        let replicas: Vec<NodeId> = placed.iter().map(|&m| members[m].id).collect();
        let replica_dcs: Vec<u32> = placed.iter().map(|&m| member_dc[m] as u32).collect();
        Ok(Ring {
            members,
            strategy,
            rf,
            tokens,
            replicas,
            replica_dcs,
            datacenters,
        })
    }

    /// Every member, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member with this id, if any.
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members
            .binary_search_by_key(&id, |m| m.id)
            .ok()
            .map(|i| &self.members[i])
    }

    /// The strategy the ring was built with.
    pub fn strategy(&self) -> &Strategy {
        &self.strategy
    }

    /// Total replication factor: the length of every preference list (the sum over datacenters
    /// for [`Strategy::PerDatacenter`]).
    pub fn replication_factor(&self) -> usize {
        self.rf
    }

    /// Replication factor inside one datacenter: the configured one for
    /// [`Strategy::PerDatacenter`] (0 for a datacenter without replicas); for
    /// [`Strategy::Simple`], `min(rf, nodes in that datacenter)`, only an upper bound, since how
    /// many of a key's replicas land in a datacenter depends on the key.
    ///
    /// For `LOCAL_*` consistency levels, count the replicas of the key located in the
    /// datacenter with [`Ring::replicas_in`] instead: that is exact under both strategies.
    pub fn replication_factor_in(&self, datacenter: &str) -> usize {
        match &self.strategy {
            Strategy::PerDatacenter { rf } => rf.get(datacenter).copied().unwrap_or(0),
            Strategy::Simple { rf } => {
                let nodes = self
                    .members
                    .iter()
                    .filter(|m| m.datacenter == datacenter)
                    .count();
                (*rf).min(nodes)
            }
        }
    }

    /// Datacenters that hold replicas, sorted: for [`Strategy::PerDatacenter`] those with a
    /// positive replication factor, for [`Strategy::Simple`] every datacenter of the members.
    pub fn datacenters(&self) -> Vec<String> {
        match &self.strategy {
            Strategy::PerDatacenter { rf } => rf
                .iter()
                .filter(|(_, &n)| n > 0)
                .map(|(dc, _)| dc.clone())
                .collect(),
            Strategy::Simple { .. } => self.datacenters.clone(),
        }
    }

    /// Index of the virtual node owning `token`: the first with a token `>= token`, wrapping to
    /// the first virtual node.
    fn vnode_of(&self, token: Token) -> usize {
        let i = self.tokens.partition_point(|&t| t < token);
        if i == self.tokens.len() {
            0
        } else {
            i
        }
    }

    /// The range `(previous token, own token]` owned by virtual node `i`.
    fn range_of_vnode(&self, i: usize) -> TokenRange {
        let previous = if i == 0 { self.tokens.len() - 1 } else { i - 1 };
        TokenRange {
            start: self.tokens[previous],
            end: self.tokens[i],
        }
    }

    /// The preference list of a token: RF distinct node ids in placement order, the primary
    /// first. A binary search and a borrowed slice: no allocation.
    pub fn replicas(&self, token: Token) -> &[NodeId] {
        let i = self.vnode_of(token);
        &self.replicas[i * self.rf..(i + 1) * self.rf]
    }

    /// The preference list of a key: `replicas(token_of(key))`.
    pub fn replicas_for_key(&self, key: &[u8]) -> &[NodeId] {
        self.replicas(token_of(key))
    }

    /// The replicas of `token` located in `datacenter`, in placement order; none for an unknown
    /// datacenter. `LOCAL_*` consistency levels should count these rather than use
    /// [`Ring::replication_factor_in`], which is only an upper bound under
    /// [`Strategy::Simple`].
    pub fn replicas_in<'a>(
        &'a self,
        token: Token,
        datacenter: &str,
    ) -> impl Iterator<Item = NodeId> + 'a {
        let wanted = self
            .datacenters
            .binary_search_by(|d| d.as_str().cmp(datacenter))
            .ok()
            .map(|i| i as u32);
        let i = self.vnode_of(token);
        let range = i * self.rf..(i + 1) * self.rf;
        self.replicas[range.clone()]
            .iter()
            .zip(&self.replica_dcs[range])
            .filter(move |(_, &dc)| Some(dc) == wanted)
            .map(|(&id, _)| id)
    }

    /// Every token range for which `node` is a replica, with the full preference list of each,
    /// in ring order. Adjacent virtual-node ranges with identical preference lists are merged
    /// (a range with `start == end` is the whole ring). Empty for an unknown node.
    pub fn ranges_of(&self, node: NodeId) -> Vec<(TokenRange, Vec<NodeId>)> {
        let mut runs: Vec<(TokenRange, &[NodeId])> = Vec::new();
        for (i, list) in self.replicas.chunks_exact(self.rf).enumerate() {
            if !list.contains(&node) {
                continue;
            }
            let range = self.range_of_vnode(i);
            match runs.last_mut() {
                Some((last, last_list)) if last.end == range.start && *last_list == list => {
                    last.end = range.end
                }
                _ => runs.push((range, list)),
            }
        }
        // The last run may continue into the first one across the wrap.
        if runs.len() >= 2 {
            let (first, last) = (runs[0], runs[runs.len() - 1]);
            if last.0.end == first.0.start && last.1 == first.1 {
                runs[0].0.start = last.0.start;
                runs.pop();
            }
        }
        runs.into_iter()
            .map(|(range, list)| (range, list.to_vec()))
            .collect()
    }

    /// Share of the token space (`0.0..=1.0`) for which `node` is a replica, divided by the
    /// replication factor, so that shares sum to 1.0 over all nodes (0.0 for an unknown node).
    ///
    /// Balance: with 256 tokens per node from [`tokens_for`](crate::tokens_for) and
    /// [`Strategy::Simple`], every node of a 3..=16 node ring owns `1/N ± 30%` of `1/N` with
    /// RF 1 and `1/N ± 20%` with RF 3 (tested for ids `1..=N`, where the worst measured
    /// deviations are 17.7% and 7.5%; over 4,200 rings with other id sets they were 25.2% and
    /// 15.5%). The spread shrinks as `1/sqrt(tokens per node)`. Under
    /// [`Strategy::PerDatacenter`] a node's fair share is `rf_dc / (RF * nodes_in_dc)`.
    pub fn ownership(&self, node: NodeId) -> f64 {
        let owned: u128 = self
            .replicas
            .chunks_exact(self.rf)
            .enumerate()
            .filter(|(_, list)| list.contains(&node))
            .map(|(i, _)| self.range_of_vnode(i).width())
            .sum();
        owned as f64 / TOKEN_SPACE / self.rf as f64
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The precomputed tables are large and derived; show what the ring was built from.
        f.debug_struct("Ring")
            .field("members", &self.members)
            .field("strategy", &self.strategy)
            .field("replication_factor", &self.rf)
            .field("vnodes", &self.tokens.len())
            .finish()
    }
}
