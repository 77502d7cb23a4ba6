//! Records: a last-write-wins value or tombstone with its version.

use crate::version::Version;
use serde::{Deserialize, Serialize};

/// One stored version of a key: a value, or a tombstone (a delete) when `value` is `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Version deciding last-write-wins.
    pub version: Version,
    /// The value, or `None` for a tombstone.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

impl Record {
    /// A record holding a value.
    pub fn value(version: Version, value: Vec<u8>) -> Self {
        Record {
            version,
            value: Some(value),
        }
    }

    /// A tombstone: the key was deleted at `version`.
    pub fn tombstone(version: Version) -> Self {
        Record {
            version,
            value: None,
        }
    }

    /// Whether this record is a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Whether `self` should replace `existing` under last-write-wins.
    pub fn supersedes(&self, existing: Option<&Record>) -> bool {
        existing.is_none_or(|e| self.version > e.version)
    }
}
