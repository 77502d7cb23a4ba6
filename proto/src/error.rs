//! Errors a request can end with, as they travel on the wire: a stable numeric code, a message,
//! and for replication failures how many replicas acknowledged out of how many were required.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Stable error codes. The numbers are part of the wire format and of the CLI's documented
/// behaviour: never renumber, only add.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u16)]
pub enum ErrorCode {
    /// Too few replicas known to be up before sending: nothing was written.
    Unavailable = 1,
    /// Sent, but too few replicas answered in time: a write may or may not have been applied.
    Timeout = 2,
    /// Bad request: key or value too large, a level that does not apply to the operation.
    InvalidRequest = 3,
    /// The caller's certificate does not allow this request.
    Unauthorized = 4,
    /// The node is at its in-flight limit; retry later.
    Overloaded = 5,
    /// A message could not be decoded, or carried an unknown wire version.
    Malformed = 6,
    /// A timestamp in the request was too far ahead of the node's clock.
    ClockSkew = 7,
    /// The node is shutting down.
    ShuttingDown = 8,
    /// A failure inside the node (storage error, bug). The message says more.
    Internal = 9,
    /// A read found no replica with the version the client's session has already seen (its
    /// read-your-writes / monotonic-reads floor): nothing older was returned.
    Stale = 10,
}

impl ErrorCode {
    /// The code's stable name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Unavailable => "Unavailable",
            ErrorCode::Timeout => "Timeout",
            ErrorCode::InvalidRequest => "InvalidRequest",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Overloaded => "Overloaded",
            ErrorCode::Malformed => "Malformed",
            ErrorCode::ClockSkew => "ClockSkew",
            ErrorCode::ShuttingDown => "ShuttingDown",
            ErrorCode::Internal => "Internal",
            ErrorCode::Stale => "Stale",
        }
    }
}

/// An error reply from a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What kind of failure.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
    /// Replicas that acknowledged (writes) or answered (reads) before the failure.
    pub acks: u32,
    /// Replicas the consistency level required.
    pub required: u32,
    /// What the coordinator knew when it gave up (which replicas acked, were hinted, failed),
    /// when the request asked for a receipt.
    pub receipt: Option<Box<crate::message::Receipt>>,
}

impl ErrorReply {
    /// An error with no replica counts.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply {
            code,
            message: message.into(),
            acks: 0,
            required: 0,
            receipt: None,
        }
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for ErrorReply {}
