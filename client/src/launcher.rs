//! Starts, stops and watches the `ringkv-node` processes of a local cluster, for the
//! `ringkv cluster` commands, integration tests and the jepsen harness. Nodes run detached (own
//! process group, output appended to `node.log`) and are found again through their pid files.

use crate::client::{membership_at, status_at, transport_error, Client, ClientConfig};
use crate::cluster_dir::{ClusterDir, ClusterError, ClusterFile, CreateOptions, NodeEntry};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use proto::membership::{MembershipOp, MembershipView};
use proto::message::NodeStatus;
use proto::transport::{client_endpoint, Pool};
use ring::NodeId;
use serde::Serialize;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Environment variable naming the node binary (the `--node-bin` flag wins over it).
pub const ENV_NODE_BIN: &str = "RINGKV_NODE_BIN";
/// File name of the node binary searched next to the current executable and on `PATH`.
pub const NODE_BIN_NAME: &str = "ringkv-node";
/// How long a stop waits for a node to exit after SIGTERM before sending SIGKILL.
pub const STOP_WAIT: Duration = Duration::from_secs(10);
/// How long a stop waits for a node to exit after SIGKILL before reporting it still running.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often process and readiness checks poll.
const POLL: Duration = Duration::from_millis(50);
const READY_POLL: Duration = Duration::from_millis(200);
/// Budget of one Status request made while waiting for readiness or reporting status.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Lines of a node's log shown when it fails to become ready.
pub const LOG_TAIL_LINES: usize = 30;

/// How to stop a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: a graceful shutdown; SIGKILL follows if the node has not exited after
    /// [`STOP_WAIT`].
    Term,
    /// SIGKILL: a crash.
    Kill,
}

/// What [`LocalCluster::start_node`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    /// A new process was spawned with this pid.
    Spawned(i32),
    /// The node was already running with this pid; nothing was done.
    AlreadyRunning(i32),
}

impl Started {
    /// The node's pid.
    pub fn pid(self) -> i32 {
        match self {
            Started::Spawned(pid) | Started::AlreadyRunning(pid) => pid,
        }
    }
}

/// One node as `ringkv cluster status` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct NodeReport {
    /// Node id.
    pub id: NodeId,
    /// Its address.
    pub address: SocketAddr,
    /// Its datacenter.
    pub datacenter: String,
    /// Its rack.
    pub rack: String,
    /// Its process id, when its process is running.
    pub pid: Option<i32>,
    /// Whether it answered a Status request.
    pub reachable: bool,
    /// Its answer.
    pub status: Option<NodeStatus>,
    /// Why it did not answer.
    pub error: Option<String>,
}

impl NodeReport {
    /// Members this node sees up (itself included) and the cluster's member count, when it
    /// answered.
    pub fn members_up(&self) -> Option<(usize, usize)> {
        let s = self.status.as_ref()?;
        Some((
            1 + s.peers.iter().filter(|p| p.up).count(),
            1 + s.peers.len(),
        ))
    }

    /// Peers this node sees down, when it answered.
    pub fn peers_down(&self) -> Vec<NodeId> {
        self.status
            .iter()
            .flat_map(|s| s.peers.iter().filter(|p| !p.up).map(|p| p.id))
            .collect()
    }
}

/// A local cluster: its directory, its description and the node processes this value spawned.
///
/// Dropping it leaves the nodes running (the CLI starts detached clusters); wrap it with
/// [`LocalCluster::into_guard`] to stop every node when the guard is dropped, even on panic.
///
/// Stopping and starting block the calling thread (at most [`STOP_WAIT`] plus a few seconds per
/// stop); from async code that must stay responsive, call them through `spawn_blocking`.
pub struct LocalCluster {
    dir: ClusterDir,
    file: ClusterFile,
    node_bin: Option<PathBuf>,
    /// Processes spawned by this value, kept so they can be reaped (no zombies in tests).
    children: Mutex<HashMap<NodeId, Child>>,
}

impl LocalCluster {
    /// Creates a new cluster in `dir` (absent or empty): certificates, node configs,
    /// `cluster.toml`. Starts nothing.
    pub fn create(dir: ClusterDir, opts: &CreateOptions) -> Result<LocalCluster, ClusterError> {
        let file = dir.create(opts)?;
        Ok(LocalCluster::from_parts(dir, file))
    }

