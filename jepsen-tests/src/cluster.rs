//! A cluster of real `ringkv-node` processes under the harness's control: the cluster directory
//! (CA, certificates and `node.toml` files written by `client::cluster_dir`, with the harness's
//! addresses and test timeouts), one process per node (inside its network namespace, or on
//! loopback), and the process faults: kill -9, SIGSTOP/SIGCONT, restart under libfaketime, wipe.
//!
//! The launcher of the `client` crate is not used to spawn nodes because the harness must wrap
//! each node's command (`ip netns exec`, a per-node faketime environment) and pause nodes. Every
//! process is started here, kept as a [`Child`], signalled by its pid only, and killed on drop.

use crate::admin::Admin;
use crate::error::HarnessError;
use crate::netns::Network;
use client::cluster_dir::{ClusterFile, NodeToml};
use client::{ClientConfig, ClusterDir, CreateOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use proto::membership::MembershipOp;
use ring::NodeId;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// UDP port every node listens on inside its own namespace.
pub const NODE_PORT: u16 = 7400;
/// How long a graceful stop waits before SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// Budget of one Status probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// Lines of a node's log shown when it fails.
const LOG_TAIL_LINES: usize = 25;
/// Where Debian and Ubuntu install libfaketime.
const LIBFAKETIME_CANDIDATES: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
];

/// Node settings suited to tests, written into every `node.toml` on top of what
/// `client::cluster_dir` writes: frequent anti-entropy, a tombstone grace above twice its
/// interval (the node refuses less), and a short shutdown grace.
pub const ANTI_ENTROPY_INTERVAL_MS: u64 = 5_000;
const TOMBSTONE_GRACE_MS: u64 = 60_000;
const SHUTDOWN_GRACE_MS: u64 = 1_000;

/// What kind of cluster to make.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Number of nodes (ids 1..=nodes).
    pub nodes: usize,
    /// How many of them (the highest ids) start outside the ring, as spares a membership
    /// nemesis joins: their `node.toml` learns the ring from the members as seeds.
    pub spares: usize,
    /// Replication factor.
    pub rf: usize,
    /// Virtual nodes per node.
    pub vnodes: u32,
    /// Namespaces and a bridge (true), or loopback (false).
    pub namespaces: bool,
    /// The `ringkv-node` binary.
    pub node_bin: PathBuf,
}

/// A node process the harness started.
struct NodeProc {
    child: Child,
    pid: i32,
    paused: bool,
    skew_secs: Option<i64>,
}

/// A running (or partly running) cluster. Dropping it kills every node and removes the network.
pub struct Cluster {
    dir: ClusterDir,
    file: ClusterFile,
    node_bin: PathBuf,
    procs: Mutex<BTreeMap<NodeId, NodeProc>>,
    admin: Admin,
    /// The nodes in the ring now (all but the spares at first; the membership nemesis changes it).
    members: Mutex<Vec<NodeId>>,
    /// Declared last: dropped after the processes are killed (see `Drop`).
    network: Option<Network>,
}

impl Cluster {
    /// Writes the cluster directory under `root` (and makes the network when asked). Starts
    /// nothing.
    pub fn create(root: &Path, spec: &ClusterSpec) -> Result<Cluster, HarnessError> {
        let ids: Vec<NodeId> = (1..=spec.nodes)
            .map(|i| NodeId::try_from(i).unwrap_or(NodeId::MAX))
            .collect();
        let network = if spec.namespaces {
            Some(Network::create(&ids)?)
        } else {
            None
        };
        let dir = ClusterDir::new(root)?;
        let opts = CreateOptions {
            name: "jepsen".into(),
            nodes: spec.nodes,
            datacenters: 1,
            rf: spec.rf,
            vnodes: spec.vnodes,
            // Loopback: free ports. Namespaces: replaced below by the hosts' addresses.
            base_port: 0,
            ..CreateOptions::default()
        };
        let mut file = dir
            .create(&opts)
            .map_err(|e| HarnessError::Usage(e.to_string()))?;
        if let Some(net) = &network {
            for node in &mut file.nodes {
                let ip = net.addr(node.id).ok_or_else(|| {
                    HarnessError::Setup(format!("no host address for node {}", node.id))
                })?;
                node.address = SocketAddr::new(IpAddr::V4(ip), NODE_PORT);
            }
            write_text(
                &dir.cluster_file(),
                &toml::to_string(&file).map_err(|e| HarnessError::Setup(e.to_string()))?,
            )?;
        }
        let members: Vec<NodeId> = ids
            .iter()
            .copied()
            .take(spec.nodes.saturating_sub(spec.spares))
            .collect();
        let founders = ClusterFile {
            nodes: file
                .nodes
                .iter()
                .filter(|n| members.contains(&n.id))
                .cloned()
                .collect(),
            ..file.clone()
        };
        for node in &file.nodes {
            let text = if members.contains(&node.id) {
                node_toml(&founders, node.id, Vec::new())?
            } else {
                node_toml(&file, node.id, founders.addresses())?
            };
            write_text(&dir.node_config(node.id), &text)?;
        }
        let tls = dir.client_tls(&file)?;
        let admin = Admin::new(&tls)?;
        info!(root = %root.display(), nodes = spec.nodes, spares = spec.spares, rf = spec.rf, namespaces = spec.namespaces, "cluster created");
        Ok(Cluster {
            dir,
            file,
            node_bin: spec.node_bin.clone(),
            procs: Mutex::default(),
            admin,
            members: Mutex::new(members),
            network,
        })
    }

