//! The messages nodes and clients exchange. One request enum, one response enum; every frame
//! carries a request id (so many requests share one stream) and the time left before its deadline
//! (so replicas drop work nobody waits for).

use crate::error::ErrorReply;
use crate::membership::{GossipState, MembershipOp, MembershipView, StreamProgress};
use crate::record::Record;
use crate::version::Version;
use crate::Consistency;
use ring::{Member, NodeId, Strategy, TokenRange};
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
        opts: WriteOpts,
    },
    /// Client: delete a key (writes a tombstone) at a consistency level.
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        consistency: Consistency,
        opts: WriteOpts,
    },
    /// Client: read a key at a consistency level.
    Get {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        consistency: Consistency,
        opts: ReadOpts,
    },
    /// Client or node: the cluster's members, addresses and replication strategy.
    Topology,
    /// Client or node: this node's view of the cluster (who is up) and its counters.
    Status,
    /// Node: failure-detector heartbeat, carrying the sender's clock and generation (its start
    /// time in ms: a new generation means the peer restarted).
    Ping {
        from: NodeId,
        hlc: u64,
        generation: u64,
        /// The sender's ring state `(epoch, author)`: a receiver that differs exchanges gossip.
        ring: (u64, NodeId),
    },
    /// Node: gossip push-pull. The receiver merges the sender's state and answers with its own.
    Gossip(Box<GossipState>),
    /// Node (streaming): up to `limit` records of a token range, in ring order, strictly after
    /// `after` (a `(token, key)` position from the previous page).
    StreamRange {
        range: TokenRange,
        after: Option<(u64, Vec<u8>)>,
        limit: u32,
    },
    /// Client (admin): stage, show or commit topology changes.
    Membership(MembershipOp),
    /// Node: store this record if it is newer than the local one, and remember the client write
    /// `op` with its version (the answer names another version the op was remembered with).
    ReplicaWrite {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        record: Record,
        op: Option<OpId>,
    },
    /// Node: the version of the local record of a key (first phase of a LINEARIZABLE write).
    ReplicaVersion {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Node: the version this node stored (or coordinated) the client write `op` with, if it
    /// remembers it (a retried write reuses it instead of creating a second version).
    /// `fingerprint` is the write's [`op_fingerprint`]: an op remembered with another one is
    /// reported as a conflict, not reused.
    OpLookup { op: OpId, fingerprint: u64 },
    /// Node: return the local record of a key, tombstone included.
    ReplicaRead {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Node: store several records (hint replay, anti-entropy pushes), each if newer.
    ReplicaWriteBatch { writes: Vec<KeyRecord> },
    /// Node (anti-entropy): hashes of tree nodes of a token range. `level` 0 is the leaves; for
    /// each index in `nodes` (at `level + 1`), the hashes of its children at `level` are returned,
    /// in order. `nodes` empty asks for the root.
    TreeHashes {
        range: TokenRange,
        level: u8,
        nodes: Vec<u32>,
    },
    /// Node (anti-entropy): the sender's key digests for some leaves of a range. The receiver
    /// answers with its records that are newer or missing at the sender, and the digests of keys
    /// where the sender is newer or the receiver lacks them.
    SyncLeaves {
        range: TokenRange,
        leaves: Vec<LeafDigest>,
    },
    /// Client (admin): this node's own record of a key, tombstone included, without coordination.
    Inspect {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Client (admin): run an anti-entropy round on this node now, with every peer. With `wait`
    /// the answer comes when the round is done; without, at once (the round runs on).
    Repair { wait: bool },
    /// Node: several client writes a coordinator had queued for this replica at once, each
    /// handled as a [`Request::ReplicaWrite`]; answered by [`Response::ReplicaWriteAcks`], one
    /// outcome per write, in order.
    ReplicaWrites { writes: Vec<ReplicaWriteItem> },
}

/// One write of a [`Request::ReplicaWrites`] (the fields of a [`Request::ReplicaWrite`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaWriteItem {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The record to store if newer.
    pub record: Record,
    /// The client write op to remember with the record's version.
    pub op: Option<OpId>,
    /// The write's [`op_fingerprint`] (computed once by the coordinator; 0 without `op`).
    pub fingerprint: u64,
}

/// How one write of a [`Request::ReplicaWrites`] ended on the replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReplicaWriteOutcome {
    /// As [`Response::ReplicaAck`].
    Acked {
        applied: bool,
        duplicate: Option<Version>,
    },
    /// As a [`Response::Error`] to a [`Request::ReplicaWrite`].
    Failed(ErrorReply),
}