    /// Opens the existing cluster in `dir`.
    pub fn open(dir: ClusterDir) -> Result<LocalCluster, ClusterError> {
        let file = dir.load()?;
        Ok(LocalCluster::from_parts(dir, file))
    }

    /// Opens the cluster in `dir`, or creates it with `opts` when there is none. The flag is true
    /// when it was created.
    pub fn open_or_create(
        dir: ClusterDir,
        opts: &CreateOptions,
    ) -> Result<(LocalCluster, bool), ClusterError> {
        if dir.exists() {
            Ok((LocalCluster::open(dir)?, false))
        } else {
            Ok((LocalCluster::create(dir, opts)?, true))
        }
    }

    fn from_parts(dir: ClusterDir, file: ClusterFile) -> LocalCluster {
        LocalCluster {
            dir,
            file,
            node_bin: None,
            children: Mutex::default(),
        }
    }

    /// Uses this `ringkv-node` binary instead of searching for one ([`find_node_binary`]).
    pub fn with_node_bin(mut self, path: impl Into<PathBuf>) -> LocalCluster {
        self.node_bin = Some(path.into());
        self
    }

    /// Stops every node when the returned guard is dropped.
    pub fn into_guard(self) -> ClusterGuard {
        ClusterGuard(self)
    }

    /// The cluster directory.
    pub fn dir(&self) -> &ClusterDir {
        &self.dir
    }

    /// The cluster's description.
    pub fn file(&self) -> &ClusterFile {
        &self.file
    }

