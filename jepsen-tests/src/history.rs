//! The history of a run: every client operation with its invoke and completion times, process,
//! key, value and outcome, recorded concurrently by the client tasks and written as JSON lines.
//! Outcomes follow Jepsen: `ok` (happened), `fail` (certainly did not happen), `info` (unknown).

use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// What an operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// A put of `value` under `key`.
    Write,
    /// A get of `key`; `value` is what was read (`None`: not found).
    Read,
}

/// How an operation ended, as far as the client can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It happened (write acknowledged, read answered).
    Ok,
    /// It certainly did not happen (for example `Unavailable`: nothing was written).
    Fail,
    /// Unknown: it may or may not have happened (for example a timeout).
    Info,
}

/// Which part of a run an operation belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The timed workload, while nemeses act.
    #[default]
    Main,
    /// The final reads after healing and repair.
    Final,
}

/// One completed operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Logical client process. As in Jepsen, a worker whose operation ended `info` continues as
    /// a new process (the old one may still have that operation in flight).
    pub process: u32,
    /// Write or read.
    #[serde(rename = "f")]
    pub kind: OpKind,
    /// The key.
    pub key: String,
    /// Written value, or the value read (`None` for a read that found nothing or did not end ok).
    pub value: Option<String>,
    /// How it ended.
    #[serde(rename = "type")]
    pub outcome: Outcome,
    /// Nanoseconds from the start of the run to the invocation.
    pub invoke_ns: u64,
    /// Nanoseconds from the start of the run to the completion.
    pub complete_ns: u64,
    /// The error kind and message when it did not end `ok`.
    pub error: Option<String>,
    /// The node that coordinated it, when known.
    pub coordinator: Option<u32>,
    /// Main workload or final read.
    #[serde(default)]
    pub phase: Phase,
    /// Attempts of an `ok` write the client library sent more than once (it retries a write
    /// that ended ambiguously with the same op id, which the cluster applies once): one
    /// operation, invoked before the first attempt and completed after the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

impl Op {
    /// Latency in milliseconds.
    pub fn latency_ms(&self) -> f64 {
        self.complete_ns.saturating_sub(self.invoke_ns) as f64 / 1e6
    }
}

/// Collects operations from many tasks. Times are measured from one [`Instant`].
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    limit: usize,
}

impl Recorder {
    /// A recorder whose clock starts now and that keeps at most `limit` operations (later ones
    /// are dropped and the workload should stop; see [`Recorder::is_full`]).
    pub fn new(limit: usize) -> Recorder {
        Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            limit,
        }
    }

    /// The instant times are measured from.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        ns_between(self.start, Instant::now())
    }

    /// Nanoseconds from the start to `at` (0 for instants before it).
    pub fn ns_at(&self, at: Instant) -> u64 {
        ns_between(self.start, at)
    }

    /// Appends a completed operation (dropped when the limit is reached).
    pub fn record(&self, op: Op) {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        if ops.len() < self.limit {
            ops.push(op);
        }
    }

    /// Whether the limit is reached.
    pub fn is_full(&self) -> bool {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).len() >= self.limit
    }

    /// The operations recorded so far, ordered by completion time.
    pub fn snapshot(&self) -> Vec<Op> {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
        ops.sort_by_key(|o| (o.complete_ns, o.invoke_ns));
        ops
    }
}

fn ns_between(start: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX)
}

/// Writes a history as JSON lines, one operation per line.
pub fn write_jsonl(path: &Path, ops: &[Op]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for op in ops {
        serde_json::to_writer(&mut out, op).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads a history written by [`write_jsonl`]. A bad line is an error naming its number.
pub fn read_jsonl(path: &Path) -> std::io::Result<Vec<Op>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut ops = Vec::new();
    for (n, line) in file.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} line {}: {e}", path.display(), n + 1),
            )
        })?;
        ops.push(op);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, outcome: Outcome, at: u64) -> Op {
        Op {
            process: 1,
            kind: OpKind::Write,
            key: key.into(),
            value: Some("v".into()),
            outcome,
            invoke_ns: at,
            complete_ns: at + 5,
            error: None,
            coordinator: Some(2),
            phase: Phase::Main,
            attempts: None,
        }
    }

    #[test]
    fn jsonl_round_trips_and_uses_jepsen_field_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("history.jsonl");
        let retried = Op {
            attempts: Some(3),
            ..op("c", Outcome::Ok, 20)
        };
        let ops = vec![op("a", Outcome::Ok, 1), op("b", Outcome::Info, 9), retried];
        write_jsonl(&path, &ops).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 3);
        // Attempts appear only for a write the library sent more than once.
        assert_eq!(text.matches("\"attempts\":3").count(), 1, "{text}");
        assert_eq!(text.matches("attempts").count(), 1, "{text}");
        assert!(
            text.contains("\"type\":\"info\"") && text.contains("\"f\":\"write\""),
            "{text}"
        );
        assert_eq!(read_jsonl(&path).expect("parse"), ops);
        std::fs::write(&path, "{\"broken\": 1}\n").expect("write");
        let err = read_jsonl(&path).expect_err("bad line");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn recorder_orders_by_completion_and_stops_at_its_limit() {
        let r = Recorder::new(2);
        r.record(op("late", Outcome::Ok, 50));
        r.record(op("early", Outcome::Ok, 10));
        r.record(op("dropped", Outcome::Ok, 0));
        assert!(r.is_full());
        let keys: Vec<String> = r.snapshot().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["early", "late"]);
    }
}
