//! Shared by the integration tests that run real clusters: finds the `ringkv` and `ringkv-node`
//! binaries, runs `ringkv` commands against one cluster directory, and stops (and deletes) the
//! cluster when a test ends, also when it panics, after printing the tail of every node's log.

#![allow(dead_code)] // Each test file uses its own subset of these helpers.

pub mod harness;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The `ringkv` binary cargo built for this test.
pub fn ringkv_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ringkv"))
}

/// The `ringkv-node` binary: `$RINGKV_NODE_BIN`, else the one next to `ringkv` (same target
/// directory). Cargo does not build another package's binaries for a test, so it must exist.
pub fn node_bin() -> PathBuf {
    let path = match std::env::var_os("RINGKV_NODE_BIN").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => ringkv_bin().with_file_name("ringkv-node"),
    };
    assert!(
        path.is_file(),
        "the ringkv-node binary is missing at {}: run `cargo build --release --workspace --bins` \
         (with the same CARGO_TARGET_DIR) before these tests, or set RINGKV_NODE_BIN",
        path.display()
    );
    path
}

/// Clusters started by concurrently running tests would compete for the CI machine's two cores,
/// and a starved node misses heartbeats and is taken for down. One cluster at a time keeps the
/// failure detector's view (and so every test's outcome) independent of the others.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// One finished `ringkv` command.
pub struct Run {
    /// The arguments, for failure messages.
    pub args: Vec<String>,
    /// Exit status (-1 if killed by a signal).
    pub code: i32,
    /// Raw standard output.
    pub stdout: Vec<u8>,
    /// Standard error, lossily decoded.
    pub stderr: String,
    /// Wall-clock time the command took.
    pub elapsed: Duration,
}

impl Run {
    fn from_output(args: Vec<String>, out: Output, elapsed: Duration) -> Run {
        Run {
            args,
            code: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed,
        }
    }

    /// Standard output, lossily decoded.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// A description for assertion messages: command, status, both outputs, duration.
    pub fn describe(&self) -> String {
        let shown: Vec<String> = self
            .args
            .iter()
            .map(|a| {
                if a.len() > 80 {
                    format!("<{} bytes>", a.len())
                } else {
                    a.clone()
                }
            })
            .collect();
        // A JSON error's message can sit behind a long log tail: show it first.
        let message = serde_json::from_slice::<serde_json::Value>(&self.stdout)
            .ok()
            .and_then(|v| v["message"].as_str().map(|m| format!("message: {m}\n")))
            .unwrap_or_default();
        format!(
            "`ringkv {}` exited {} after {:?}\n{message}--- stdout ---\n{}\n--- stderr ---\n{}",
            shown.join(" "),
            self.code,
            self.elapsed,
            truncate(&self.stdout_text(), 2000),
            truncate(&self.stderr, 2000)
        )
    }

    /// Asserts the exit status and returns self for further checks.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code,
            code,
            "unexpected exit status: {}",
            self.describe()
        );
        self
    }

    /// Asserts success.
    #[track_caller]
    pub fn ok(self) -> Run {
        self.expect_code(0)
    }

    /// Parses stdout as the one JSON object `--json` prints.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.describe()))
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_string()
    } else {
        let cut = (0..=max)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}... ({} bytes in all)", &s[..cut], s.len())
    }
}

/// `text` without terminal colour sequences (`ESC [ ... m`), which node logs may contain.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `ringkv` with `args` (and `stdin` piped in, when given), with a clean environment for
/// the variables it reads.
pub fn ringkv(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut cmd = Command::new(ringkv_bin());
    cmd.args(args)
        .env_remove("RINGKV_CLUSTER_DIR")
        .env_remove("RUST_LOG")
        .env("RINGKV_NODE_BIN", node_bin())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn ringkv");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // ringkv may stop reading early (it reads one byte past the limit at most); the pipe
        // closing under us is then its choice. Dropping the pipe is ringkv's end of input.
        if let Err(e) = pipe.write_all(bytes) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe,
                "write ringkv's stdin: {e}"
            );
        }
    }
    let out = child.wait_with_output().expect("wait for ringkv");
    Run::from_output(
        args.iter().map(|a| a.to_string()).collect(),
        out,
        started.elapsed(),
    )
}

/// A local cluster directory in a fresh temporary directory. Dropping it runs
/// `ringkv cluster down --purge`; on a panic it first prints every node's log tail.
pub struct TestCluster {
    dir: PathBuf,
    // Dropped after `Drop::drop` ran, so the nodes are stopped before their files go.
    _tmp: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl TestCluster {
    /// A cluster directory that does not exist yet (`cluster up` creates it).
    pub fn new() -> TestCluster {
        // A test that panicked while holding the lock poisons it; the next test may still run.
        let turn = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let tmp = tempfile::tempdir().expect("tempdir");
        TestCluster {
            dir: tmp.path().join("cluster"),
            _tmp: tmp,
            _turn: turn,
        }
    }

    /// `ringkv cluster up` with these layout flags (and `--base-port 0`); asserts success.
    #[track_caller]
    pub fn up(layout: &[&str]) -> TestCluster {
        let cluster = TestCluster::new();
        let mut args = vec!["cluster", "up", "--base-port", "0", "--timeout-secs", "30"];
        args.extend_from_slice(layout);
        cluster.run(&args).ok();
        cluster
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The temporary directory that holds the cluster directory (for other files of a test).
    pub fn scratch(&self) -> &Path {
        self._tmp.path()
    }

    /// A file of the cluster directory, as a string argument.
    pub fn path_arg(&self, name: &str) -> String {
        self.dir
            .join(name)
            .to_str()
            .expect("utf-8 path")
            .to_string()
    }

    /// Runs `ringkv ARGS --cluster-dir DIR`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_stdin(args, None)
    }

    /// Runs `ringkv ARGS --cluster-dir DIR` with `stdin` piped in.
    pub fn run_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        let dir = self.dir.to_str().expect("utf-8 path");
        let mut all = args.to_vec();
        all.extend_from_slice(&["--cluster-dir", dir]);
        ringkv(&all, stdin)
    }