    /// Every node id, ascending.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.file.nodes.iter().map(|n| n.id).collect()
    }

    /// A node's address.
    pub fn address(&self, id: NodeId) -> Result<SocketAddr, ClusterError> {
        Ok(self.file.node(id)?.address)
    }

    /// A client configuration for this cluster (every node a seed).
    pub fn client_config(&self, timeout: Duration) -> Result<ClientConfig, ClusterError> {
        let tls = self.dir.client_tls(&self.file)?;
        Ok(ClientConfig::new(self.file.addresses(), tls, timeout))
    }

    /// A connected client with a 5 s request timeout.
    pub async fn client(&self) -> Result<Client, ClusterError> {
        Ok(Client::connect(self.client_config(Duration::from_secs(5))?).await?)
    }

    /// The pid of the node's running process, if it runs. A pid counts only while its process
    /// is alive (not a zombie) and was started with this node's config file.
    pub fn pid(&self, id: NodeId) -> Option<i32> {
        self.reap(id);
        // A child this launcher spawned and has not reaped cannot have its pid reused; trust it
        // even before it has exec'd (its command line is still ours for a moment after fork).
        if let Some(child) = lock(&self.children).get(&id) {
            return i32::try_from(child.id()).ok();
        }
        let pid = read_pid(&self.dir.node_pid(id))?;
        (is_alive(pid) && runs_config(pid, &self.dir.node_config(id))).then_some(pid)
    }

    /// Starts every node that is not running, in id order.
    pub fn start_all(&self) -> Result<Vec<(NodeId, Started)>, ClusterError> {
        self.node_ids()
            .into_iter()
            .map(|id| Ok((id, self.start_node(id)?)))
            .collect()
    }

    /// Starts one node (if it is not running) with its existing config and data: a detached
    /// `ringkv-node --config <dir>/node-<id>/node.toml` in its own process group, stdin from
    /// /dev/null, stdout and stderr appended to `node.log`, its pid written to `node.pid`.
    pub fn start_node(&self, id: NodeId) -> Result<Started, ClusterError> {
        self.file.node(id)?;
        if let Some(pid) = self.pid(id) {
            return Ok(Started::AlreadyRunning(pid));
        }
        let bin = match &self.node_bin {
            Some(bin) => bin.clone(),
            None => find_node_binary(None)?,
        };
        let data = self.dir.node_data(id);
        std::fs::create_dir_all(&data).map_err(ClusterError::io(&data))?;
        let log_path = self.dir.node_log(id);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(ClusterError::io(&log_path))?;
        let config = self.dir.node_config(id);
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        writeln!(
            log,
            "=== ringkv launcher: starting {} --config {} (unix time {}) ===",
            bin.display(),
            config.display(),
            since_epoch.as_secs()
        )
        .map_err(ClusterError::io(&log_path))?;
        let stderr = log.try_clone().map_err(ClusterError::io(&log_path))?;
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .current_dir(self.dir.node_dir(id))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            // Its own process group: a Ctrl-C in the terminal that ran `ringkv cluster up` does
            // not reach the nodes.
            .process_group(0)
            .spawn()
            .map_err(ClusterError::io(&bin))?;
        let pid = i32::try_from(child.id()).map_err(|_| ClusterError::Io {
            path: bin.clone(),
            source: std::io::Error::other("pid out of range"),
        })?;
        lock(&self.children).insert(id, child);
        write_pid(&self.dir.node_pid(id), pid)?;
        debug!(node = id, pid, "node started");
        Ok(Started::Spawned(pid))
    }

    /// Stops one node: SIGTERM (then SIGKILL after [`STOP_WAIT`]) or SIGKILL, and waits for its
    /// process to exit. Returns the pid it stopped, or `None` if the node was not running.
    pub fn stop_node(&self, id: NodeId, signal: StopSignal) -> Result<Option<i32>, ClusterError> {
        self.file.node(id)?;
        let Some(pid) = self.pid(id) else {
            let _ = std::fs::remove_file(self.dir.node_pid(id));
            return Ok(None);
        };
        send(pid, signal)?;
        let wait = if signal == StopSignal::Term {
            STOP_WAIT
        } else {
            KILL_WAIT
        };
        if !self.wait_exit(id, pid, wait) {
            self.kill_leftover(id, pid)?;
        }
        let _ = std::fs::remove_file(self.dir.node_pid(id));
        Ok(Some(pid))
    }

    /// Stops every running node: SIGTERM to all at once, then waits up to [`STOP_WAIT`] in total
    /// and SIGKILLs the ones left. Returns the nodes stopped and their pids.
    pub fn stop_all(&self) -> Result<Vec<(NodeId, i32)>, ClusterError> {
        let running: Vec<(NodeId, i32)> = self
            .node_ids()
            .into_iter()
            .filter_map(|id| Some((id, self.pid(id)?)))
            .collect();
        for &(_, pid) in &running {
            send(pid, StopSignal::Term)?;
        }
        let deadline = Instant::now() + STOP_WAIT;
        let mut first_error = None;
        for &(id, pid) in &running {
            if !self.wait_exit(id, pid, deadline.saturating_duration_since(Instant::now())) {
                if let Err(e) = self.kill_leftover(id, pid) {
                    first_error.get_or_insert(e);
                }
            }
        }
        for id in self.node_ids() {
            if self.pid(id).is_none() {
                let _ = std::fs::remove_file(self.dir.node_pid(id));
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(running),
        }
    }

    fn kill_leftover(&self, id: NodeId, pid: i32) -> Result<(), ClusterError> {
        warn!(node = id, pid, "node did not exit in time; sending SIGKILL");
        send(pid, StopSignal::Kill)?;
        if self.wait_exit(id, pid, KILL_WAIT) {
            Ok(())
        } else {
            Err(ClusterError::StillRunning { node: id, pid })
        }
    }

    /// Waits until the process is gone (reaped, when this value spawned it: a child killed a
    /// moment ago may look dead in /proc before it can be waited for, and an unreaped child
    /// still counts as running for [`LocalCluster::pid`]).
    fn wait_exit(&self, id: NodeId, pid: i32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.reap(id);
            if !is_alive(pid) && !lock(&self.children).contains_key(&id) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Collects the exit status of a child of ours that has exited.
    fn reap(&self, id: NodeId) {
        let mut children = lock(&self.children);
        if let Some(child) = children.get_mut(&id) {
            if !matches!(child.try_wait(), Ok(None)) {
                children.remove(&id);
            }
        }
    }

    /// Waits until every node answers Status and sees every other node up.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), ClusterError> {
        self.wait_nodes_ready(&self.node_ids(), timeout).await
    }

    /// Waits until each node of `ids` runs, answers Status and sees every other node of `ids` up
    /// (nodes outside `ids`, for example ones stopped on purpose, are not checked). Fails at once
    /// when a node's process is not running, and after `timeout` otherwise; the error carries the
    /// node's log tail.
    pub async fn wait_nodes_ready(
        &self,
        ids: &[NodeId],
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        for &id in ids {
            self.file.node(id)?;
        }
        let pool = self.status_pool()?;
        let deadline = Instant::now() + timeout;
        loop {
            let mut problem = None;
            for &id in ids {
                if self.pid(id).is_none() {
                    return Err(self.not_ready(
                        id,
                        "its process is not running (it exited or was never started)",
                    ));
                }
                if problem.is_none() {
                    problem = self
                        .probe_ready(&pool, id, ids)
                        .await
                        .err()
                        .map(|reason| (id, reason));
                }
            }
            let Some((id, reason)) = problem else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(self.not_ready(
                    id,
                    &format!("{reason} (waited {} s)", timeout.as_secs_f32()),
                ));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    async fn probe_ready(&self, pool: &Pool, id: NodeId, wanted: &[NodeId]) -> Result<(), String> {
        let addr = self.address(id).map_err(|e| e.to_string())?;
        let status = status_at(pool, addr, PROBE_TIMEOUT)
            .await
            .map_err(|e| format!("no Status answer: {e}"))?;
        if status.id != id {
            return Err(format!("the node at {addr} reports id {}", status.id));
        }
        let not_up: Vec<String> = wanted
            .iter()
            .filter(|&&w| w != id && !status.peers.iter().any(|p| p.id == w && p.up))
            .map(|w| w.to_string())
            .collect();
        if not_up.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "it does not see node(s) {} up yet",
                not_up.join(", ")
            ))
        }
    }

    fn not_ready(&self, id: NodeId, reason: &str) -> ClusterError {
        ClusterError::NotReady {
            node: id,
            reason: reason.to_string(),
            log: self.dir.node_log(id),
            log_tail: self.log_tail(id, LOG_TAIL_LINES),
        }
    }

    /// Asks every node for its status, concurrently.
    pub async fn status(&self) -> Result<Vec<NodeReport>, ClusterError> {
        let pool = self.status_pool()?;
        let probes = self.file.nodes.iter().map(|n| {
            let pool = &pool;
            async move { (n, status_at(pool, n.address, PROBE_TIMEOUT * 2).await) }
        });
        let answers = futures::future::join_all(probes).await;
        Ok(answers
            .into_iter()
            .map(|(n, answer)| NodeReport {
                id: n.id,
                address: n.address,
                datacenter: n.datacenter.clone(),
                rack: n.rack.clone(),
                pid: self.pid(n.id),
                reachable: answer.is_ok(),
                error: answer.as_ref().err().map(|e| e.to_string()),
                status: answer.ok(),
            })
            .collect())
    }

    /// Sends a membership operation to the first running node that answers (node errors, such
    /// as a refused change, are returned at once).
    pub async fn membership(
        &self,
        op: MembershipOp,
        timeout: Duration,
    ) -> Result<MembershipView, ClusterError> {
        let pool = self.status_pool()?;
        let mut last = None;
        for n in &self.file.nodes {
            if self.pid(n.id).is_none() {
                continue;
            }
            match membership_at(&pool, n.address, op.clone(), timeout).await {
                Ok(v) => return Ok(v),
                Err(e @ crate::error::ClientError::Connect(_)) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last
            .map(ClusterError::from)
            .unwrap_or_else(|| ClusterError::Layout("no node of the cluster is running".into())))
    }

    /// Asks one node of the file for its status.
    pub async fn node_status(&self, id: NodeId) -> Result<NodeStatus, ClusterError> {
        let pool = self.status_pool()?;
        Ok(status_at(&pool, self.address(id)?, PROBE_TIMEOUT).await?)
    }

    /// Adds a node to the cluster files (see [`ClusterDir::add_node`]), seeded with every
    /// running node.
    pub fn add_node(&mut self) -> Result<NodeEntry, ClusterError> {
        let seeds: Vec<SocketAddr> = self
            .file
            .nodes
            .iter()
            .filter(|n| self.pid(n.id).is_some())
            .map(|n| n.address)
            .collect();
        self.dir.add_node(&mut self.file, seeds)
    }

    /// Re-reads `cluster.toml` (another process may have added or removed nodes); keeps the
    /// current description if it cannot be read.
    pub fn reload(&mut self) {
        if let Ok(file) = self.dir.load() {
            self.file = file;
        }
    }

    /// Drops a node that left the ring from `cluster.toml` (its directory stays).
    pub fn forget_node(&mut self, id: NodeId) -> Result<(), ClusterError> {
        let mut file = self.file.clone();
        file.nodes.retain(|n| n.id != id);
        self.dir.save_file(&file)?;
        self.file = file;
        Ok(())
    }

    fn status_pool(&self) -> Result<Pool, ClusterError> {
        let tls = self.dir.client_tls(&self.file)?;
        let endpoint = client_endpoint(&tls).map_err(transport_error)?;
        Ok(Pool::new(endpoint, PROBE_TIMEOUT))
    }

    /// The last `lines` lines of a node's log (empty when there is no log).
    pub fn log_tail(&self, id: NodeId, lines: usize) -> String {
        tail(&self.dir.node_log(id), lines).unwrap_or_default()
    }
}

