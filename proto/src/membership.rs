//! Membership on the wire: the cluster's ring state, which every node gossips and which only
//! staged, committed topology changes alter; each node's endpoint state (address, generation,
//! what ring it runs); and the admin operations that stage, show and commit changes.
//!
//! A [`RingState`] is replaced whole, never merged: a node adopts a state that
//! [`RingState::newer_than`] its own. Every change makes a new state with `epoch + 1`, authored
//! by the node that made it; two changes made at once from the same epoch are ordered by author,
//! and the losing change is made again by whoever drives it (see the node's membership module).

use crate::message::MemberInfo;
use ring::{Member, NodeId, Strategy, TokenRange};
use serde::{Deserialize, Serialize};

/// The ring every node agrees on, once gossip has spread it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingState {
    /// Cluster name; states of another cluster are refused.
    pub cluster: String,
    /// Incremented by every change.
    pub epoch: u64,
    /// The node that made this state (orders two states of the same epoch).
    pub author: NodeId,
    /// How replicas are placed.
    pub strategy: Strategy,
    /// The members that own data now. Empty only on a node that has not yet learned a cluster.
    pub members: Vec<MemberInfo>,
    /// Changes staged by `cluster join/leave/replace`, applied by `cluster commit`.
    pub staged: Vec<Change>,
    /// The committed change in progress, if any.
    pub transition: Option<Transition>,
}

impl RingState {
    /// Whether `self` should replace `other`: a higher epoch, or the same epoch by a higher
    /// author. A state of another cluster is never newer.
    pub fn newer_than(&self, other: &RingState) -> bool {
        self.cluster == other.cluster && (self.epoch, self.author) > (other.epoch, other.author)
    }

    /// The ring members every key's replicas are taken from after the transition (the members
    /// now when none is in progress).
    pub fn target_members(&self) -> &[MemberInfo] {
        self.transition
            .as_ref()
            .map(|t| t.next.as_slice())
            .unwrap_or(&self.members)
    }

    /// A member of the current or next ring by id.
    pub fn member(&self, id: NodeId) -> Option<&MemberInfo> {
        self.members
            .iter()
            .chain(self.transition.iter().flat_map(|t| t.next.iter()))
            .find(|m| m.member.id == id)
    }

    /// Ids of the nodes staged to enter the ring (joining, or replacing a dead member).
    pub fn staged_newcomers(&self) -> Vec<NodeId> {
        self.staged
            .iter()
            .filter_map(|c| match c {
                Change::Join { member } | Change::Replace { with: member, .. } => {
                    Some(member.member.id)
                }
                Change::Leave { .. } => None,
            })
            .collect()
    }

    /// Ids of the current ring's members, in member order.
    pub fn member_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.iter().map(|m| m.member.id)
    }

    /// Ids of the current and next rings' members and of the nodes staged to join, sorted,
    /// distinct: the nodes to heartbeat (a staged newcomer is watched before the commit, so
    /// every node sees it up when writes start to need it).
    pub fn all_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .members
            .iter()
            .chain(self.transition.iter().flat_map(|t| t.next.iter()))
            .map(|m| m.member.id)
            .chain(self.staged_newcomers())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// A committed change while its data moves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The epoch of the commit: names this transition (stream progress is kept under it).
    pub id: u64,
    /// The changes committed.
    pub changes: Vec<Change>,
    /// The members after the change.
    pub next: Vec<MemberInfo>,
    /// Where the transition is.
    pub phase: Phase,
    /// Nodes still streaming the ranges they gain.
    pub pending: Vec<NodeId>,
}

/// The phases of a transition. Writes meet their level in both the current and the next ring
/// throughout; reads move to the next ring only once every gaining node holds its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Gaining nodes stream their new ranges; reads use the current ring.
    Streaming,
    /// Data is in place; reads use the next ring, writes still go to both, until every node
    /// has seen this phase. Then the next ring becomes the current one.
    ReadNew,
}

