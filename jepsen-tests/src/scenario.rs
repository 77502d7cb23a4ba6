//! A scenario (cluster shape, workload, level, nemesis, duration) and the run of one, from an
//! empty directory to checked results:
//!
//! 1. make the network (or fall back to loopback), the cluster directory and start the nodes;
//! 2. run the workload's clients and the nemesis schedule until the deadline;
//! 3. heal everything, wait until every node sees every other, let in-flight writes and hints
//!    settle, and run one repair round (every member, in turn, with every peer);
//! 4. inspect every replica of every key in the ring as it is now (convergence), then read every
//!    key at ALL through a client connected to the members now;
//! 5. stop the cluster, check the history, write the report.

use crate::checker::{self, CheckResults, Verdict};
use crate::cluster::{Cluster, ClusterSpec};
use crate::error::HarnessError;
use crate::history::{Op, Outcome, Recorder};
use crate::nemesis::{self, Nemesis, NemesisKind, NemesisWindow, Schedule};
use crate::netns;
use crate::workload::{self, Coordinators, WorkloadConfig, WorkloadKind};
use checker::convergence::{KeyReplicas, ReplicaState};
use client::Client;
use futures::StreamExt;
use proto::message::RepairReport;
use proto::Consistency;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Budget of one client request (the node's own coordinator timeout is 2 s).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long nodes get to start and see each other.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long hints get to drain after the heal before the repair round.
const HINT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Budget of one node's repair round.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(60);
/// Repair rounds at most, when a round reports failed pairs.
const MAX_REPAIR_ROUNDS: usize = 3;
/// Most operations one run records.
const MAX_HISTORY_OPS: usize = 2_000_000;
/// Inspect requests in flight at once.
const INSPECT_CONCURRENCY: usize = 32;
/// Attempts per Inspect.
const INSPECT_ATTEMPTS: usize = 3;

/// Where nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum NetMode {
    /// Namespaces when possible (root), else loopback; partition nemeses require namespaces.
    Auto,
    /// A namespace per node on a bridge; fails without root.
    Netns,
    /// All nodes on 127.0.0.1 (process faults only).
    Loopback,
}

/// Everything that defines one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scenario {
    /// Name of the run directory and of the row in suite tables.
    pub name: String,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Replication factor.
    pub rf: usize,
    /// Virtual nodes per node.
    pub vnodes: u32,
    /// The workload.
    pub workload: WorkloadKind,
    /// Level of the workload's reads and writes.
    pub consistency: Consistency,
    /// The fault.
    pub nemesis: NemesisKind,
    /// When faults start and stop.
    pub schedule: Schedule,
    /// Length of the workload phase.
    pub time: Duration,
    /// Client tasks.
    pub concurrency: usize,
    /// Total operations per second.
    pub rate: u32,
    /// Keys of the register workload.
    pub keys: usize,
    /// Which node coordinates each operation: the library's token-aware routing or a random
    /// node per operation.
    #[serde(default)]
    pub coordinators: Coordinators,
    /// Times the client library sends a write that ended ambiguously again (same op id).
    #[serde(default = "default_write_retries")]
    pub write_retries: u32,
    /// Where nodes run.
    pub net: NetMode,
    /// Seed of every random choice (nemesis targets, register keys).
    pub seed: u64,
    /// Checkers whose failure is reported but expected (for example linearizability at QUORUM,
    /// which ringkv does not promise): a suite does not fail on them.
    pub informational: Vec<String>,
    /// Checkers that must fail (for the deliberately broken setups): a suite fails if they pass.
    pub must_fail: Vec<String>,
    /// Checkers that must be valid, `unknown` included (for linearizability at LINEARIZABLE,
    /// which ringkv promises: a search that ran out of budget proves nothing, so it fails).
    #[serde(default)]
    pub must_be_valid: Vec<String>,
}

fn default_write_retries() -> u32 {
    client::client::DEFAULT_WRITE_RETRIES
}

