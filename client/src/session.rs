//! Session guarantees: what one client session has written and read, per key, so that it reads
//! its own writes and never reads backwards (monotonic reads), at any consistency level.
//!
//! The session remembers the newest version it has seen of each key (bounded: the oldest keys are
//! forgotten first, and a forgotten key loses its guarantee, never correctness of what is
//! returned). Every read carries that version as a floor: the coordinator answers only with a
//! version at least as new, asking further replicas if the first ones are behind, and otherwise
//! fails with `Stale`. Every write carries it too, and is versioned above it, so a write through
//! a coordinator whose clock is behind still supersedes what the session saw.
//!
//! [`Session::save`] and [`Session::load`] keep a session in a file, so successive `ringkv`
//! commands form one session.

use proto::Version;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::path::Path;

/// Keys a session remembers by default.
pub const DEFAULT_SESSION_KEYS: usize = 100_000;

/// The newest version seen of each of the most recently used keys.
#[derive(Debug, Clone)]
pub struct Session {
    versions: HashMap<Vec<u8>, Version>,
    /// Keys in the order they were first remembered; the front is forgotten first.
    order: VecDeque<Vec<u8>>,
    capacity: usize,
}

/// A session as stored in a file.
#[derive(Serialize, Deserialize)]
struct SessionFile {
    /// (hex key, hlc, node), oldest first.
    keys: Vec<(String, u64, u32)>,
}

impl Session {
    /// A session remembering at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Session {
        Session {
            versions: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The newest version of `key` this session has seen.
    pub fn floor(&self, key: &[u8]) -> Option<Version> {
        self.versions.get(key).copied()
    }

    /// Notes that the session saw (wrote or read) `version` of `key`.
    pub fn observe(&mut self, key: &[u8], version: Version) {
        if let Some(v) = self.versions.get_mut(key) {
            *v = (*v).max(version);
            return;
        }
        if self.versions.len() >= self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.versions.remove(&oldest);
            }
        }
        self.versions.insert(key.to_vec(), version);
        self.order.push_back(key.to_vec());
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// Reads a session saved by [`Session::save`]; a missing file is a new session. A file that
    /// cannot be parsed is an error (the caller says which file).
    pub fn load(path: &Path, capacity: usize) -> Result<Session, String> {
        let mut session = Session::new(capacity);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(session),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let file: SessionFile = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a session file: {e}", path.display()))?;
        for (hex, hlc, node) in file.keys {
            let key =
                from_hex(&hex).ok_or_else(|| format!("{}: bad key {hex:?}", path.display()))?;
            session.observe(&key, Version { hlc, node });
        }
        Ok(session)
    }

    /// Writes the session to `path` (through a temporary file and a rename, so a reader never
    /// sees half a file).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let keys = self
            .order
            .iter()
            .filter_map(|k| self.versions.get(k).map(|v| (to_hex(k), v.hlc, v.node)))
            .collect();
        let text = serde_json::to_string(&SessionFile { keys })?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64) -> Version {
        Version { hlc, node: 1 }
    }

    #[test]
    fn keeps_the_newest_version_per_key() {
        let mut s = Session::new(10);
        s.observe(b"k", v(5));
        s.observe(b"k", v(3));
        assert_eq!(s.floor(b"k"), Some(v(5)));
        s.observe(b"k", v(9));
        assert_eq!(s.floor(b"k"), Some(v(9)));
        assert_eq!(s.floor(b"other"), None);
    }

    #[test]
    fn forgets_the_oldest_keys_beyond_its_capacity() {
        let mut s = Session::new(2);
        s.observe(b"a", v(1));
        s.observe(b"b", v(2));
        s.observe(b"c", v(3));
        assert_eq!(s.len(), 2);
        assert_eq!(s.floor(b"a"), None);
        assert_eq!(s.floor(b"c"), Some(v(3)));
    }

    #[test]
    fn survives_a_round_trip_through_a_file_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.json");
        assert!(Session::load(&path, 10).unwrap().is_empty());
        let mut s = Session::new(10);
        s.observe(b"\x00key\xff", v(7));
        s.save(&path).unwrap();
        let back = Session::load(&path, 10).unwrap();
        assert_eq!(back.floor(b"\x00key\xff"), Some(v(7)));
        std::fs::write(&path, "{not json").unwrap();
        assert!(Session::load(&path, 10)
            .unwrap_err()
            .contains("not a session file"));
    }
}
