//! The inputs of placement: who the members are (identity, datacenter, rack, tokens) and how
//! replicas are chosen among them. Both are plain serializable data; `Ring::new` validates them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::token::Token;

/// Identity of a cluster member.
pub type NodeId = u32;

/// One cluster member as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Unique member id.
    pub id: NodeId,
    /// Datacenter name; [`Strategy::PerDatacenter`] keys its replication factors by it.
    pub datacenter: String,
    /// Rack name within the datacenter; racks with the same name in different datacenters are
    /// different racks.
    pub rack: String,
    /// Virtual-node tokens; at least one, none shared with any other member. Use
    /// [`tokens_for`](crate::tokens_for) when none are configured.
    pub tokens: Vec<Token>,
}

/// How a key's replicas are chosen, walking the ring clockwise from the key's token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// RF distinct nodes walking clockwise from the key's token, ignoring datacenters and racks.
    Simple {
        /// Number of replicas of every key.
        rf: usize,
    },
    /// Cassandra NetworkTopologyStrategy: per datacenter its own RF; within a DC, walk clockwise
    /// and prefer nodes on racks not yet used in that DC; once every rack of the DC is used, take
    /// the skipped nodes in ring order.
    PerDatacenter {
        /// Replication factor per datacenter name. Datacenters absent from the map, or mapped to
        /// 0, hold no replicas.
        rf: BTreeMap<String, usize>,
    },
}