impl Scenario {
    /// A scenario with the defaults of the command line.
    pub fn new(workload: WorkloadKind, consistency: Consistency, nemesis: NemesisKind) -> Scenario {
        let mut s = Scenario {
            name: String::new(),
            nodes: 5,
            rf: 3,
            vnodes: 16,
            workload,
            consistency,
            nemesis,
            schedule: Schedule {
                quiet: Duration::from_secs(5),
                fault: Duration::from_secs(5),
            },
            time: Duration::from_secs(30),
            concurrency: 8,
            rate: 200,
            keys: 5,
            coordinators: Coordinators::Token,
            write_retries: default_write_retries(),
            net: NetMode::Auto,
            seed: 1,
            informational: Vec::new(),
            must_fail: Vec::new(),
            must_be_valid: Vec::new(),
        };
        s.name = s.default_name();
        s
    }

    /// `workload-level-nemesis`, with `-random-coord` when each operation picks a random
    /// coordinator.
    pub fn default_name(&self) -> String {
        let mut name = format!(
            "{}-{}-{}",
            self.workload.name(),
            self.consistency.name().to_lowercase(),
            self.nemesis.name()
        );
        if self.coordinators == Coordinators::Random {
            name.push_str("-random-coord");
        }
        name
    }

    /// Checks the combination can run.
    pub fn validate(&self) -> Result<(), HarnessError> {
        let bad = |m: String| Err(HarnessError::Usage(m));
        if self.nodes == 0 || self.nodes > 200 {
            return bad(format!("--nodes {} must be between 1 and 200", self.nodes));
        }
        if self.rf == 0 || self.rf > self.nodes {
            return bad(format!(
                "--rf {} must be between 1 and --nodes {}",
                self.rf, self.nodes
            ));
        }
        if self.concurrency == 0 || self.rate == 0 || self.keys == 0 {
            return bad("--concurrency, --rate and --keys must be at least 1".into());
        }
        if self.workload == WorkloadKind::Register && !self.consistency.valid_for_reads() {
            return bad(format!(
                "the register workload reads at {}, which is for writes only",
                self.consistency
            ));
        }
        if self.nemesis == NemesisKind::Membership {
            let ring = self.nodes.saturating_sub(self.nemesis.spares());
            if self.rf > ring {
                return bad(format!(
                    "the membership nemesis starts with {ring} of the {} nodes in the ring, fewer than --rf {}",
                    self.nodes, self.rf
                ));
            }
            if self.coordinators == Coordinators::Random {
                return bad(
                    "the membership nemesis changes which nodes exist; use token coordinators"
                        .into(),
                );
            }
        }
        if self.nemesis.needs_network() && self.net == NetMode::Loopback {
            return bad(format!(
                "the {} nemesis needs network namespaces, not --net loopback",
                self.nemesis
            ));
        }
        self.nemesis.validate(self.nodes)
    }
}

/// Options of a run that are not part of the scenario.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Directory under which the run's directory is made.
    pub out_root: PathBuf,
    /// The `ringkv-node` binary (`None`: found like the `ringkv` CLI finds it).
    pub node_bin: Option<PathBuf>,
    /// Keep the nodes' data directories after the run.
    pub keep_data: bool,
}

/// One repair round on one node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepairEntry {
    /// Round number (1 = the round after the heal).
    pub round: usize,
    /// The node that ran it.
    pub node: u32,
    /// Its report, or why it failed.
    pub report: Result<RepairReport, String>,
}

/// Counts of the main phase.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OpStats {
    /// Operations issued.
    pub total: u64,
    /// Writes and reads that ended ok.
    pub ok: u64,
    /// That certainly failed.
    pub fail: u64,
    /// With unknown outcome.
    pub info: u64,
    /// Median latency of ok operations, ms.
    pub p50_ms: f64,
    /// 99th percentile latency of ok operations, ms.
    pub p99_ms: f64,
    /// Ok operations per second over the workload phase.
    pub ok_per_s: f64,
    /// Ok writes the client library had to send more than once (after an ambiguous attempt).
    #[serde(default)]
    pub retried_writes: u64,
}