/// One staged topology change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A new node takes its tokens and the ranges they bring.
    Join { member: MemberInfo },
    /// A member hands its ranges to the next owners and leaves.
    Leave { node: NodeId },
    /// A dead member's tokens go to a new node, which streams the dead one's data from the
    /// other replicas.
    Replace { dead: NodeId, with: MemberInfo },
}

/// A node's own state, spread by gossip: how to reach it and what it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    /// Node id (from its configuration; recognised across address changes).
    pub id: NodeId,
    /// Where it listens now, `host:port`.
    pub addr: String,
    /// Its placement identity as configured (used when it joins).
    pub member: Member,
    /// Its process start time (ms since the epoch); a higher one replaces a lower one.
    pub generation: u64,
    /// Bumped by the node whenever its state changes within a generation.
    pub version: u64,
    /// The ring epoch it has adopted.
    pub ring_epoch: u64,
}

impl EndpointState {
    /// Whether `self` should replace `other` (same node).
    pub fn newer_than(&self, other: &EndpointState) -> bool {
        (self.generation, self.version) > (other.generation, other.version)
    }
}

/// What gossip exchanges: the ring and every endpoint the sender knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipState {
    /// The sender's ring state.
    pub ring: RingState,
    /// Endpoint states the sender knows, its own included.
    pub endpoints: Vec<EndpointState>,
}

/// Admin operations on membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipOp {
    /// Show the ring, the staged changes and the transition in progress.
    Show,
    /// Stage the join of the node listening at `addr` (started with this cluster's seeds).
    Join { addr: String },
    /// Stage the decommission of a member.
    Leave { node: NodeId },
    /// Stage the replacement of a dead member by the node listening at `addr`.
    Replace { dead: NodeId, addr: String },
    /// Drop every staged change.
    Clear,
    /// Commit the staged changes: start the transition.
    Commit,
}

/// How far a node is in streaming the ranges it gains.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamProgress {
    /// The transition streamed for.
    pub transition: u64,
    /// (range, source) pairs to stream.
    pub parts_total: u64,
    /// Pairs finished (or skipped because the source stayed down).
    pub parts_done: u64,
    /// Pairs skipped because the source stayed down.
    pub parts_skipped: u64,
    /// Records received.
    pub records: u64,
    /// Bytes of records received (keys and values).
    pub bytes: u64,
    /// Whether every part is done.
    pub done: bool,
}

/// What will move in a plan, per node that gains ranges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Movement {
    /// The node that gains ranges.
    pub node: NodeId,
    /// Token ranges it gains, with the current replicas it streams each from.
    pub ranges: Vec<(TokenRange, Vec<NodeId>)>,
    /// The share of the token space it gains (0..1).
    pub share: f64,
    /// Estimated records it receives from one source (from the answering node's record count).
    pub estimated_records: u64,
}

/// The answer to a [`MembershipOp`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MembershipView {
    /// The ring state after the operation.
    pub ring: RingState,
    /// Every endpoint the answering node knows, with whether its failure detector sees it up.
    pub endpoints: Vec<(EndpointState, bool)>,
    /// What the staged changes (or, during a transition, the committed ones) move.
    pub movements: Vec<Movement>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: NodeId) -> MemberInfo {
        MemberInfo {
            member: Member {
                id,
                datacenter: "dc1".into(),
                rack: "rack1".into(),
                tokens: vec![u64::from(id) * 1000],
            },
            addr: format!("127.0.0.1:{}", 7000 + id),
        }
    }

    #[test]
    fn staged_newcomers_are_watched_before_the_commit() {
        let state = RingState {
            cluster: "c".into(),
            epoch: 4,
            author: 1,
            strategy: Strategy::Simple { rf: 3 },
            members: vec![info(1), info(2), info(3)],
            staged: vec![
                Change::Join { member: info(4) },
                Change::Leave { node: 2 },
                Change::Replace {
                    dead: 3,
                    with: info(5),
                },
            ],
            transition: None,
        };
        assert_eq!(state.staged_newcomers(), vec![4, 5]);
        assert_eq!(state.all_ids(), vec![1, 2, 3, 4, 5]);
        // Staged newcomers are not members yet.
        assert!(state.member(4).is_none());
    }
}
