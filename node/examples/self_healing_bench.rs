//! Self-healing benchmark: how fast ringkv repairs replicas, measured on three nodes started
//! in-process (RF 3, real QUIC over loopback, mutual TLS, RocksDB engines in a temporary
//! directory). It measures, in this order:
//!
//! 1. **Anti-entropy, k differing keys in N** (k = 1, 10, 100; N = `--keys`): N identical records
//!    are loaded directly into every replica's RocksDB before the nodes start (so start-up
//!    includes the Merkle-tree rebuild from N keys, which is printed); one replica then gets k
//!    newer versions, and one `Repair { wait: true }` round on that replica pushes them to the
//!    others. Prints keys repaired, bytes exchanged and the round's time, plus a round with no
//!    difference as the baseline, and checks every replica then holds every newer version.
//! 2. **Hint replay rate**: node 3 is stopped, `--hints` keys are written at ONE through node 1
//!    (64 in flight), node 3 restarts on the same RocksDB directory, and the time until no node
//!    has hints pending gives hints/s. The configured replay-rate limit (`--replay-rate`, the
//!    node default 20,000/s) caps this figure and is printed with it.
//! 3. **Full rebuild of a wiped replica**: node 3's data directory is replaced by an empty
//!    database, the node restarts, and one `Repair { wait: true }` round on it pulls everything
//!    back; prints keys pulled, seconds and keys/s, and checks the replica holds every key.
//! 4. **Client latency during a repair**: 16 tasks run QUORUM gets and puts (half each, uniform
//!    random keys, random coordinator) for `--load-secs` seconds without repair (measured
//!    before step 3, on a quiet cluster), then, after step 3, node 3 is wiped again and the same
//!    load runs while a repair rebuilds it (stopping early if the repair ends first); prints
//!    p50/p99 of both.
//!
//! The nodes, the load and the benchmark share one process and one tokio runtime, so figures
//! are for a single machine and include the load generator's own CPU use.
//!
//! Run it (always in release; the target directory holds the prebuilt RocksDB):
//!
//! ```text
//! CARGO_TARGET_DIR=/root/.cache/ringkv-target cargo run --release -p ringkv-node \
//!     --example self_healing_bench -- [--keys 1000000] [--hints 20000] [--load-secs 5] \
//!     [--replay-rate 20000] [--value-bytes 100] [--json]
//! ```
//!
//! With the defaults it takes about two minutes on two cores and about 550 MB of memory (three
//! RocksDB instances).
//!
//! Progress goes to stderr (and the nodes' logs with `RUST_LOG`, e.g. `RUST_LOG=node=debug`);
//! figures go to stdout, one labelled line each (or one JSON object with `--json`). The exit
//! status is 1 if a check fails (a replica did not converge) or a step could not run, 2 for bad
//! arguments.

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use node::config::{
    AntiEntropyConfig, HintsConfig, Limits, MemberConfig, NodeConfig, Replication, Timeouts,
    TlsFiles,
};
use node::node::{start, RunningNode};
use proto::message::{KeyRecord, NodeStatus, RepairReport};
use proto::tls::{generate_ca, issue, write_pem, Role, TlsMaterial};
use proto::transport::{client_endpoint, Pool};
use proto::version::{hlc_from_millis, wall_millis};
use proto::{Consistency, Record, Request, Response, Version};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::{Engine, RocksEngine, RocksOptions, ScanCursor, Write};

/// Nodes in the cluster, all replicas of every key (RF 3).
const NODES: usize = 3;
/// Records per `Engine::apply` when loading replicas directly.
const LOAD_BATCH: u64 = 10_000;
/// Hinted writes in flight at once.
const HINT_IN_FLIGHT: usize = 64;
/// Client tasks of the latency load.
const LOAD_TASKS: usize = 16;
/// Most operations one load task runs (the duration normally ends it first).
const MAX_OPS_PER_TASK: u64 = 50_000_000;
/// Records per page when counting a replica's records.
const SCAN_PAGE: usize = 10_000;
/// Timeout of one client get or put.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of a `Repair { wait: true }` call.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(1800);
/// Highest latency the histograms hold (µs); slower samples are clamped to it.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Bytes of values per `ReplicaWriteBatch` the benchmark sends to make a replica diverge.
const INJECT_BATCH_BYTES: usize = 512 * 1024;
/// Pause after all nodes started and agree on liveness, before the first measurement.
const SETTLE: Duration = Duration::from_secs(2);
/// Numbers of differing keys of the anti-entropy rounds.
const DIFFERING: [usize; 3] = [1, 10, 100];