/// Everything a run produced (written as `results.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    /// What ran.
    pub scenario: Scenario,
    /// Where its files are.
    pub run_dir: PathBuf,
    /// `namespaces` or `loopback`.
    pub network: String,
    /// Unix time of the start, ms.
    pub started_unix_ms: u64,
    /// Wall time of the whole run, s.
    pub duration_s: f64,
    /// Main-phase counts and latencies.
    pub ops: OpStats,
    /// The faults as they happened.
    pub nemesis: Vec<NemesisWindow>,
    /// Repair rounds after the heal.
    pub repair: Vec<RepairEntry>,
    /// Checker results.
    pub checks: CheckResults,
    /// Whether the scenario met its expectations (see [`Scenario::informational`] and
    /// [`Scenario::must_fail`]).
    pub passed: bool,
    /// Anything worth knowing about the run (fallbacks, slow heals).
    pub notes: Vec<String>,
}

impl RunReport {
    /// Whether every checker is valid (linearizability `unknown` counts as not failed).
    pub fn all_checks_valid(&self) -> bool {
        self.checks.verdicts().iter().all(|(name, v)| {
            *v == Verdict::Valid || (*name == "linearizability" && *v == Verdict::Unknown)
        })
    }
}

/// Runs one scenario and writes its directory (history, results, HTML). Setup problems are
/// errors; what the checkers find is in the report.
pub async fn run(scenario: &Scenario, opts: &RunOptions) -> Result<RunReport, HarnessError> {
    scenario.validate()?;
    let started = Instant::now();
    let started_unix_ms = unix_ms();
    let mut notes = Vec::new();
    let namespaces = choose_network(scenario, &mut notes)?;
    let run_dir = make_run_dir(&opts.out_root, &scenario.name)?;
    info!(scenario = %scenario.name, dir = %run_dir.display(), namespaces, "run starting");
    let found = client::launcher::find_node_binary(opts.node_bin.as_deref())?;
    let (node_bin, linked) = pin_binary(&found, &run_dir);
    let spec = ClusterSpec {
        nodes: scenario.nodes,
        spares: scenario.nemesis.spares(),
        rf: scenario.rf,
        vnodes: scenario.vnodes,
        namespaces,
        node_bin,
    };
    let cluster = Arc::new(Cluster::create(&run_dir.join("cluster"), &spec)?);
    let outcome = drive(scenario, &cluster, &mut notes).await;
    let c = Arc::clone(&cluster);
    let _ = tokio::task::spawn_blocking(move || c.stop_all()).await;
    if !opts.keep_data {
        cluster.remove_data();
    }
    drop(cluster);
    if linked {
        let _ = std::fs::remove_file(run_dir.join(client::launcher::NODE_BIN_NAME));
    }
    let (recorder, windows, repair) = outcome?;
    let ops = recorder.snapshot();
    let checks = check(scenario, &ops, repair.convergence);
    let mut report = RunReport {
        scenario: scenario.clone(),
        run_dir: run_dir.clone(),
        network: if namespaces { "namespaces" } else { "loopback" }.into(),
        started_unix_ms,
        duration_s: started.elapsed().as_secs_f64(),
        ops: op_stats(&ops, scenario.time),
        nemesis: windows,
        repair: repair.entries,
        checks,
        passed: false,
        notes,
    };
    report.passed = expectations_met(&report);
    crate::report::write_run(&report, &ops)?;
    Ok(report)
}

/// What the heal phase produced.
struct Healed {
    entries: Vec<RepairEntry>,
    convergence: Vec<KeyReplicas>,
}

type Driven = (Arc<Recorder>, Vec<NemesisWindow>, Healed);

