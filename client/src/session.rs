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
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Keys a session remembers by default.
pub const DEFAULT_SESSION_KEYS: usize = 100_000;

/// The newest version of a key a session has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floor {
    /// The version.
    pub version: Version,
    /// It was a tombstone (the session deleted the key or read it deleted).
    pub deleted: bool,
}

/// The newest version seen of each of the most recently used keys.
#[derive(Debug, Clone)]
pub struct Session {
    /// Per key: its floor and the sequence number of its last use.
    entries: HashMap<Vec<u8>, (Floor, u64)>,
    /// Keys by last use; the first is forgotten first.
    by_use: BTreeMap<u64, Vec<u8>>,
    next_use: u64,
    capacity: usize,
}

/// A session as stored in a file.
#[derive(Serialize, Deserialize)]
struct SessionFile {
    /// (hex key, hlc, node, deleted), least recently used first.
    keys: Vec<(String, u64, u32, bool)>,
}

impl Session {
    /// A session remembering at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Session {
        Session {
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
            next_use: 0,
            capacity: capacity.max(1),
        }
    }

    /// The newest version of `key` this session has seen.
    pub fn floor(&self, key: &[u8]) -> Option<Floor> {
        self.entries.get(key).map(|(f, _)| *f)
    }

    /// Notes that the session saw (wrote or read) `version` of `key`, a tombstone if `deleted`.
    /// The key becomes the most recently used.
    pub fn observe(&mut self, key: &[u8], version: Version, deleted: bool) {
        let use_seq = self.next_use;
        self.next_use += 1;
        let seen = Floor { version, deleted };
        if let Some((floor, last_use)) = self.entries.get_mut(key) {
            if version > floor.version {
                *floor = seen;
            }
            let key = self.by_use.remove(last_use).unwrap_or_else(|| key.to_vec());
            *last_use = use_seq;
            self.by_use.insert(use_seq, key);
            return;
        }
        if self.entries.len() >= self.capacity {
            if let Some((_, oldest)) = self.by_use.pop_first() {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key.to_vec(), (seen, use_seq));
        self.by_use.insert(use_seq, key.to_vec());
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reads a session saved by [`Session::save`]; a missing file is a new session. A file that
    /// cannot be parsed is an error (the message names the file).
    pub fn load(path: &Path, capacity: usize) -> Result<Session, String> {
        let mut session = Session::new(capacity);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(session),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let file: SessionFile = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a session file: {e}", path.display()))?;
        for (hex, hlc, node, deleted) in file.keys {
            let key =
                from_hex(&hex).ok_or_else(|| format!("{}: bad key {hex:?}", path.display()))?;
            session.observe(&key, Version { hlc, node }, deleted);
        }
        Ok(session)
    }

    /// Writes the session to `path`, merged with what the file holds now (another command may
    /// have saved meanwhile: floors merge by taking the newer version of each key). The merge
    /// runs under an exclusive lock on `<path>.lock`, and the file is replaced through a rename,
    /// so a reader never sees half a file and concurrent commands lose nothing.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let lock_path = path.with_extension("json.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        lock.lock()?;
        // Theirs first, then ours: our keys end as the most recently used.
        let mut merged =
            Session::load(path, self.capacity).unwrap_or_else(|_| Session::new(self.capacity));
        for (_, key) in self.by_use.iter() {
            if let Some((floor, _)) = self.entries.get(key) {
                merged.observe(key, floor.version, floor.deleted);
            }
        }
        let keys = merged
            .by_use
            .values()
            .filter_map(|k| {
                merged
                    .entries
                    .get(k)
                    .map(|(f, _)| (to_hex(k), f.version.hlc, f.version.node, f.deleted))
            })
            .collect();
        let text = serde_json::to_string(&SessionFile { keys })?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        let renamed = std::fs::rename(&tmp, path);
        drop(lock);
        renamed
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

    fn version(s: &Session, key: &[u8]) -> Option<Version> {
        s.floor(key).map(|f| f.version)
    }

    #[test]
    fn keeps_the_newest_version_per_key() {
        let mut s = Session::new(10);
        s.observe(b"k", v(5), false);
        s.observe(b"k", v(3), true);
        let floor = |version, deleted| Some(Floor { version, deleted });
        assert_eq!(s.floor(b"k"), floor(v(5), false));
        s.observe(b"k", v(9), true);
        assert_eq!(s.floor(b"k"), floor(v(9), true));
        assert_eq!(s.floor(b"other"), None);
    }

    #[test]
    fn forgets_the_least_recently_used_keys_beyond_its_capacity() {
        let mut s = Session::new(2);
        s.observe(b"a", v(1), false);
        s.observe(b"b", v(2), false);
        // Using "a" again makes "b" the least recently used.
        s.observe(b"a", v(1), false);
        s.observe(b"c", v(3), false);
        assert_eq!(s.len(), 2);
        assert_eq!(version(&s, b"b"), None);
        assert_eq!(version(&s, b"a"), Some(v(1)));
        assert_eq!(version(&s, b"c"), Some(v(3)));
    }

    #[test]
    fn survives_a_round_trip_through_a_file_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.json");
        assert!(Session::load(&path, 10).unwrap().is_empty());
        let mut s = Session::new(10);
        s.observe(b"\x00key\xff", v(7), true);
        s.save(&path).unwrap();
        let back = Session::load(&path, 10).unwrap();
        let expected = Floor {
            version: v(7),
            deleted: true,
        };
        assert_eq!(back.floor(b"\x00key\xff"), Some(expected));
        std::fs::write(&path, "{not json").unwrap();
        assert!(Session::load(&path, 10)
            .unwrap_err()
            .contains("not a session file"));
    }

    #[test]
    fn saving_merges_with_what_another_command_saved_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.json");
        // Two commands start from the same (empty) file...
        let mut first = Session::load(&path, 10).unwrap();
        let mut second = Session::load(&path, 10).unwrap();
        first.observe(b"k", v(5), false);
        second.observe(b"k2", v(1), false);
        second.observe(b"k", v(2), false);
        // ... and save in turn: the later save keeps the earlier one's newer floor.
        first.save(&path).unwrap();
        second.save(&path).unwrap();
        let back = Session::load(&path, 10).unwrap();
        assert_eq!(version(&back, b"k"), Some(v(5)));
        assert_eq!(version(&back, b"k2"), Some(v(1)));
    }
}
