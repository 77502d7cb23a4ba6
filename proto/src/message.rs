//! The messages nodes and clients exchange. One request enum, one response enum; every frame
//! carries a request id (so many requests share one stream) and the time left before its deadline
//! (so replicas drop work nobody waits for).

use crate::error::ErrorReply;
use crate::record::Record;
use crate::version::Version;
use crate::Consistency;
use ring::{Member, NodeId, Strategy};
use serde::{Deserialize, Serialize};

/// A request with its id and deadline budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Chosen by the sender, unique among its requests in flight on the connection.
    pub id: u64,
    /// Milliseconds the sender will wait for the answer; the receiver's deadline is now + this.
    pub timeout_ms: u32,
    /// The request.
    pub body: Request,
}

/// A response to the request with the same id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseFrame {
    /// The id of the request answered.
    pub id: u64,
    /// The answer.
    pub body: Response,
}

/// Everything a node can be asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Client: write a value at a consistency level (this node coordinates).
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        consistency: Consistency,
    },
    /// Client: delete a key (writes a tombstone) at a consistency level.
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        consistency: Consistency,
    },
    /// Client: read a key at a consistency level.
    Get {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        consistency: Consistency,
    },
    /// Client or node: the cluster's members, addresses and replication strategy.
    Topology,
    /// Client or node: this node's view of the cluster (who is up) and its counters.
    Status,
    /// Node: failure-detector heartbeat, carrying the sender's clock.
    Ping { from: NodeId, hlc: u64 },
    /// Node: store this record if it is newer than the local one.
    ReplicaWrite {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        record: Record,
    },
    /// Node: return the local record of a key, tombstone included.
    ReplicaRead {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

impl Request {
    /// Whether only nodes (certificates with the node role) may send this request.
    pub fn is_internal(&self) -> bool {
        matches!(self, Request::Ping { .. } | Request::ReplicaWrite { .. } | Request::ReplicaRead { .. })
    }
}

/// Everything a node can answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// A put or delete met its level.
    Written { version: Version, acks: u32 },
    /// A read met its level: the newest value, or `None` when absent or deleted.
    Value {
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
        version: Option<Version>,
        replies: u32,
    },
    /// The cluster's layout.
    Topology(Topology),
    /// A node's view of the cluster.
    Status(NodeStatus),
    /// Heartbeat answer, with the responder's clock.
    Pong { from: NodeId, hlc: u64 },
    /// A replica stored (or, being older, ignored) a record.
    ReplicaAck { applied: bool },
    /// A replica's local record of a key.
    ReplicaRecord { record: Option<Record> },
    /// The request failed.
    Error(ErrorReply),
}

/// A member with the address clients and peers reach it at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Placement identity: id, datacenter, rack, tokens.
    pub member: Member,
    /// QUIC address, `host:port`.
    pub addr: String,
}

/// The cluster's layout, enough for a client to route requests to a replica of each key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Cluster name from the configuration.
    pub cluster: String,
    /// Every member.
    pub members: Vec<MemberInfo>,
    /// How replicas are placed.
    pub strategy: Strategy,
}

/// What one node knows about one peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer.
    pub id: NodeId,
    /// Whether the failure detector considers it up.
    pub up: bool,
    /// Milliseconds since it last answered a heartbeat (`None`: never).
    pub last_seen_ms: Option<u64>,
}

/// A node's status report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The reporting node.
    pub id: NodeId,
    /// Its datacenter.
    pub datacenter: String,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// Its view of every other member.
    pub peers: Vec<PeerStatus>,
    /// Client requests it coordinated.
    pub coordinated: u64,
    /// Approximate number of records it stores.
    pub records: u64,
}