/// Steps 1-4 with a cluster: start, workload and nemesis, heal, repair, inspect, final reads.
async fn drive(
    scenario: &Scenario,
    cluster: &Arc<Cluster>,
    notes: &mut Vec<String>,
) -> Result<Driven, HarnessError> {
    {
        let c = Arc::clone(cluster);
        tokio::task::spawn_blocking(move || c.start_all())
            .await
            .map_err(|e| HarnessError::Setup(e.to_string()))??;
    }
    cluster.wait_ready(READY_TIMEOUT).await?;
    for id in cluster.members() {
        cluster.verify_pid(id)?;
    }
    let mut clients = Vec::with_capacity(scenario.concurrency);
    for _ in 0..scenario.concurrency {
        let mut cfg = cluster.client_config(CLIENT_TIMEOUT)?;
        // No session guarantees: a session's version floor would make a worker's reads fresher
        // than the level alone makes them, and the run is to measure the level.
        cfg.session_keys = 0;
        cfg.write_retries = scenario.write_retries;
        // `token` coordinators are each key's first live replica, for writes too (the library
        // would rotate writes over the replicas); `random` spreads a key over every node.
        cfg.coordinator_window = Duration::ZERO;
        clients.push(Arc::new(Client::connect(cfg).await?));
    }
    let recorder = Arc::new(Recorder::new(MAX_HISTORY_OPS));
    let deadline = Instant::now() + scenario.time;
    let cfg = WorkloadConfig {
        kind: scenario.workload,
        consistency: scenario.consistency,
        rate: scenario.rate,
        keys: scenario.keys,
        max_ops_per_worker: max_ops_per_worker(scenario),
        seed: scenario.seed,
        coordinators: scenario.coordinators,
    };
    let nemesis = Nemesis::new(
        scenario.nemesis,
        Arc::clone(cluster),
        rand::rngs::StdRng::seed_from_u64(scenario.seed),
    );
    let nemesis_task = tokio::spawn(nemesis::run(
        nemesis,
        scenario.schedule,
        deadline,
        Arc::clone(&recorder),
    ));
    workload::run(clients, &cfg, deadline, Arc::clone(&recorder)).await;
    let windows = nemesis_task
        .await
        .map_err(|e| HarnessError::Setup(format!("nemesis task failed: {e}")))??;

    let healed = heal_and_repair(cluster, notes).await?;
    let keys = workload_keys(&recorder.snapshot());
    let convergence = inspect_replicas(cluster, &keys).await?;
    // A client connected now, to the members now: the ring may have changed during the run.
    let mut cfg = cluster.client_config(CLIENT_TIMEOUT)?;
    cfg.seeds = cluster
        .members()
        .into_iter()
        .filter_map(|id| cluster.addr(id))
        .collect();
    cfg.session_keys = 0;
    cfg.write_retries = scenario.write_retries;
    let final_client = Client::connect(cfg).await?;
    let process = u32::try_from(scenario.concurrency).unwrap_or(u32::MAX) * 1_000_000;
    workload::final_reads(&final_client, &recorder, &keys, process).await;
    Ok((
        recorder,
        windows,
        Healed {
            entries: healed,
            convergence,
        },
    ))
}