impl Request {
    /// Whether only nodes (certificates with the node role) may send this request.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Request::Ping { .. }
                | Request::Gossip(_)
                | Request::StreamRange { .. }
                | Request::ReplicaWrite { .. }
                | Request::ReplicaVersion { .. }
                | Request::OpLookup { .. }
                | Request::ReplicaRead { .. }
                | Request::ReplicaWriteBatch { .. }
                | Request::TreeHashes { .. }
                | Request::SyncLeaves { .. }
                | Request::ReplicaWrites { .. }
        )
    }
}

/// Everything a node can answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// A put or delete met its level.
    Written {
        version: Version,
        acks: u32,
        receipt: Option<Box<Receipt>>,
    },
    /// A read met its level: the newest value, or `None` when absent or deleted. `version` is
    /// the newest record's, a tombstone's included (`None` only when no replica had the key).
    Value {
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
        version: Option<Version>,
        replies: u32,
        receipt: Option<Box<Receipt>>,
    },
    /// The cluster's layout (boxed: much larger than the other answers).
    Topology(Box<Topology>),
    /// A node's view of the cluster (boxed: much larger than the other answers).
    Status(Box<NodeStatus>),
    /// Heartbeat answer, with the responder's clock.
    Pong {
        from: NodeId,
        hlc: u64,
        ring: (u64, NodeId),
    },
    /// The answering node's gossip state (after merging the sender's).
    Gossip(Box<GossipState>),
    /// A page of a streamed range; `done` when the range has nothing after it.
    StreamPage { records: Vec<KeyRecord>, done: bool },
    /// The membership after an admin operation (boxed: large).
    Membership(Box<MembershipView>),
    /// A replica stored (or, being older, ignored) a record. `duplicate`: the write's op id was
    /// already remembered here with this other version (the record was still applied by
    /// version).
    ReplicaAck {
        applied: bool,
        duplicate: Option<Version>,
    },
    /// A replica's version of a key (`None`: no record).
    ReplicaVersion { version: Option<Version> },
    /// The version a write op id was stored with, if remembered; `conflict`: the op id is
    /// remembered for a different write (another key or value).
    OpVersion {
        version: Option<Version>,
        conflict: bool,
    },
    /// A replica's local record of a key.
    ReplicaRecord { record: Option<Record> },
    /// Per record of a batch, whether it was newer and stored.
    ReplicaAcks { applied: Vec<bool> },
    /// Tree node hashes, in the order asked.
    Hashes { hashes: Vec<Digest> },
    /// Answer to `SyncLeaves`: records the sender should store, and the key digests it should
    /// push. `complete` is false when a size limit cut the records short (ask again).
    LeafDiff {
        records: Vec<KeyRecord>,
        wanted: Vec<Digest>,
        complete: bool,
    },
    /// What an anti-entropy round did.
    RepairReport(RepairReport),
    /// The request failed.
    Error(ErrorReply),
    /// Answer to [`Request::ReplicaWrites`]: one outcome per write, in order.
    ReplicaWriteAcks { outcomes: Vec<ReplicaWriteOutcome> },
}

/// A client-chosen id of one logical write, the same on every retry of it.
pub type OpId = u128;

/// What a write op is about, in 64 bits: blake3 of the key and the value (or the tombstone).
/// Nodes remember it with the op id, so an op id reused for a different write is refused
/// instead of giving that write the first one's version.
pub fn op_fingerprint(key: &[u8], value: Option<&[u8]>) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&(key.len() as u64).to_be_bytes());
    h.update(key);
    match value {
        Some(v) => h.update(&[1]).update(v),
        None => h.update(&[0]),
    };
    let bytes = h.finalize();
    u64::from_be_bytes(bytes.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// Options of a put or delete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOpts {
    /// The write's id: nodes remember it with the version it was stored with, and a retry with
    /// the same id (and `retry`) reuses that version instead of creating a second one.
    pub op: Option<OpId>,
    /// This is a retry of `op` after an ambiguous failure: look the op up before versioning.
    pub retry: bool,
    /// The newest version of the key the client's session has seen: the write is versioned
    /// above it, so the session reads its own write even across coordinators with slow clocks.
    pub after: Option<Version>,
    /// Answer with a [`Receipt`].
    pub receipt: bool,
}

/// Options of a get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOpts {
    /// The newest version of the key the client's session has seen: an older answer is never
    /// returned (read-your-writes, monotonic reads); further replicas are asked, else `Stale`.
    pub min_version: Option<Version>,
    /// `min_version` is a tombstone's (the session saw the key deleted): once tombstones that
    /// old are purged, "no record" meets it.
    pub min_is_tombstone: bool,
    /// Answer with a [`Receipt`].
    pub receipt: bool,
}