/// Command-line flags.
#[derive(Parser, Debug)]
#[command(about = "Measures ringkv's self-healing: anti-entropy, hint replay, rebuilds")]
struct Args {
    /// Keys loaded into every replica (anti-entropy, rebuild and load phases).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1000..))]
    keys: u64,
    /// Keys written at ONE while node 3 is down (one hint each).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    hints: u64,
    /// Seconds of client load, without and then during a repair.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    load_secs: u64,
    /// Hint replay limit per target per second (the node's default is 20,000).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    replay_rate: u64,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=65536))]
    value_bytes: u64,
    /// Print one JSON object instead of labelled lines.
    #[arg(long)]
    json: bool,
}

/// The figures gathered so far, and the checks that failed.
#[derive(Default)]
struct Figures {
    lines: Vec<String>,
    json: Map<String, Value>,
    failures: Vec<String>,
}

impl Figures {
    /// Records one figure: its text line and its JSON value under `key`.
    fn add(&mut self, key: &str, value: Value, line: String) {
        eprintln!("  => {line}");
        self.lines.push(line);
        self.json.insert(key.to_string(), value);
    }

    fn fail(&mut self, what: String) {
        eprintln!("  !! CHECK FAILED: {what}");
        self.failures.push(what);
    }
}

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

fn data_key(i: u64) -> Vec<u8> {
    format!("key-{i:010}").into_bytes()
}

fn hint_key(i: u64) -> Vec<u8> {
    format!("hint-{i:08}").into_bytes()
}

/// A value of `len` pseudo-random bytes (incompressible, like real data), different per `seed`.
fn value_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port on loopback")
}

fn write_tls(dir: &Path, name: &str, m: &TlsMaterial) -> TlsFiles {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    write_pem(&cert, &m.cert_pem, false).expect("write certificate");
    write_pem(&key, &m.key_pem, true).expect("write key");
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert,
        key,
    }
}