/// Waits for the healed cluster, lets writes in flight and hints settle, then runs repair
/// rounds: one, plus up to two more when a round reports pairs it could not compare.
async fn heal_and_repair(
    cluster: &Arc<Cluster>,
    notes: &mut Vec<String>,
) -> Result<Vec<RepairEntry>, HarnessError> {
    cluster.wait_ready(READY_TIMEOUT).await?;
    // Replica writes of timed-out requests may still be in flight for the node's request timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let drained = wait_hints_drained(cluster).await;
    if !drained {
        notes.push(format!(
            "hints were still pending {} s after the heal",
            HINT_DRAIN_TIMEOUT.as_secs()
        ));
    }
    let mut entries = Vec::new();
    for round in 1..=MAX_REPAIR_ROUNDS {
        let mut clean = true;
        for id in cluster.members() {
            let Some(addr) = cluster.addr(id) else {
                continue;
            };
            let report = cluster
                .admin()
                .repair(addr, REPAIR_TIMEOUT)
                .await
                .map_err(|e| e.to_string());
            clean &= matches!(&report, Ok(r) if r.failures == 0);
            entries.push(RepairEntry {
                round,
                node: id,
                report,
            });
        }
        if clean {
            break;
        }
        notes.push(format!(
            "repair round {round} had failures; running another"
        ));
    }
    Ok(entries)
}

async fn wait_hints_drained(cluster: &Cluster) -> bool {
    let deadline = Instant::now() + HINT_DRAIN_TIMEOUT;
    loop {
        let mut pending = 0u64;
        for id in cluster.members() {
            let Some(addr) = cluster.addr(id) else {
                continue;
            };
            match cluster.admin().status(addr, Duration::from_secs(1)).await {
                Ok(s) => pending += s.hints_pending.iter().map(|(_, n)| n).sum::<u64>(),
                Err(_) => pending += 1,
            }
        }
        if pending == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every key the workload tried to write or read, sorted.
fn workload_keys(ops: &[Op]) -> Vec<String> {
    let keys: BTreeSet<&str> = ops.iter().map(|o| o.key.as_str()).collect();
    keys.into_iter().map(str::to_string).collect()
}

/// Asks every replica of every key for its own record.
async fn inspect_replicas(
    cluster: &Arc<Cluster>,
    keys: &[String],
) -> Result<Vec<KeyReplicas>, HarnessError> {
    let ring = cluster.ring().await?;
    let results = futures::stream::iter(keys)
        .map(|key| {
            let replicas: Vec<u32> = ring.replicas_for_key(key.as_bytes()).to_vec();
            async move {
                let mut states = Vec::with_capacity(replicas.len());
                for node in replicas {
                    states.push((node, inspect_one(cluster, node, key).await));
                }
                KeyReplicas {
                    key: key.clone(),
                    replicas: states,
                }
            }
        })
        .buffer_unordered(INSPECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    Ok(results)
}

async fn inspect_one(cluster: &Cluster, node: u32, key: &str) -> ReplicaState {
    let Some(addr) = cluster.addr(node) else {
        return ReplicaState::Error {
            message: format!("no address for node {node}"),
        };
    };
    let mut last = String::new();
    for _ in 0..INSPECT_ATTEMPTS {
        match cluster
            .admin()
            .inspect(addr, key.as_bytes(), CLIENT_TIMEOUT)
            .await
        {
            Ok(None) => return ReplicaState::Absent,
            Ok(Some(record)) => {
                return ReplicaState::Present {
                    version: record.version,
                    value: record
                        .value
                        .map(|v| String::from_utf8_lossy(&v).into_owned()),
                }
            }
            Err(e) => last = e.to_string(),
        }
    }
    ReplicaState::Error { message: last }
}

fn check(scenario: &Scenario, ops: &[Op], convergence: Vec<KeyReplicas>) -> CheckResults {
    let mut results = CheckResults::default();
    match scenario.workload {
        WorkloadKind::Set => results.set = Some(checker::set::check(ops)),
        WorkloadKind::Register => {
            results.linearizability = Some(checker::register::check(ops));
        }
    }
    results.convergence = Some(checker::convergence::check(&convergence));
    if scenario.nemesis == NemesisKind::Membership {
        results.availability = Some(checker::availability::check(ops));
    }
    results
}

/// Whether the checkers met the scenario's expectations: every checker valid, except the
/// informational ones (any verdict) and the must-fail ones (which must be invalid). An
/// `unknown` linearizability verdict passes unless the scenario says it must be valid.
pub fn expectations_met(report: &RunReport) -> bool {
    let s = &report.scenario;
    report.checks.verdicts().iter().all(|(name, v)| {
        if s.must_fail.iter().any(|m| m == name) {
            *v == Verdict::Invalid
        } else if s.must_be_valid.iter().any(|m| m == name) {
            *v == Verdict::Valid
        } else if s.informational.iter().any(|m| m == name) {
            true
        } else {
            *v == Verdict::Valid || (*name == "linearizability" && *v == Verdict::Unknown)
        }
    })
}

fn op_stats(ops: &[Op], time: Duration) -> OpStats {
    let main: Vec<&Op> = ops
        .iter()
        .filter(|o| o.phase == crate::history::Phase::Main)
        .collect();
    let mut latencies: Vec<f64> = main
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .map(|o| o.latency_ms())
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() - 1) as f64 * p).round() as usize;
        latencies[i.min(latencies.len() - 1)]
    };
    let count = |outcome: Outcome| main.iter().filter(|o| o.outcome == outcome).count() as u64;
    OpStats {
        total: main.len() as u64,
        ok: count(Outcome::Ok),
        fail: count(Outcome::Fail),
        info: count(Outcome::Info),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        ok_per_s: count(Outcome::Ok) as f64 / time.as_secs_f64().max(1e-9),
        retried_writes: main
            .iter()
            .filter(|o| o.outcome == Outcome::Ok && o.attempts.is_some_and(|a| a > 1))
            .count() as u64,
    }
}