/// What the coordinator knows of where a request went, at the moment it answered. Replica
/// requests still in flight then are in none of the lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The version written, or the newest version read (`None`: no replica had the key).
    pub version: Option<Version>,
    /// Writes: replicas that stored the record (or already held it or something newer).
    /// Reads: replicas whose answer was counted.
    pub acked: Vec<NodeId>,
    /// Writes: replicas that failed or were down and were sent a hint instead.
    pub hinted: Vec<NodeId>,
    /// Replicas that failed with no hint stored (writes), or failed to answer (reads).
    pub failed: Vec<NodeId>,
    /// Reads: replicas that answered with an older version (or none).
    pub stale: Vec<NodeId>,
    /// Reads: stale replicas the coordinator wrote the newest record to before answering.
    pub repaired: Vec<NodeId>,
    /// LINEARIZABLE writes: replicas asked for the key's version in the first phase.
    pub version_from: Vec<NodeId>,
    /// The version came from an earlier attempt of the same op id (a retry), not a new stamp.
    pub reused_op: bool,
}

/// A 16-byte hash (tree nodes, key digests).
pub type Digest = [u8; 16];

/// A key and one record of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Its record.
    pub record: Record,
}

impl KeyRecord {
    /// Approximate encoded size: key, value and a fixed allowance for lengths and version.
    pub fn approx_size(&self) -> usize {
        self.key.len() + self.record.value.as_ref().map_or(0, Vec::len) + 32
    }
}

/// Splits records into batches of at most `max_count` records and about `max_bytes` bytes each
/// (a record larger than `max_bytes` forms a batch of its own), preserving order.
pub fn batches(records: Vec<KeyRecord>, max_count: usize, max_bytes: usize) -> Vec<Vec<KeyRecord>> {
    let mut out: Vec<Vec<KeyRecord>> = Vec::new();
    let mut bytes = 0;
    for r in records {
        let size = r.approx_size();
        match out.last_mut() {
            Some(b) if b.len() < max_count.max(1) && bytes + size <= max_bytes => {
                bytes += size;
                b.push(r);
            }
            _ => {
                bytes = size;
                out.push(vec![r]);
            }
        }
    }
    out
}

/// The keys of one tree leaf, as digests with versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafDigest {
    /// Leaf index within the range's tree.
    pub leaf: u32,
    /// `(blake3 digest of the key, version)` of every key in the leaf.
    pub entries: Vec<(Digest, Version)>,
}

/// Figures of one anti-entropy round.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// Range and peer pairs compared.
    pub pairs_compared: u64,
    /// Pairs whose trees differed.
    pub pairs_differing: u64,
    /// Leaves whose keys were exchanged.
    pub leaves_exchanged: u64,
    /// Records received and stored here.
    pub keys_pulled: u64,
    /// Records sent to peers and stored there.
    pub keys_pushed: u64,
    /// Bytes of anti-entropy messages sent and received (frames, both directions).
    pub bytes_exchanged: u64,
    /// Wall time of the round in milliseconds.
    pub millis: u64,
    /// Pairs that failed (peer down, timeout).
    pub failures: u64,
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
    /// Members the answering node's failure detector saw up when it answered (itself
    /// included): clients try these first as coordinators.
    pub live: Vec<NodeId>,
    /// The answering node's ring epoch: a client replaces its topology only by one at least as
    /// recent.
    pub epoch: u64,
}

/// What one node knows about one peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer.
    pub id: NodeId,
    /// Whether the failure detector considers it up.
    pub up: bool,
    /// Milliseconds since it last answered a heartbeat (`None`: never).
    pub last_seen_ms: Option<u64>,
    /// The phi-accrual suspicion level (higher: more likely down; `None`: never heard).
    pub phi: Option<f64>,
}

/// A node's status report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Hints stored here, per target node.
    pub hints_pending: Vec<(NodeId, u64)>,
    /// Hints replayed and acknowledged since start.
    pub hints_replayed: u64,
    /// Hints dropped since start (older than the window, or over the per-target bound).
    pub hints_dropped: u64,
    /// Stale replicas repaired by reads since start.
    pub read_repairs: u64,
    /// The last completed anti-entropy round, if any: seconds ago and its report.
    pub last_repair: Option<(u64, RepairReport)>,
    /// Keys repaired by anti-entropy since start (pulled + pushed).
    pub keys_repaired: u64,
    /// The ring epoch this node runs.
    pub ring_epoch: u64,
    /// Whether this node owns data in the current or next ring.
    pub member: bool,
    /// Its streaming of gained ranges, during a transition that gives it some.
    pub streaming: Option<StreamProgress>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Version;

    fn rec(value_len: usize) -> KeyRecord {
        KeyRecord {
            key: b"k".to_vec(),
            record: Record::value(Version::default(), vec![0; value_len]),
        }
    }

    #[test]
    fn batches_respect_count_and_bytes_and_keep_big_records_alone() {
        let b = batches((0..10).map(|_| rec(10)).collect(), 4, 1 << 20);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        let b = batches(vec![rec(100), rec(100), rec(5000), rec(100)], 100, 300);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1, 1]);
        assert!(batches(vec![], 10, 10).is_empty());
    }
}