/// A [`LocalCluster`] that stops every node when dropped, also when a test panics. Declare it
/// after the temporary directory holding the cluster, so it is dropped first.
pub struct ClusterGuard(LocalCluster);

impl std::ops::Deref for ClusterGuard {
    type Target = LocalCluster;

    fn deref(&self) -> &LocalCluster {
        &self.0
    }
}

impl std::ops::DerefMut for ClusterGuard {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.0
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        // Nodes may have been added (by `ringkv cluster add`, another process) since.
        self.0.reload();
        if let Err(e) = self.0.stop_all() {
            warn!(error = %e, "stopping the local cluster failed");
        }
    }
}

/// Finds the `ringkv-node` binary: `explicit` (the `--node-bin` flag), else `$RINGKV_NODE_BIN`,
/// else `ringkv-node` next to the current executable (or one directory up, for test binaries in
/// `target/*/deps`), else on `PATH`.
pub fn find_node_binary(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    let named = |p: &Path, by: &str| {
        if is_executable(p) {
            Ok(p.to_path_buf())
        } else {
            Err(ClusterError::NodeBinary(format!(
                "{} (from {by}) is not an executable file",
                p.display()
            )))
        }
    };
    if let Some(p) = explicit {
        return named(p, "--node-bin");
    }
    if let Some(p) = std::env::var_os(ENV_NODE_BIN).filter(|p| !p.is_empty()) {
        return named(Path::new(&p), ENV_NODE_BIN);
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let near_exe = exe_dir
        .iter()
        .flat_map(|d| [Some(d.clone()), d.parent().map(Path::to_path_buf)])
        .flatten();
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    near_exe.chain(on_path).map(|d| d.join(NODE_BIN_NAME)).find(|c| is_executable(c)).ok_or_else(|| {
        ClusterError::NodeBinary(format!(
            "cannot find the `{NODE_BIN_NAME}` binary: pass --node-bin PATH, set {ENV_NODE_BIN}, or put it next to \
             `ringkv` or on PATH (build it with `cargo build --release -p ringkv-node`)"
        ))
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_pid(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    match text.trim().parse::<i32>() {
        // 0, 1 and negative numbers would signal process groups, init or everything.
        Ok(pid) if pid > 1 => Some(pid),
        _ => {
            warn!(path = %path.display(), "ignoring a pid file without a valid pid");
            None
        }
    }
}

fn write_pid(path: &Path, pid: i32) -> Result<(), ClusterError> {
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{pid}\n")).map_err(ClusterError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(ClusterError::io(path))
}

/// Whether `pid` names a live process: it exists and is not a zombie (a zombie has exited and
/// only waits for its parent to collect it).
fn is_alive(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => process_state(&stat) != Some('Z'),
        Err(_) => false,
    }
}

/// The state letter of a `/proc/<pid>/stat` line: `pid (comm) S ...`, where comm may contain
/// spaces and parentheses, so the state follows the last `)`.
fn process_state(stat: &str) -> Option<char> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// Whether the process was started with `config` as an argument: only then is it our node, and
/// not an unrelated process that reused a stale pid.
fn runs_config(pid: i32, config: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let config = config.as_os_str().as_bytes();
    let mut args = cmdline.split(|&b| b == 0);
    let ours = args.any(|a| a == config);
    if !ours {
        debug!(
            pid,
            "pid file names a process that is not this node; ignoring it"
        );
    }
    ours
}

fn send(pid: i32, signal: StopSignal) -> Result<(), ClusterError> {
    let sig = match signal {
        StopSignal::Term => Signal::SIGTERM,
        StopSignal::Kill => Signal::SIGKILL,
    };
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(ClusterError::Io {
            path: PathBuf::from(format!("/proc/{pid}")),
            source: std::io::Error::from_raw_os_error(e as i32),
        }),
    }
}

/// The last `lines` lines of a file (a node's log), reading at most its last 64 KiB.
pub fn tail(path: &Path, lines: usize) -> std::io::Result<String> {
    const MAX_TAIL_BYTES: u64 = 64 * 1024;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(MAX_TAIL_BYTES)))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_state_follows_the_last_parenthesis() {
        assert_eq!(process_state("42 (ringkv-node) S 1 42"), Some('S'));
        assert_eq!(process_state("42 (odd) name) Z 1 42"), Some('Z'));
        assert_eq!(process_state("garbage"), None);
    }

    #[test]
    fn our_own_process_is_alive_and_not_a_node() {
        let me = std::process::id() as i32;
        assert!(is_alive(me));
        assert!(!runs_config(me, Path::new("/nowhere/node-1/node.toml")));
        assert!(!is_alive(i32::MAX));
    }

    #[test]
    fn bad_pid_files_are_ignored() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("node.pid");
        for text in ["", "abc", "0", "1", "-5"] {
            std::fs::write(&p, text).expect("write");
            assert_eq!(read_pid(&p), None, "{text:?}");
        }
        std::fs::write(&p, "1234\n").expect("write");
        assert_eq!(read_pid(&p), Some(1234));
    }

    #[test]
    fn a_stale_pid_of_an_unrelated_process_is_never_signalled() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = ClusterDir::new(tmp.path()).expect("dir");
        let opts = CreateOptions {
            nodes: 1,
            rf: 1,
            base_port: 0,
            ..CreateOptions::default()
        };
        let cluster = LocalCluster::create(dir, &opts).expect("create");
        let mut sleeper = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        write_pid(&cluster.dir().node_pid(1), sleeper.id() as i32).expect("pid file");
        assert_eq!(cluster.pid(1), None);
        assert_eq!(cluster.stop_node(1, StopSignal::Kill).expect("stop"), None);
        assert!(
            matches!(sleeper.try_wait(), Ok(None)),
            "the unrelated process must still run"
        );
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }

    #[test]
    fn start_stop_and_readiness_failure_with_a_fake_node() {
        // A shell script stands in for ringkv-node: it runs until signalled and never answers.
        // It must not `exec`: the launcher recognises a node by the config path in its command line.
        let tmp = tempfile::tempdir().expect("tempdir");
        let fake = tmp.path().join("fake-node");
        std::fs::write(&fake, "#!/bin/sh\necho fake node starting \"$@\"\ntrap 'exit 0' TERM\nwhile :; do sleep 0.1; done\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let dir = ClusterDir::new(tmp.path().join("c")).expect("dir");
        let opts = CreateOptions {
            nodes: 2,
            rf: 1,
            base_port: 0,
            ..CreateOptions::default()
        };
        let cluster = LocalCluster::create(dir, &opts)
            .expect("create")
            .with_node_bin(&fake)
            .into_guard();
        let started = cluster.start_all().expect("start");
        assert!(started
            .iter()
            .all(|(_, s)| matches!(s, Started::Spawned(_))));
        let Some(pid1) = cluster.pid(1) else {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", started[0].1.pid()));
            panic!(
                "node 1 does not run: {stat:?}; log: {}",
                cluster.log_tail(1, 10)
            );
        };
        assert_eq!(
            cluster.start_node(1).expect("again"),
            Started::AlreadyRunning(pid1)
        );

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let err = rt
            .block_on(cluster.wait_ready(Duration::from_millis(600)))
            .expect_err("never ready");
        match &err {
            ClusterError::NotReady { log_tail, .. } => {
                assert!(log_tail.contains("fake node starting"), "{log_tail}")
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(err.exit_code(), 4);

        assert_eq!(
            cluster.stop_node(2, StopSignal::Kill).expect("kill"),
            Some(cluster_pid_of(&started, 2))
        );
        assert_eq!(cluster.pid(2), None);
        assert!(!cluster.dir().node_pid(2).exists());
        let err = rt
            .block_on(cluster.wait_nodes_ready(&[1, 2], Duration::from_secs(5)))
            .expect_err("2 is down");
        assert!(err.to_string().contains("not running"), "{err}");
        let stopped = cluster.stop_all().expect("stop all");
        assert_eq!(stopped, vec![(1, pid1)]);
        assert!(!is_alive(pid1));
    }

    fn cluster_pid_of(started: &[(NodeId, Started)], id: NodeId) -> i32 {
        started
            .iter()
            .find(|(n, _)| *n == id)
            .map(|(_, s)| s.pid())
            .expect("started")
    }
}