    /// Every node id, spares included, ascending.
    pub fn ids(&self) -> Vec<NodeId> {
        self.file.nodes.iter().map(|n| n.id).collect()
    }

    /// The ids of the nodes in the ring now, ascending.
    pub fn members(&self) -> Vec<NodeId> {
        lock(&self.members).clone()
    }

    /// Records that node `id` joined the ring.
    pub fn add_member(&self, id: NodeId) {
        let mut m = lock(&self.members);
        if !m.contains(&id) {
            m.push(id);
            m.sort_unstable();
        }
    }

    /// Records that node `id` left the ring.
    pub fn remove_member(&self, id: NodeId) {
        lock(&self.members).retain(|&m| m != id);
    }

    /// A node's address.
    pub fn addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.file.node(id).ok().map(|n| n.address)
    }

    /// The cluster description.
    pub fn file(&self) -> &ClusterFile {
        &self.file
    }

    /// The cluster directory.
    pub fn dir(&self) -> &ClusterDir {
        &self.dir
    }

    /// The network, when nodes run in namespaces.
    pub fn network(&self) -> Option<&Network> {
        self.network.as_ref()
    }

    /// The admin client (Status, Repair, Inspect).
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// The placement ring of the cluster now, as the first member that answers has it (the
    /// ring a membership nemesis changed is not the one of `cluster.toml`).
    pub async fn ring(&self) -> Result<ring::Ring, HarnessError> {
        let mut last = String::from("no member to ask");
        for id in self.members() {
            let Some(addr) = self.addr(id) else {
                continue;
            };
            match self
                .admin
                .membership(addr, MembershipOp::Show, PROBE_TIMEOUT)
                .await
            {
                Ok(view) => {
                    return ring::Ring::new(
                        view.ring.members.iter().map(|m| m.member.clone()).collect(),
                        view.ring.strategy,
                    )
                    .map_err(|e| HarnessError::Setup(format!("ring of node {id}: {e}")))
                }
                Err(e) => last = format!("node {id}: {e}"),
            }
        }
        Err(HarnessError::Setup(format!(
            "cannot learn the ring: {last}"
        )))
    }

    /// A client configuration: every node a seed, requests bounded by `timeout`.
    pub fn client_config(&self, timeout: Duration) -> Result<ClientConfig, HarnessError> {
        Ok(self.dir.client_config(timeout, None)?)
    }

    /// Starts node `id` (when not running), with its clock shifted by `skew_secs` through
    /// libfaketime when given. The spawned pid is the node's own: `ip netns exec` execs it.
    pub fn start(&self, id: NodeId, skew_secs: Option<i64>) -> Result<i32, HarnessError> {
        let mut procs = lock(&self.procs);
        if let Some(p) = procs.get_mut(&id) {
            if matches!(p.child.try_wait(), Ok(None)) {
                return Ok(p.pid);
            }
            procs.remove(&id);
        }
        let config = self.dir.node_config(id);
        let mut cmd = match self.network.as_ref().and_then(|n| n.namespace(id)) {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.node_bin);
                c
            }
            None => Command::new(&self.node_bin),
        };
        cmd.arg("--config").arg(&config);
        cmd.env(
            "RUST_LOG",
            std::env::var("RINGKV_JEPSEN_NODE_LOG").unwrap_or_else(|_| "info".into()),
        );
        if let Some(skew) = skew_secs {
            let lib = find_libfaketime().ok_or_else(|| {
                HarnessError::Setup(
                    "clock skew needs libfaketime: apt-get install -y faketime (or run scripts/setup.sh)"
                        .into(),
                )
            })?;
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME", format!("{skew:+}s"))
                // Shift wall-clock time only; timers keep running normally.
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let log_path = self.dir.node_log(id);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(HarnessError::io(&log_path))?;
        let _ = writeln!(
            log,
            "=== ringkv-jepsen: starting node {id} (clock skew {skew_secs:?} s) ==="
        );
        let stderr = log.try_clone().map_err(HarnessError::io(&log_path))?;
        let child = cmd
            .current_dir(self.dir.node_dir(id))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            // Its own process group: a Ctrl-C meant for the harness does not reach it directly;
            // the harness stops it.
            .process_group(0)
            .spawn()
            .map_err(HarnessError::io(&self.node_bin))?;
        let pid = i32::try_from(child.id())
            .map_err(|_| HarnessError::Setup("pid out of range".into()))?;
        let _ = std::fs::write(self.dir.node_pid(id), format!("{pid}\n"));
        procs.insert(
            id,
            NodeProc {
                child,
                pid,
                paused: false,
                skew_secs,
            },
        );
        debug!(node = id, pid, ?skew_secs, "node started");
        Ok(pid)
    }

    /// Starts every member that is not running, without skew.
    pub fn start_all(&self) -> Result<(), HarnessError> {
        for id in self.members() {
            self.start(id, None)?;
        }
        Ok(())
    }

    /// Kills node `id` with SIGKILL and reaps it. Returns false when it was not running.
    pub fn kill(&self, id: NodeId) -> bool {
        let Some(mut p) = lock(&self.procs).remove(&id) else {
            return false;
        };
        signal(p.pid, Signal::SIGKILL);
        let _ = p.child.wait();
        let _ = std::fs::remove_file(self.dir.node_pid(id));
        debug!(node = id, pid = p.pid, "node killed");
        true
    }

    /// Stops node `id` as an operator would: SIGTERM (the node finishes the requests it has and
    /// closes its connections), SIGKILL after a grace period. Returns false when it was not
    /// running.
    pub fn stop(&self, id: NodeId) -> bool {
        let Some(p) = lock(&self.procs).remove(&id) else {
            return false;
        };
        self.terminate(BTreeMap::from([(id, p)]));
        true
    }

    /// Suspends node `id` (SIGSTOP). Returns false when it was not running.
    pub fn pause(&self, id: NodeId) -> bool {
        self.set_paused(id, true)
    }

    /// Resumes node `id` (SIGCONT). Returns false when it was not running.
    pub fn resume(&self, id: NodeId) -> bool {
        self.set_paused(id, false)
    }

    fn set_paused(&self, id: NodeId, paused: bool) -> bool {
        let mut procs = lock(&self.procs);
        let Some(p) = procs.get_mut(&id) else {
            return false;
        };
        signal(
            p.pid,
            if paused {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            },
        );
        p.paused = paused;
        true
    }

    /// Deletes node `id`'s data directory (the node must not run): the disk lost everything,
    /// including acknowledged writes. Used to prove the set checker catches lost writes.
    pub fn wipe(&self, id: NodeId) -> Result<(), HarnessError> {
        if lock(&self.procs).contains_key(&id) {
            return Err(HarnessError::Setup(format!(
                "refusing to wipe node {id} while it runs"
            )));
        }
        let data = self.dir.node_data(id);
        match std::fs::remove_dir_all(&data) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(HarnessError::io(&data)(e)),
        }
        std::fs::create_dir_all(&data).map_err(HarnessError::io(&data))
    }

    /// Ids of nodes whose process runs (paused ones included).
    pub fn running(&self) -> Vec<NodeId> {
        let mut procs = lock(&self.procs);
        procs.retain(|_, p| matches!(p.child.try_wait(), Ok(None)));
        procs.keys().copied().collect()
    }

    /// Ids of paused nodes.
    pub fn paused(&self) -> Vec<NodeId> {
        lock(&self.procs)
            .iter()
            .filter(|(_, p)| p.paused)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Ids of nodes running with a skewed clock.
    pub fn skewed(&self) -> Vec<NodeId> {
        lock(&self.procs)
            .iter()
            .filter(|(_, p)| p.skew_secs.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    /// The pid of node `id`, when it runs.
    pub fn pid(&self, id: NodeId) -> Option<i32> {
        lock(&self.procs).get(&id).map(|p| p.pid)
    }

    /// Checks that the process the harness signals for node `id` is the node binary itself (not
    /// a wrapper such as `ip`).
    pub fn verify_pid(&self, id: NodeId) -> Result<(), HarnessError> {
        let Some(pid) = self.pid(id) else {
            return Err(self.node_error(id, "not running"));
        };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map_err(|e| self.node_error(id, &format!("cannot read /proc/{pid}/exe: {e}")))?;
        let name = exe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let expected = self
            .node_bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with(&expected) {
            Ok(())
        } else {
            Err(self.node_error(
                id,
                &format!("pid {pid} runs {} rather than {expected}", exe.display()),
            ))
        }
    }

    /// Waits until every running node answers Status and sees every other running node up.
    /// Fails early when a node's process exits, and after `timeout` otherwise.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let running = self.running();
            let exited: Vec<NodeId> = self
                .ids()
                .into_iter()
                .filter(|id| !running.contains(id) && self.was_started(*id))
                .collect();
            if let Some(&id) = exited.first() {
                return Err(self.node_error(id, "its process exited"));
            }
            let mut problem = None;
            for &id in &running {
                if let Err(reason) = self.probe(id, &running).await {
                    problem = Some((id, reason));
                    break;
                }
            }
            let Some((id, reason)) = problem else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(self.node_error(
                    id,
                    &format!("not ready after {:.1} s: {reason}", timeout.as_secs_f32()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn was_started(&self, id: NodeId) -> bool {
        // A node without a pid file was killed on purpose (or never started).
        self.dir.node_pid(id).exists()
    }

    async fn probe(&self, id: NodeId, running: &[NodeId]) -> Result<(), String> {
        let addr = self.addr(id).ok_or("no address")?;
        let status = self
            .admin
            .status(addr, PROBE_TIMEOUT)
            .await
            .map_err(|e| format!("no Status answer: {e}"))?;
        let down: Vec<String> = running
            .iter()
            .filter(|&&p| p != id && !status.peers.iter().any(|s| s.id == p && s.up))
            .map(|p| p.to_string())
            .collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(format!("it sees node(s) {} down", down.join(", ")))
        }
    }

    /// Stops every node: SIGCONT to paused ones, SIGTERM, SIGKILL after a grace period.
    pub fn stop_all(&self) {
        let procs = std::mem::take(&mut *lock(&self.procs));
        self.terminate(procs);
    }

    /// Ends `procs` (already out of the process table): SIGCONT to paused ones, SIGTERM to all,
    /// then SIGKILL to those still running after one shared grace period; removes their pid
    /// files.
    fn terminate(&self, mut procs: BTreeMap<NodeId, NodeProc>) {
        for p in procs.values() {
            if p.paused {
                signal(p.pid, Signal::SIGCONT);
            }
            signal(p.pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_WAIT;
        for (id, p) in procs.iter_mut() {
            while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(p.child.try_wait(), Ok(None)) {
                warn!(node = id, pid = p.pid, "node ignored SIGTERM; killing it");
                signal(p.pid, Signal::SIGKILL);
                let _ = p.child.wait();
            }
            let _ = std::fs::remove_file(self.dir.node_pid(*id));
            debug!(node = id, pid = p.pid, "node stopped");
        }
    }

    /// Deletes every node's data directory (after a run, to save disk; logs stay).
    pub fn remove_data(&self) {
        for id in self.ids() {
            let _ = std::fs::remove_dir_all(self.dir.node_data(id));
        }
    }

    /// The last lines of node `id`'s log.
    pub fn log_tail(&self, id: NodeId) -> String {
        client::launcher::tail(&self.dir.node_log(id), LOG_TAIL_LINES).unwrap_or_default()
    }

    fn node_error(&self, id: NodeId, reason: &str) -> HarnessError {
        HarnessError::Node {
            node: id,
            reason: format!("{reason} (log: {})", self.dir.node_log(id).display()),
            log_tail: self.log_tail(id),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Kill before the network goes (fields drop after this body).
        let procs = std::mem::take(&mut *lock(&self.procs));
        for (id, mut p) in procs {
            signal(p.pid, Signal::SIGKILL);
            let _ = p.child.wait();
            let _ = std::fs::remove_file(self.dir.node_pid(id));
        }
        if let Some(net) = &mut self.network {
            net.teardown();
        }
    }
}

/// The node's configuration: what `client::cluster_dir` writes plus the harness's settings. With
/// `seeds` (a spare), the node lists itself only and learns the ring from them.
fn node_toml(
    file: &ClusterFile,
    id: NodeId,
    seeds: Vec<SocketAddr>,
) -> Result<String, HarnessError> {
    let err = |e: String| HarnessError::Setup(format!("cannot encode node.toml: {e}"));
    let mut cfg = NodeToml::for_node(file, id);
    if !seeds.is_empty() {
        cfg.members.retain(|m| m.id == id);
        cfg.seeds = seeds;
    }
    let mut table = toml::Table::try_from(cfg).map_err(|e| err(e.to_string()))?;
    let mut ae = toml::Table::new();
    ae.insert(
        "interval-ms".into(),
        toml::Value::Integer(ANTI_ENTROPY_INTERVAL_MS as i64),
    );
    ae.insert(
        "tombstone-grace-ms".into(),
        toml::Value::Integer(TOMBSTONE_GRACE_MS as i64),
    );
    table.insert("anti-entropy".into(), toml::Value::Table(ae));
    let mut timeouts = toml::Table::new();
    timeouts.insert(
        "shutdown-grace-ms".into(),
        toml::Value::Integer(SHUTDOWN_GRACE_MS as i64),
    );
    table.insert("timeouts".into(), toml::Value::Table(timeouts));
    let text = toml::to_string(&table).map_err(|e| err(e.to_string()))?;
    Ok(format!(
        "# ringkv-node configuration written by ringkv-jepsen (keys: node/src/config.rs).\n\n{text}"
    ))
}

/// The libfaketime library, when installed.
pub fn find_libfaketime() -> Option<PathBuf> {
    LIBFAKETIME_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn write_text(path: &Path, text: &str) -> Result<(), HarnessError> {
    std::fs::write(path, text).map_err(HarnessError::io(path))
}

fn signal(pid: i32, sig: Signal) {
    // Pids of 0, 1 or below would address process groups or init: never.
    if pid > 1 {
        if let Err(e) = kill(Pid::from_raw(pid), sig) {
            debug!(pid, ?sig, error = %e, "signal not delivered");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The description of a new `nodes`-node cluster (its directory lives as long as `tmp`).
    fn created(tmp: &tempfile::TempDir, nodes: usize) -> ClusterFile {
        ClusterDir::new(tmp.path())
            .expect("dir")
            .create(&CreateOptions {
                nodes,
                base_port: 0,
                ..CreateOptions::default()
            })
            .expect("create")
    }

    #[test]
    fn node_toml_adds_test_settings_to_the_launcher_schema() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = created(&tmp, 3);
        let text = node_toml(&file, 2, Vec::new()).expect("toml");
        let value: toml::Table = toml::from_str(&text).expect("parses");
        assert_eq!(value["node-id"].as_integer(), Some(2));
        assert_eq!(
            value["anti-entropy"]["interval-ms"].as_integer(),
            Some(ANTI_ENTROPY_INTERVAL_MS as i64)
        );
        let grace = value["anti-entropy"]["tombstone-grace-ms"]
            .as_integer()
            .expect("grace");
        assert!(grace > 2 * ANTI_ENTROPY_INTERVAL_MS as i64);
        assert_eq!(value["members"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn a_spare_lists_itself_only_and_learns_the_ring_from_seeds() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = created(&tmp, 5);
        let seeds = vec![file.nodes[0].address, file.nodes[1].address];
        let text = node_toml(&file, 5, seeds.clone()).expect("toml");
        let value: toml::Table = toml::from_str(&text).expect("parses");
        let members = value["members"].as_array().expect("members");
        assert_eq!(members.len(), 1);
        assert_eq!(members[0]["id"].as_integer(), Some(5));
        let listed: Vec<String> = value["seeds"]
            .as_array()
            .expect("seeds")
            .iter()
            .map(|v| v.as_str().expect("address").to_string())
            .collect();
        assert_eq!(
            listed,
            seeds.iter().map(|a| a.to_string()).collect::<Vec<_>>()
        );
    }
}