    /// `cluster status --json`, whatever its exit status.
    pub fn status(&self) -> serde_json::Value {
        self.run(&["--json", "cluster", "status"]).json()
    }

    /// Node id -> (address, datacenter), from `cluster status --json`.
    pub fn nodes(&self) -> Vec<(u64, String, String)> {
        let status = self.status();
        status["nodes"]
            .as_array()
            .expect("status lists nodes")
            .iter()
            .map(|n| {
                (
                    n["id"].as_u64().expect("id"),
                    n["address"].as_str().expect("address").to_string(),
                    n["datacenter"].as_str().expect("datacenter").to_string(),
                )
            })
            .collect()
    }

    /// Polls `cluster status --json` until every node of `observers` reports every node of
    /// `down` as down, or panics after `timeout`.
    #[track_caller]
    pub fn wait_seen_down(&self, observers: &[u64], down: &[u64], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status();
            let seen = observers.iter().all(|&o| {
                let node = status["nodes"]
                    .as_array()
                    .and_then(|ns| ns.iter().find(|n| n["id"] == o));
                let peers = node.and_then(|n| n["status"]["peers"].as_array());
                down.iter().all(|&d| {
                    peers.is_some_and(|ps| ps.iter().any(|p| p["id"] == d && p["up"] == false))
                })
            });
            if seen {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes {observers:?} did not see {down:?} down within {timeout:?}; last status: {status:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The ring the cluster places keys by, from `cluster.toml` (the same placement code the
    /// nodes and the client use).
    pub fn ring(&self) -> ring::Ring {
        let dir = client::cluster_dir::ClusterDir::new(&self.dir).expect("cluster dir");
        let file = dir.load().expect("cluster.toml");
        client::cluster_dir::ring_of(&file).expect("a valid ring")
    }

    /// `count` keys `PREFIX-N` whose placement satisfies `pick(ring, token of the key)`. The
    /// client tries a key's replicas in placement order (in the client's datacenter first), so
    /// this chooses which node coordinates, and which dead nodes the client tries first.
    pub fn keys_where(
        &self,
        prefix: &str,
        count: usize,
        pick: impl Fn(&ring::Ring, ring::Token) -> bool,
    ) -> Vec<String> {
        let ring = self.ring();
        let keys: Vec<String> = (0..10_000)
            .map(|i| format!("{prefix}-{i}"))
            .filter(|key| pick(&ring, ring::token_of(key.as_bytes())))
            .take(count)
            .collect();
        assert_eq!(keys.len(), count, "too few keys {prefix}-N placed as asked");
        keys
    }

    /// The first key `PREFIX-N` whose placement satisfies `pick` (see [`Self::keys_where`]).
    pub fn key_where(
        &self,
        prefix: &str,
        pick: impl Fn(&ring::Ring, ring::Token) -> bool,
    ) -> String {
        self.keys_where(prefix, 1, pick).remove(0)
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("node-{id}/node.log")))
            .unwrap_or_default();
        let text = strip_ansi(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn node_ids_on_disk(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("node-")?.parse().ok())
            .collect();
        ids.sort_unstable();
        ids
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for id in self.node_ids_on_disk() {
                eprintln!(
                    "--- last lines of node-{id}/node.log ---\n{}",
                    self.log_tail(id, 40)
                );
            }
        }
        if !self.dir.exists() {
            return;
        }
        // SIGKILL first: the data is thrown away, and a graceful stop of every node at once
        // takes seconds (`restart_keeps_data` covers graceful stops). Then the CLI removes
        // whatever is left, the directory included.
        if let Ok(dir) = client::cluster_dir::ClusterDir::new(&self.dir) {
            if let Ok(cluster) = client::launcher::LocalCluster::open(dir) {
                for id in cluster.node_ids() {
                    if let Err(e) = cluster.stop_node(id, client::launcher::StopSignal::Kill) {
                        eprintln!("cleanup: cannot kill node {id}: {e}");
                    }
                }
            }
        }
        let down = self.run(&["cluster", "down", "--purge"]);
        if down.code != 0 {
            eprintln!("cleanup failed: {}", down.describe());
        }
    }
}

/// The counters of node `address`'s `/metrics` (served over TCP on the node's own port), by name
/// (unlabelled samples only).
pub fn node_metrics(address: &str) -> std::collections::BTreeMap<String, u64> {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(address).expect("connect to /metrics");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    sock.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("send request");
    let mut text = String::new();
    sock.read_to_string(&mut text).expect("read /metrics");
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}