fn max_ops_per_worker(s: &Scenario) -> u64 {
    // Twice the paced count, as a hard bound should pacing fall behind and catch up.
    let paced = f64::from(s.rate) * s.time.as_secs_f64() / s.concurrency as f64;
    (paced * 2.0).ceil() as u64 + 10
}

/// Decides between namespaces and loopback; notes a fallback.
fn choose_network(s: &Scenario, notes: &mut Vec<String>) -> Result<bool, HarnessError> {
    match s.net {
        NetMode::Loopback => Ok(false),
        NetMode::Netns => {
            netns::check_capability()?;
            netns::remove_stale();
            Ok(true)
        }
        NetMode::Auto => match netns::check_capability() {
            Ok(()) => {
                netns::remove_stale();
                Ok(true)
            }
            Err(e) if s.nemesis.needs_network() => Err(HarnessError::Setup(format!(
                "the {} nemesis needs a network host per node: {e}",
                s.nemesis
            ))),
            Err(e) => {
                let note = format!("falling back to loopback with process faults only: {e}");
                warn!("{note}");
                notes.push(note);
                Ok(false)
            }
        },
    }
}

/// Makes `<root>/<name>-<unix seconds>` (with a suffix when taken).
fn make_run_dir(root: &Path, name: &str) -> Result<PathBuf, HarnessError> {
    std::fs::create_dir_all(root).map_err(HarnessError::io(root))?;
    let stamp = unix_ms() / 1000;
    for n in 0..1000 {
        let dir = if n == 0 {
            root.join(format!("{name}-{stamp}"))
        } else {
            root.join(format!("{name}-{stamp}-{n}"))
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return std::path::absolute(&dir).map_err(HarnessError::io(&dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(HarnessError::io(&dir)(e)),
        }
    }
    Err(HarnessError::Setup(format!(
        "cannot make a run directory under {}",
        root.display()
    )))
}

/// Hard-links the node binary into the run directory, so every node of the run executes the
/// same build even if cargo replaces the binary meanwhile. Falls back to the original path
/// (other file system). Returns the path and whether a link was made.
fn pin_binary(found: &Path, run_dir: &Path) -> (PathBuf, bool) {
    let link = run_dir.join(client::launcher::NODE_BIN_NAME);
    match std::fs::hard_link(found, &link) {
        Ok(()) => (link, true),
        Err(_) => (found.to_path_buf(), false),
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
