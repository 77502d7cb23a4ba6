//! Errors the client library returns, each with a stable CLI exit status.

use proto::{ErrorCode, ErrorReply};

/// What can go wrong with a request, as a user sees it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The key does not exist (or was deleted).
    #[error("not found")]
    NotFound,
    /// Too few replicas were known up; nothing was written.
    #[error("unavailable: {message}")]
    Unavailable {
        message: String,
        alive: u32,
        required: u32,
    },
    /// Too few replicas answered in time. A write may or may not have been applied.
    #[error("timeout: {message}")]
    Timeout {
        message: String,
        acks: u32,
        required: u32,
        /// Which replicas acked, were hinted or failed, when receipts were asked for.
        receipt: Option<Box<proto::message::Receipt>>,
    },
    /// A read found no replica with the version this session already saw (read-your-writes,
    /// monotonic reads): nothing older was returned.
    #[error("stale: {0}")]
    Stale(String),
    /// The coordinator would have had to stamp a version too far ahead of its clock (the key's
    /// newest version, or the session's, is beyond its `max-clock-ahead-ms`); nothing was written.
    #[error("clock skew: {0}")]
    ClockSkew(String),
    /// The request was refused as invalid (too large, wrong level for the operation).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The certificate does not allow this, or the TLS handshake was refused.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The node refused the request because it is at its in-flight limit.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// No node could be reached.
    #[error("cannot reach the cluster: {0}")]
    Connect(String),
    /// Local configuration (cluster directory, certificates) is missing or broken.
    #[error("configuration error: {0}")]
    Config(String),
    /// Any other failure reported by a node.
    #[error("{0}")]
    Server(String),
}

impl ClientError {
    /// The documented exit status for this error (see README: "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::NotFound => 3,
            ClientError::Unavailable { .. } => 4,
            ClientError::Timeout { .. } => 5,
            ClientError::InvalidRequest(_) => 6,
            ClientError::Unauthorized(_) => 7,
            ClientError::Overloaded(_) => 8,
            ClientError::Config(_) => 9,
            ClientError::Connect(_) => 10,
            ClientError::Stale(_) => 11,
            ClientError::ClockSkew(_) => 12,
            ClientError::Server(_) => 1,
        }
    }

    /// The stable name of the error kind (used in `--json` output).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::NotFound => "NotFound",
            ClientError::Unavailable { .. } => "Unavailable",
            ClientError::Timeout { .. } => "Timeout",
            ClientError::InvalidRequest(_) => "InvalidRequest",
            ClientError::Unauthorized(_) => "Unauthorized",
            ClientError::Overloaded(_) => "Overloaded",
            ClientError::Config(_) => "Config",
            ClientError::Connect(_) => "Connect",
            ClientError::Stale(_) => "Stale",
            ClientError::ClockSkew(_) => "ClockSkew",
            ClientError::Server(_) => "Server",
        }
    }
}

impl From<ErrorReply> for ClientError {
    fn from(e: ErrorReply) -> Self {
        match e.code {
            ErrorCode::Unavailable => ClientError::Unavailable {
                message: e.message,
                alive: e.acks,
                required: e.required,
            },
            ErrorCode::Timeout => ClientError::Timeout {
                message: e.message,
                acks: e.acks,
                required: e.required,
                receipt: e.receipt,
            },
            ErrorCode::Stale => ClientError::Stale(e.message),
            ErrorCode::InvalidRequest => ClientError::InvalidRequest(e.message),
            ErrorCode::Unauthorized => ClientError::Unauthorized(e.message),
            ErrorCode::Overloaded => ClientError::Overloaded(e.message),
            ErrorCode::ClockSkew => ClientError::ClockSkew(e.message),
            ErrorCode::Malformed | ErrorCode::ShuttingDown | ErrorCode::Internal => {
                ClientError::Server(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_error_codes_map_to_distinct_exit_statuses() {
        let cases = [
            (ErrorCode::Unavailable, 4),
            (ErrorCode::Timeout, 5),
            (ErrorCode::InvalidRequest, 6),
            (ErrorCode::Unauthorized, 7),
            (ErrorCode::Overloaded, 8),
            (ErrorCode::Stale, 11),
            (ErrorCode::ClockSkew, 12),
            (ErrorCode::Internal, 1),
        ];
        for (code, exit) in cases {
            let e = ClientError::from(ErrorReply::new(code, "m"));
            assert_eq!(e.exit_code(), exit, "{code:?} -> {e:?}");
        }
    }
}