fn open_engine(path: &Path) -> anyhow::Result<Arc<RocksEngine>> {
    // The previous instance's lock can outlive its last handle briefly; retry for a while.
    let mut last = None;
    for _ in 0..50 {
        match RocksEngine::open(path, RocksOptions::default()) {
            Ok(e) => return Ok(Arc::new(e)),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(anyhow!(
        "cannot open RocksDB at {}: {}",
        path.display(),
        last.map_or_else(String::new, |e| e.to_string())
    ))
}

/// Three nodes on loopback with RocksDB engines in a temporary directory.
struct Cluster {
    /// Removed (with every database) when the cluster is dropped.
    dir: tempfile::TempDir,
    configs: Vec<NodeConfig>,
    nodes: Vec<Option<RunningNode>>,
    engines: Vec<Option<Arc<RocksEngine>>>,
    /// Client certificate: client requests only.
    client: Arc<Pool>,
    /// Node certificate: may send replica requests (used to make one replica diverge).
    peer: Pool,
}

impl Cluster {
    /// Writes certificates and configurations and opens the engines; starts no node.
    fn new(replay_rate: u64) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir().context("temporary directory")?;
        let ca = generate_ca("bench").context("CA")?;
        write_pem(&dir.path().join("ca.pem"), &ca.cert_pem, false).context("write CA")?;
        let members: Vec<MemberConfig> = (0..NODES)
            .map(|i| MemberConfig {
                id: i as u32 + 1,
                address: SocketAddr::from(([127, 0, 0, 1], free_port())),
                datacenter: "dc1".into(),
                rack: format!("rack{}", i + 1),
                vnodes: 16,
                tokens: vec![],
            })
            .collect();
        let mut configs = Vec::new();
        for m in &members {
            let tls = issue(&ca, "bench", Role::Node, &format!("node-{}", m.id))
                .context("node certificate")?;
            configs.push(NodeConfig {
                cluster_name: "bench".into(),
                node_id: m.id,
                listen: None,
                data_dir: dir.path().join(format!("data-{}", m.id)),
                tls: write_tls(dir.path(), &format!("node-{}", m.id), &tls),
                replication: Replication::Simple { rf: NODES },
                timeouts: Timeouts {
                    request_ms: 2000,
                    heartbeat_ms: 100,
                    down_after_ms: 600,
                    ..Timeouts::default()
                },
                limits: Limits::default(),
                durability: Default::default(),
                hints: HintsConfig {
                    check_interval_ms: 100,
                    replay_rate,
                    ..HintsConfig::default()
                },
                // Only the rounds this benchmark asks for run.
                anti_entropy: AntiEntropyConfig {
                    interval_ms: 3_600_000,
                    tombstone_grace_ms: 8_000_000,
                },
                metrics_listen: None,
                seeds: Vec::new(),
                streaming: Default::default(),
                members: members.clone(),
            });
        }
        let client_tls =
            issue(&ca, "bench", Role::Client, "bench-client").context("client cert")?;
        let client = Arc::new(Pool::new(
            client_endpoint(&client_tls).context("client endpoint")?,
            Duration::from_secs(1),
        ));
        let peer_tls = issue(&ca, "bench", Role::Node, "bench-injector").context("node cert")?;
        let peer = Pool::new(
            client_endpoint(&peer_tls).context("node-role endpoint")?,
            Duration::from_secs(1),
        );
        let mut engines = Vec::new();
        for cfg in &configs {
            engines.push(Some(open_engine(&cfg.data_dir)?));
        }
        Ok(Cluster {
            dir,
            configs,
            nodes: (0..NODES).map(|_| None).collect(),
            engines,
            client,
            peer,
        })
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.configs[i].members[i].address
    }

    fn engine(&self, i: usize) -> anyhow::Result<&Arc<RocksEngine>> {
        self.engines[i]
            .as_ref()
            .ok_or_else(|| anyhow!("node {}'s engine is closed", i + 1))
    }

    /// Starts node `i` on its engine; returns how long `start` took (the tree rebuild mostly).
    async fn boot(&mut self, i: usize) -> anyhow::Result<Duration> {
        let engine: Arc<dyn Engine> = self.engine(i)?.clone();
        let first = Instant::now();
        for attempt in 0..50 {
            let t = Instant::now();
            match start(self.configs[i].clone(), engine.clone()).await {
                Ok(n) => {
                    let took = t.elapsed();
                    self.nodes[i] = Some(n);
                    if attempt > 0 {
                        progress(&format!(
                            "node {}'s port was still in use after its shutdown; bound after {:.2} s of retries",
                            i + 1,
                            (first.elapsed() - took).as_secs_f64()
                        ));
                    }
                    return Ok(took);
                }
                // The stopped node's port can be held a moment longer.
                Err(e) if e.to_string().contains("in use") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => bail!("node {} does not start: {e}", i + 1),
            }
        }
        bail!("node {}'s address stayed in use", i + 1)
    }

    /// Waits until every running node sees exactly the running nodes as up.
    async fn wait_liveness(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let mut agreed = true;
            for i in 0..NODES {
                if self.nodes[i].is_none() {
                    continue;
                }
                match self.status(i).await {
                    Ok(s) => {
                        agreed &= s
                            .peers
                            .iter()
                            .all(|p| p.up == self.nodes[p.id as usize - 1].is_some());
                    }
                    Err(_) => agreed = false,
                }
            }
            if agreed {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the nodes did not agree on who is up within 30 s")
    }

    async fn call(&self, i: usize, req: Request, timeout: Duration) -> anyhow::Result<Response> {
        self.client
            .call(self.addr(i), req, timeout)
            .await
            .with_context(|| format!("request to node {}", i + 1))
    }

    async fn status(&self, i: usize) -> anyhow::Result<NodeStatus> {
        match self
            .call(i, Request::Status, Duration::from_secs(3))
            .await?
        {
            Response::Status(s) => Ok(*s),
            other => bail!("node {} answered Status with {other:?}", i + 1),
        }
    }

    async fn repair(&self, i: usize) -> anyhow::Result<RepairReport> {
        match self
            .call(i, Request::Repair { wait: true }, REPAIR_TIMEOUT)
            .await?
        {
            Response::RepairReport(r) => Ok(r),
            other => bail!("node {} answered Repair with {other:?}", i + 1),
        }
    }

    /// Gracefully stops node `i` (its engine stays open here).
    async fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown().await;
        }
    }

    /// Closes node `i`'s engine, waiting (bounded) for the stopped node's last handles to go.
    async fn close_engine(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(mut arc) = self.engines[i].take() else {
            return Ok(());
        };
        for _ in 0..200 {
            match Arc::try_unwrap(arc) {
                Ok(engine) => {
                    drop(engine);
                    return Ok(());
                }
                Err(shared) => arc = shared,
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.engines[i] = Some(arc);
        bail!("node {}'s engine is still in use after 5 s", i + 1)
    }

    /// Stops node `i`, closes its database, optionally deletes it, reopens the directory (empty
    /// when wiped) and starts the node again. Returns the start-up time.
    async fn restart(&mut self, i: usize, wipe: bool) -> anyhow::Result<Duration> {
        self.reopen(i, wipe).await?;
        let took = self.boot(i).await?;
        let t = Instant::now();
        self.wait_liveness().await?;
        progress(&format!(
            "node {} started in {:.2} s; every node saw it up {:.2} s later",
            i + 1,
            took.as_secs_f64(),
            t.elapsed().as_secs_f64()
        ));
        Ok(took)
    }

    /// Stops node `i`, closes its database, optionally deletes it, and reopens the directory
    /// (empty when wiped); the node is not started.
    async fn reopen(&mut self, i: usize, wipe: bool) -> anyhow::Result<()> {
        let t = Instant::now();
        self.stop(i).await;
        let stopped = t.elapsed();
        self.close_engine(i).await?;
        progress(&format!(
            "node {} stopped in {:.2} s, its database closed after {:.2} s",
            i + 1,
            stopped.as_secs_f64(),
            t.elapsed().as_secs_f64()
        ));
        let path = self.configs[i].data_dir.clone();
        if wipe {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {}", path.display()))?;
        }
        self.engines[i] = Some(open_engine(&path)?);
        Ok(())
    }

    async fn shutdown(&mut self) {
        for i in 0..NODES {
            self.stop(i).await;
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// Loads keys `0..n` with identical records into every engine, one thread per engine.
fn preload(
    engines: &[Arc<RocksEngine>],
    n: u64,
    len: usize,
    version: Version,
) -> anyhow::Result<()> {
    std::thread::scope(|s| {
        let handles: Vec<_> = engines
            .iter()
            .map(|engine| {
                s.spawn(move || -> anyhow::Result<()> {
                    let mut start = 0;
                    while start < n {
                        let end = (start + LOAD_BATCH).min(n);
                        let batch: Vec<Write> = (start..end)
                            .map(|i| Write {
                                key: data_key(i),
                                record: Record::value(version, value_bytes(i, len)),
                            })
                            .collect();
                        engine.apply(&batch).context("preload apply")?;
                        start = end;
                    }
                    engine.flush().context("preload flush")?;
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow!("a preload thread panicked"))??;
        }
        Ok(())
    })
}

/// Counts a replica's records (tombstones included) by scanning the whole ring.
fn count_records(engine: &dyn Engine, expected: u64) -> anyhow::Result<u64> {
    let whole = ring::TokenRange { start: 0, end: 0 };
    let mut cursor: Option<ScanCursor> = None;
    let mut count = 0u64;
    let max_pages = expected * 2 / SCAN_PAGE as u64 + 100;
    for _ in 0..max_pages {
        let page = engine
            .scan(whole, cursor.as_ref(), SCAN_PAGE)
            .context("scan")?;
        count += page.len() as u64;
        if page.len() < SCAN_PAGE {
            return Ok(count);
        }
        cursor = page.last().map(|(k, _)| ScanCursor::after(k));
    }
    bail!("scan did not finish within {max_pages} pages")
}

fn report_json(r: &RepairReport) -> Value {
    json!({
        "pairs_compared": r.pairs_compared,
        "pairs_differing": r.pairs_differing,
        "leaves_exchanged": r.leaves_exchanged,
        "keys_pulled": r.keys_pulled,
        "keys_pushed": r.keys_pushed,
        "bytes_exchanged": r.bytes_exchanged,
        "millis": r.millis,
        "failures": r.failures,
    })
}

/// Checks that every replica holds `version` (or newer) for each key.
fn check_converged(
    c: &Cluster,
    keys: &[(Vec<u8>, Version)],
    figures: &mut Figures,
    what: &str,
) -> anyhow::Result<()> {
    let mut stale = 0;
    for i in 0..NODES {
        let engine = c.engine(i)?;
        for (key, version) in keys {
            let have = engine.get(key).context("engine get")?;
            if have.is_none_or(|r| r.version < *version) {
                stale += 1;
            }
        }
    }
    if stale > 0 {
        figures.fail(format!(
            "{what}: {stale} (replica, key) pairs still lack the newer version after the round"
        ));
    }
    Ok(())
}

/// Phase 1: anti-entropy with 1, 10 and 100 differing keys among `n`.
async fn anti_entropy_phase(
    c: &mut Cluster,
    n: u64,
    len: usize,
    figures: &mut Figures,
    rng: &mut StdRng,
) -> anyhow::Result<()> {
    progress(&format!(
        "loading {n} keys into each of {NODES} RocksDB replicas directly"
    ));
    let base = Version {
        hlc: hlc_from_millis(wall_millis()),
        node: 1,
    };
    let engines: Vec<Arc<RocksEngine>> = (0..NODES)
        .map(|i| c.engine(i).cloned())
        .collect::<anyhow::Result<_>>()?;
    let t = Instant::now();
    preload(&engines, n, len, base)?;
    drop(engines);
    let secs = t.elapsed().as_secs_f64();
    figures.add(
        "preload_secs",
        json!(secs),
        format!("preload {n} keys x {NODES} replicas (direct engine.apply): {secs:.2} s"),
    );

    // The first divergence, made before the nodes start: node 1 alone has a newer version.
    let mut used: HashSet<u64> = HashSet::new();
    let first = rng.gen_range(0..n);
    used.insert(first);
    let newer = Version {
        hlc: base.hlc + 1,
        node: 1,
    };
    c.engine(0)?
        .apply(&[Write {
            key: data_key(first),
            record: Record::value(newer, value_bytes(first ^ 0xFFFF, len)),
        }])
        .context("divergent write")?;

    progress("starting the nodes one by one (each rebuilds its Merkle trees from storage)");
    let mut starts = Vec::new();
    for i in 0..NODES {
        starts.push(c.boot(i).await?.as_secs_f64());
    }
    c.wait_liveness().await?;
    // Let start-up connection attempts settle: nodes started one after another leave heartbeat
    // handshakes to ports that were not bound yet, and their late abort can cut a request
    // in flight (seen as a failed pair in the first round without this pause).
    tokio::time::sleep(SETTLE).await;
    let max = starts.iter().copied().fold(0.0, f64::max);
    figures.add(
        "startup_secs",
        json!({ "per_node": starts, "max": max }),
        format!(
            "node start-up with {n} keys (Merkle rebuild), per node: {} s",
            starts
                .iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join(" / ")
        ),
    );

    for (round, &k) in DIFFERING.iter().enumerate() {
        let divergent: Vec<(Vec<u8>, Version)> = if round == 0 {
            vec![(data_key(first), newer)]
        } else {
            // Later divergences go through node 1's writer (so its trees see them), as
            // replica writes that reached node 1 only.
            let version = Version {
                hlc: hlc_from_millis(wall_millis()),
                node: 1,
            };
            let mut picked = Vec::with_capacity(k);
            for _ in 0..k * 100 {
                if picked.len() == k {
                    break;
                }
                let i = rng.gen_range(0..n);
                if used.insert(i) {
                    picked.push(i);
                }
            }
            // Batches well under the frame limit, whatever the value size.
            let per_batch = (INJECT_BATCH_BYTES / (len + 32)).max(1);
            for chunk in picked.chunks(per_batch) {
                let writes: Vec<KeyRecord> = chunk
                    .iter()
                    .map(|&i| KeyRecord {
                        key: data_key(i),
                        record: Record::value(version, value_bytes(i ^ 0xABCD, len)),
                    })
                    .collect();
                match c
                    .peer
                    .call(
                        c.addr(0),
                        Request::ReplicaWriteBatch { writes },
                        Duration::from_secs(10),
                    )
                    .await
                    .context("divergent replica writes")?
                {
                    Response::ReplicaAcks { applied }
                        if applied.len() == chunk.len() && applied.iter().all(|a| *a) => {}
                    other => bail!("node 1 did not store the divergent writes: {other:?}"),
                }
            }
            picked.iter().map(|&i| (data_key(i), version)).collect()
        };
        let k = divergent.len();
        progress(&format!(
            "anti-entropy round on node 1 with {k} key(s) newer there than on nodes 2 and 3"
        ));
        let t = Instant::now();
        let r = c.repair(0).await?;
        let wall = t.elapsed().as_millis();
        figures.add(
            &format!("anti_entropy_{k}_in_n"),
            report_json(&r),
            format!(
                "anti-entropy {k}-in-{n}: keys repaired {} (pulled {}, pushed {}), bytes_exchanged {}, millis {} (client wall {wall} ms), leaves exchanged {}, pairs differing {}/{}, failures {}",
                r.keys_pulled + r.keys_pushed,
                r.keys_pulled,
                r.keys_pushed,
                r.bytes_exchanged,
                r.millis,
                r.leaves_exchanged,
                r.pairs_differing,
                r.pairs_compared,
                r.failures
            ),
        );
        if r.failures > 0 {
            figures.fail(format!(
                "anti-entropy {k}-in-{n}: {} range/peer pairs failed",
                r.failures
            ));
        }
        check_converged(c, &divergent, figures, &format!("anti-entropy {k}-in-{n}"))?;
        if round == 0 {
            // With nothing left to repair: the cost of comparing N keys' trees.
            let r = c.repair(0).await?;
            figures.add(
                "anti_entropy_0_in_n",
                report_json(&r),
                format!(
                    "anti-entropy 0-in-{n} (identical replicas): bytes_exchanged {}, millis {}, pairs compared {}",
                    r.bytes_exchanged, r.millis, r.pairs_compared
                ),
            );
            if r.keys_pulled + r.keys_pushed > 0 {
                figures.fail(format!(
                    "a round over identical replicas repaired {} keys",
                    r.keys_pulled + r.keys_pushed
                ));
            }
        }
    }
    Ok(())
}

/// Sum of every node's pending hints (all targets).
async fn pending_hints(c: &Cluster) -> anyhow::Result<(u64, u64)> {
    let (mut pending, mut replayed) = (0, 0);
    for i in 0..NODES {
        if c.nodes[i].is_some() {
            let s = c.status(i).await?;
            pending += s.hints_pending.iter().map(|(_, n)| n).sum::<u64>();
            replayed += s.hints_replayed;
        }
    }
    Ok((pending, replayed))
}

/// Phase 2: hinted handoff replay rate.
async fn hints_phase(
    c: &mut Cluster,
    count: u64,
    replay_rate: u64,
    len: usize,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    progress("stopping node 3");
    let t = Instant::now();
    c.stop(2).await;
    progress(&format!(
        "node 3 stopped in {:.2} s",
        t.elapsed().as_secs_f64()
    ));
    c.wait_liveness().await?;
    progress(&format!(
        "writing {count} keys at ONE through node 1 ({HINT_IN_FLIGHT} in flight)"
    ));
    let addr = c.addr(0);
    let pool = c.client.clone();
    let t = Instant::now();
    let failed = futures::stream::iter(0..count)
        .map(|i| {
            let pool = pool.clone();
            async move {
                let req = Request::Put {
                    key: hint_key(i),
                    value: value_bytes(i, len),
                    consistency: Consistency::One,
                    opts: Default::default(),
                };
                matches!(
                    pool.call(addr, req, OP_TIMEOUT).await,
                    Ok(Response::Written { .. })
                )
            }
        })
        .buffer_unordered(HINT_IN_FLIGHT)
        .fold(0u64, |failed, ok| async move { failed + u64::from(!ok) })
        .await;
    let write_secs = t.elapsed().as_secs_f64();
    let (pending, replayed_before) = pending_hints(c).await?;
    figures.add(
        "hinted_writes",
        json!({ "writes": count, "failed": failed, "secs": write_secs, "hints_pending": pending }),
        format!(
            "hinted writes at ONE with node 3 down: {count} in {write_secs:.2} s ({:.0}/s), {failed} failed, hints pending {pending}",
            count as f64 / write_secs
        ),
    );
    if failed > 0 {
        figures.fail(format!("{failed} writes at ONE failed with node 3 down"));
    }

    progress("restarting node 3 on the same RocksDB directory");
    let restarted = Instant::now();
    c.reopen(2, false).await?;
    let startup = c.boot(2).await?;
    // Timed from here: node 3 serves; the others learn it is up by heartbeats.
    let serving = Instant::now();
    let mut first_delivery: Option<Duration> = None;
    let budget = Duration::from_secs(60 + 5 * pending / replay_rate.max(1));
    let mut drained = None;
    while restarted.elapsed() < budget {
        let (now_pending, _) = pending_hints(c).await?;
        if first_delivery.is_none() && now_pending < pending {
            first_delivery = Some(serving.elapsed());
        }
        if now_pending == 0 {
            drained = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.wait_liveness().await?;
    let Some(drained) = drained else {
        figures.fail(format!(
            "hints still pending {} s after node 3 restarted",
            budget.as_secs()
        ));
        return Ok(());
    };
    let (_, replayed_after) = pending_hints(c).await?;
    // Node 3's own counter restarted at zero; nodes 1 and 2 delivered the hints.
    let delivered = replayed_after.saturating_sub(replayed_before);
    let total = drained.duration_since(restarted).as_secs_f64();
    let after_start = drained.duration_since(serving).as_secs_f64();
    let rate = delivered as f64 / after_start;
    figures.add(
        "hint_replay",
        json!({
            "hints_delivered": delivered,
            "hints_per_s": rate,
            "replay_rate_limit_per_s": replay_rate,
            "secs_from_node_started": after_start,
            "secs_from_restart": total,
            "restart_secs": startup.as_secs_f64(),
            "first_delivery_secs_from_node_started": first_delivery.map(|d| d.as_secs_f64()),
        }),
        format!(
            "hint replay rate (hints/s): {rate:.0} ({delivered} hints in {after_start:.2} s after node 3 started; limit {replay_rate}/s per target; {total:.2} s from restart incl. {:.2} s start-up; first hint delivered {} s after node 3 started)",
            startup.as_secs_f64(),
            first_delivery.map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64()))
        ),
    );
    let engine = c.engine(2)?;
    let mut missing = 0u64;
    for i in 0..count {
        if engine.get(&hint_key(i)).context("engine get")?.is_none() {
            missing += 1;
        }
    }
    if missing > 0 {
        figures.fail(format!(
            "{missing} of {count} hinted keys missing on node 3 after replay"
        ));
    }
    Ok(())
}

/// Phase 3: node 3 wiped and rebuilt by one repair round.
async fn rebuild_phase(
    c: &mut Cluster,
    expected: u64,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    progress("wiping node 3's data directory and restarting it empty");
    c.restart(2, true).await?;
    let before = count_records(c.engine(2)?.as_ref(), 0)?;
    if before != 0 {
        figures.fail(format!("the wiped replica holds {before} records"));
    }
    progress(&format!(
        "repair round on node 3 (expects to pull {expected} keys)"
    ));
    let t = Instant::now();
    let r = c.repair(2).await?;
    let secs = t.elapsed().as_secs_f64();
    let held = count_records(c.engine(2)?.as_ref(), expected)?;
    figures.add(
        "full_rebuild",
        json!({
            "keys_pulled": r.keys_pulled,
            "secs": secs,
            "keys_per_s": r.keys_pulled as f64 / secs,
            "records_held_after": held,
            "expected": expected,
            "report": report_json(&r),
        }),
        format!(
            "full rebuild of a wiped replica (keys/s): {:.0} ({} keys pulled in {secs:.2} s; bytes_exchanged {}, leaves {}, failures {}; replica now holds {held} of {expected})",
            r.keys_pulled as f64 / secs,
            r.keys_pulled,
            r.bytes_exchanged,
            r.leaves_exchanged,
            r.failures
        ),
    );
    if held != expected {
        figures.fail(format!(
            "the rebuilt replica holds {held} records, expected {expected}"
        ));
    }
    Ok(())
}

/// What a load run measured.
struct LoadResult {
    latency_us: Histogram<u64>,
    errors: u64,
    /// Errors by kind (error code, or how the call failed), for the report.
    error_kinds: BTreeMap<String, u64>,
    secs: f64,
}

/// `LOAD_TASKS` tasks of QUORUM gets and puts on keys `0..n` until `duration` passes or `stop`
/// is set.
async fn run_load(
    c: &Cluster,
    n: u64,
    len: usize,
    duration: Duration,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> anyhow::Result<LoadResult> {
    let addrs: Arc<Vec<SocketAddr>> = Arc::new((0..NODES).map(|i| c.addr(i)).collect());
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(LOAD_TASKS);
    for t in 0..LOAD_TASKS {
        let (pool, addrs, stop) = (c.client.clone(), addrs.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (t as u64 + 1));
            let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("histogram bounds are valid");
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            for _ in 0..MAX_OPS_PER_TASK {
                if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = rng.gen_range(0..n);
                let addr = addrs[rng.gen_range(0..addrs.len())];
                let req = if rng.gen_bool(0.5) {
                    Request::Get {
                        key: data_key(i),
                        consistency: Consistency::Quorum,
                        opts: Default::default(),
                    }
                } else {
                    Request::Put {
                        key: data_key(i),
                        value: value_bytes(i.wrapping_add(rng.gen()), len),
                        consistency: Consistency::Quorum,
                        opts: Default::default(),
                    }
                };
                let t0 = Instant::now();
                match pool.call(addr, req, OP_TIMEOUT).await {
                    Ok(Response::Written { .. } | Response::Value { .. }) => {
                        hist.saturating_record(t0.elapsed().as_micros() as u64);
                    }
                    Ok(Response::Error(e)) => {
                        *errors.entry(format!("{:?}", e.code)).or_default() += 1;
                    }
                    Ok(_) => *errors.entry("unexpected reply".into()).or_default() += 1,
                    Err(_) => *errors.entry("transport".into()).or_default() += 1,
                }
            }
            (hist, errors)
        }));
    }
    let mut latency_us =
        Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).context("histogram")?;
    let mut error_kinds: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        let (h, e) = t.await.context("load task")?;
        latency_us.add(&h).context("histogram merge")?;
        for (kind, n) in e {
            *error_kinds.entry(kind).or_default() += n;
        }
    }
    Ok(LoadResult {
        latency_us,
        errors: error_kinds.values().sum(),
        error_kinds,
        secs: started.elapsed().as_secs_f64(),
    })
}

fn load_json(r: &LoadResult) -> Value {
    let h = &r.latency_us;
    json!({
        "ops": h.len(),
        "ops_per_s": h.len() as f64 / r.secs,
        "errors": r.errors,
        "error_kinds": r.error_kinds,
        "secs": r.secs,
        "p50_us": h.value_at_quantile(0.50),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
    })
}

fn errors_text(r: &LoadResult) -> String {
    if r.errors == 0 {
        return "0".into();
    }
    let kinds: Vec<String> = r
        .error_kinds
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!("{} ({})", r.errors, kinds.join(", "))
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// Phase 4a: client latency without repair, on a cluster with nothing to repair.
async fn baseline_load(c: &Cluster, n: u64, len: usize, secs: u64) -> anyhow::Result<LoadResult> {
    progress(&format!(
        "client load without repair: {LOAD_TASKS} tasks, QUORUM gets+puts, {secs} s"
    ));
    run_load(
        c,
        n,
        len,
        Duration::from_secs(secs),
        Arc::new(AtomicBool::new(false)),
        1,
    )
    .await
}

/// Phase 4b: the same load while a repair rebuilds node 3, wiped again (so no compaction left
/// over from the previous rebuild runs meanwhile); compared with `quiet`.
async fn latency_phase(
    c: &mut Cluster,
    n: u64,
    len: usize,
    secs: u64,
    quiet: LoadResult,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs(secs);
    progress("wiping node 3 again and restarting it empty");
    c.restart(2, true).await?;
    progress("client load while a repair rebuilds node 3");
    let stop = Arc::new(AtomicBool::new(false));
    let pool = c.client.clone();
    let addr = c.addr(2);
    let done = stop.clone();
    let repair_started = Instant::now();
    let repair = tokio::spawn(async move {
        let res = pool
            .call(addr, Request::Repair { wait: true }, REPAIR_TIMEOUT)
            .await;
        done.store(true, Ordering::Relaxed);
        res
    });
    let busy = run_load(c, n, len, duration, stop.clone(), 2).await?;
    let ended_before_repair = !stop.load(Ordering::Relaxed);
    progress("waiting for the repair to finish");
    let report = match tokio::time::timeout(REPAIR_TIMEOUT, repair).await {
        Ok(Ok(Ok(Response::RepairReport(r)))) => r,
        other => bail!("the repair of node 3 did not report: {other:?}"),
    };
    let repair_secs = repair_started.elapsed().as_secs_f64();

    let (q, b) = (&quiet.latency_us, &busy.latency_us);
    figures.add(
        "client_latency",
        json!({
            "without_repair": load_json(&quiet),
            "during_repair": load_json(&busy),
            "load_ended_before_repair": ended_before_repair,
            "repair_secs": repair_secs,
            "repair": report_json(&report),
        }),
        format!(
            "client p99 during repair vs without: {} vs {} (p50 {} vs {}; ops/s {:.0} vs {:.0}; errors {} vs {}; QUORUM get+put, {LOAD_TASKS} tasks; load {:.1} s {} the {repair_secs:.1} s repair pulling {} keys)",
            ms(b.value_at_quantile(0.99)),
            ms(q.value_at_quantile(0.99)),
            ms(b.value_at_quantile(0.50)),
            ms(q.value_at_quantile(0.50)),
            b.len() as f64 / busy.secs,
            q.len() as f64 / quiet.secs,
            errors_text(&busy),
            errors_text(&quiet),
            busy.secs,
            if ended_before_repair { "within" } else { "covering all of" },
            report.keys_pulled
        ),
    );
    if report.failures > 0 {
        figures.fail(format!(
            "the repair under load had {} failed range/peer pairs",
            report.failures
        ));
    }
    Ok(())
}

async fn run(args: &Args, c: &mut Cluster, figures: &mut Figures) -> anyhow::Result<()> {
    let len = args.value_bytes as usize;
    let mut rng = StdRng::seed_from_u64(0x5e1f_4ea1);
    anti_entropy_phase(c, args.keys, len, figures, &mut rng).await?;
    hints_phase(c, args.hints, args.replay_rate, len, figures).await?;
    let quiet = baseline_load(c, args.keys, len, args.load_secs).await?;
    rebuild_phase(c, args.keys + args.hints, figures).await?;
    latency_phase(c, args.keys, len, args.load_secs, quiet, figures).await?;
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // The nodes' logs, only when asked for (RUST_LOG=node=debug, for example).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let started = Instant::now();
    let mut figures = Figures::default();
    let mut cluster = match Cluster::new(args.replay_rate) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cluster setup: {e:#}");
            std::process::exit(1);
        }
    };
    progress(&format!(
        "3 nodes, RF 3, data in {}",
        cluster.data_dir().display()
    ));
    let outcome = run(&args, &mut cluster, &mut figures).await;
    progress("stopping the nodes");
    cluster.shutdown().await;
    drop(cluster);
    let total = started.elapsed().as_secs_f64();
    figures.json.insert("total_secs".into(), json!(total));
    figures.json.insert(
        "params".into(),
        json!({
            "keys": args.keys,
            "hints": args.hints,
            "load_secs": args.load_secs,
            "replay_rate": args.replay_rate,
            "value_bytes": args.value_bytes,
            "nodes": NODES,
            "rf": NODES,
        }),
    );
    figures
        .json
        .insert("failures".into(), json!(figures.failures.clone()));
    if let Err(e) = &outcome {
        figures.json.insert("error".into(), json!(format!("{e:#}")));
    }
    if args.json {
        println!("{}", Value::Object(figures.json.clone()));
    } else {
        for line in &figures.lines {
            println!("{line}");
        }
        println!("total runtime: {total:.1} s");
        for f in &figures.failures {
            println!("CHECK FAILED: {f}");
        }
    }
    if let Err(e) = outcome {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    if !figures.failures.is_empty() {
        std::process::exit(1);
    }
}
