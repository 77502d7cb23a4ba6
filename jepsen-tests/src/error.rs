//! Errors of the harness itself (as opposed to what the checkers find in the system under test),
//! each mapped to the CLI's exit status: 2 for a usage error, 3 for a setup failure.

use crate::netns::NetError;
use client::{ClientError, ClusterError};
use ring::NodeId;
use std::path::PathBuf;

/// CLI exit status when every checker passed.
pub const EXIT_OK: i32 = 0;
/// CLI exit status when a checker failed.
pub const EXIT_CHECK_FAILED: i32 = 1;
/// CLI exit status for a usage error.
pub const EXIT_USAGE: i32 = 2;
/// CLI exit status for a setup failure (no root for a network nemesis, a node that never
/// became ready, a missing binary).
pub const EXIT_SETUP: i32 = 3;

/// What stopped the harness from running or finishing a scenario.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The scenario asks for something impossible (for example a majorities ring of 3 nodes).
    #[error("usage: {0}")]
    Usage(String),
    /// The cluster network could not be made.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The cluster directory or node binary was unusable.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The client could not connect or configure itself.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A node did not start or become ready.
    #[error("node {node}: {reason}\n--- last lines of its log ---\n{log_tail}")]
    Node {
        /// The node.
        node: NodeId,
        /// What went wrong.
        reason: String,
        /// The end of its log.
        log_tail: String,
    },
    /// Another setup problem (a missing tool, for example).
    #[error("setup: {0}")]
    Setup(String),
}

impl HarnessError {
    /// The CLI exit status: [`EXIT_USAGE`] for usage errors, [`EXIT_SETUP`] for the rest.
    pub fn exit_code(&self) -> i32 {
        match self {
            HarnessError::Usage(_) => EXIT_USAGE,
            _ => EXIT_SETUP,
        }
    }

    /// A closure mapping an I/O error on `path` to [`HarnessError::Io`].
    pub fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> HarnessError + '_ {
        move |source| HarnessError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
