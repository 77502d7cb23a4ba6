//! Why `Ring::new` refuses a membership or strategy. Errors are plain data (comparable, cloneable)
//! so callers can match on them and report them to operators.

use std::fmt;

use crate::token::Token;
use crate::topology::NodeId;

/// A membership or strategy that cannot produce a valid ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The member list is empty.
    NoMembers,
    /// Two members share this id.
    DuplicateMember(NodeId),
    /// This token appears more than once (on one member or across members).
    DuplicateToken(Token),
    /// This member has no tokens.
    NoTokens(NodeId),
    /// The replication factor is larger than the number of nodes available to hold replicas.
    /// Cassandra would silently under-replicate; ringkv refuses.
    ReplicationExceedsNodes {
        /// The datacenter concerned (`None` for [`Strategy::Simple`](crate::Strategy::Simple),
        /// which counts every member).
        datacenter: Option<String>,
        /// The configured replication factor.
        rf: usize,
        /// The number of nodes available.
        nodes: usize,
    },
    /// A [`Strategy::PerDatacenter`](crate::Strategy::PerDatacenter) gives a positive replication
    /// factor to a datacenter with no members.
    UnknownDatacenter(String),
    /// The total replication factor is 0: keys would have no replicas.
    ZeroReplication,
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::NoMembers => write!(f, "the ring has no members"),
            RingError::DuplicateMember(id) => write!(f, "member id {id} appears more than once"),
            RingError::DuplicateToken(token) => write!(f, "token {token} appears more than once"),
            RingError::NoTokens(id) => write!(f, "member {id} has no tokens"),
            RingError::ReplicationExceedsNodes {
                datacenter: Some(dc),
                rf,
                nodes,
            } => {
                write!(
                    f,
                    "replication factor {rf} in datacenter {dc:?} exceeds its {nodes} node(s)"
                )
            }
            RingError::ReplicationExceedsNodes {
                datacenter: None,
                rf,
                nodes,
            } => {
                write!(
                    f,
                    "replication factor {rf} exceeds the {nodes} node(s) of the ring"
                )
            }
            RingError::UnknownDatacenter(dc) => {
                write!(
                    f,
                    "replication is configured for datacenter {dc:?}, which has no members"
                )
            }
            RingError::ZeroReplication => write!(f, "the replication factor is 0"),
        }
    }
}

impl std::error::Error for RingError {}
