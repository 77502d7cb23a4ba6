//! The cluster directory of a local cluster: `cluster.toml` (what the cluster is), the CA and
//! client certificates, and per node its `node.toml`, certificate, data, log and pid file. This
//! module plans a layout, writes it, loads it back and turns it into a [`ClientConfig`].

use crate::client::ClientConfig;
use crate::error::ClientError;
use proto::tls::{generate_ca, issue, write_pem, Role, TlsMaterial};
use ring::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The version marker of `cluster.toml` this code writes and reads.
pub const CLUSTER_FORMAT: u32 = 1;
/// Environment variable naming the cluster directory (the `--cluster-dir` flag wins over it).
pub const ENV_CLUSTER_DIR: &str = "RINGKV_CLUSTER_DIR";
/// File name of the cluster description inside the cluster directory.
pub const CLUSTER_FILE: &str = "cluster.toml";
/// Racks per datacenter a generated layout spreads nodes over.
pub const MAX_RACKS_PER_DC: usize = 3;

/// Why a cluster directory could not be planned, written or read.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A client-side error (most often [`ClientError::Config`]: a missing or broken file).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The requested layout is impossible (for example more replicas than nodes in a datacenter).
    #[error("invalid cluster layout: {0}")]
    Layout(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Generating certificates failed.
    #[error("certificate generation failed: {0}")]
    Tls(String),
    /// The `ringkv-node` binary could not be found.
    #[error("{0}")]
    NodeBinary(String),
    /// The cluster has no node with this id.
    #[error("no node {id} in this cluster (its nodes are {known})")]
    UnknownNode {
        /// The id asked for.
        id: NodeId,
        /// The ids that exist, comma separated.
        known: String,
    },
    /// A node did not start answering, or did not see its peers up, in time.
    #[error("node {node} did not become ready: {reason} (log: {})", log.display())]
    NotReady {
        /// The first node found not ready.
        node: NodeId,
        /// What was wrong with it.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log file.
        log_tail: String,
    },
    /// A node process survived SIGKILL.
    #[error("node {node} (pid {pid}) is still running after SIGKILL")]
    StillRunning {
        /// The node.
        node: NodeId,
        /// Its process id.
        pid: i32,
    },
}

impl ClusterError {
    /// The CLI exit status for this error: a bad layout or node id is a usage error (2), a
    /// cluster that does not become ready is unavailable (4), a missing node binary is a
    /// configuration error (9), client errors keep their own codes, anything else is 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClusterError::Client(e) => e.exit_code(),
            ClusterError::Layout(_) | ClusterError::UnknownNode { .. } => 2,
            ClusterError::NotReady { .. } => 4,
            ClusterError::NodeBinary(_) => 9,
            ClusterError::Io { .. } | ClusterError::Tls(_) | ClusterError::StillRunning { .. } => 1,
        }
    }

    /// The stable name of the error kind (used in `--json` output).
    pub fn kind(&self) -> &'static str {
        match self {
            ClusterError::Client(e) => e.kind(),
            ClusterError::Layout(_) => "Layout",
            ClusterError::Io { .. } => "Io",
            ClusterError::Tls(_) => "Tls",
            ClusterError::NodeBinary(_) => "NodeBinary",
            ClusterError::UnknownNode { .. } => "UnknownNode",
            ClusterError::NotReady { .. } => "NotReady",
            ClusterError::StillRunning { .. } => "StillRunning",
        }
    }

    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
        move |source| ClusterError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Replica placement, in the same TOML shape as the node's `[replication]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", tag = "strategy")]
pub enum Replication {
    /// `strategy = "simple"`: `rf` distinct nodes clockwise.
    Simple {
        /// Replication factor.
        rf: usize,
    },
    /// `strategy = "per-datacenter"`: a replication factor per datacenter.
    PerDatacenter {
        /// Datacenter name to replication factor.
        datacenters: BTreeMap<String, usize>,
    },
}

impl Replication {
    /// The ring strategy this describes.
    pub fn strategy(&self) -> ring::Strategy {
        match self {
            Replication::Simple { rf } => ring::Strategy::Simple { rf: *rf },
            Replication::PerDatacenter { datacenters } => ring::Strategy::PerDatacenter {
                rf: datacenters.clone(),
            },
        }
    }
}

impl std::fmt::Display for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Replication::Simple { rf } => write!(f, "simple, rf {rf}"),
            Replication::PerDatacenter { datacenters } => {
                let dcs: Vec<String> = datacenters
                    .iter()
                    .map(|(dc, rf)| format!("{dc}={rf}"))
                    .collect();
                write!(f, "per-datacenter, rf {}", dcs.join(" "))
            }
        }
    }
}

/// When acknowledged writes reach the disk: the node's `[durability] mode` (node/src/config.rs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilityMode {
    /// The write-ahead log is written before a write is acknowledged and fsynced every second:
    /// a node process crash loses nothing, a machine crash can lose the last second of writes
    /// on that replica.
    #[default]
    Periodic,
    /// Every batch of writes is fsynced before any of them is acknowledged (group commit).
    Sync,
}

impl DurabilityMode {
    /// Its name on the command line and in the TOML files.
    pub fn name(self) -> &'static str {
        match self {
            DurabilityMode::Periodic => "periodic",
            DurabilityMode::Sync => "sync",
        }
    }
}

impl std::fmt::Display for DurabilityMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The `[durability]` table, in the same shape in `cluster.toml` and in each `node.toml`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Durability {
    /// `periodic` or `sync`.
    pub mode: DurabilityMode,
}

/// The client's certificate files, relative to the cluster directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClientFiles {
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// The client certificate (client role).
    pub cert: PathBuf,
    /// The client private key.
    pub key: PathBuf,
}

/// One node of a local cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeEntry {
    /// Node id (also names its directory, `node-<id>`).
    pub id: NodeId,
    /// QUIC address peers and clients use.
    pub address: SocketAddr,
    /// Datacenter name.
    pub datacenter: String,
    /// Rack name.
    pub rack: String,
    /// Virtual nodes (tokens) the node owns.
    pub vnodes: u32,
}

/// `cluster.toml`: everything the CLI and the launcher need to know about a local cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterFile {
    /// Version marker of this file's format ([`CLUSTER_FORMAT`]).
    pub format: u32,
    /// Cluster name (part of the CA's name).
    pub name: String,
    /// Replica placement.
    pub replication: Replication,
    /// When writes reach the disk; every node's `node.toml` says the same. Absent in files
    /// written before the setting existed, which therefore mean `periodic`.
    #[serde(default)]
    pub durability: Durability,
    /// The client's certificate files.
    pub client: ClientFiles,
    /// Every node, ordered by id.
    pub nodes: Vec<NodeEntry>,
}

impl ClusterFile {
    /// The node with this id, or [`ClusterError::UnknownNode`].
    pub fn node(&self, id: NodeId) -> Result<&NodeEntry, ClusterError> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| ClusterError::UnknownNode {
                id,
                known: self
                    .nodes
                    .iter()
                    .map(|n| n.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Every node's address, ordered by id.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.address).collect()
    }
}

/// What `ringkv cluster up` creates when the directory holds no cluster yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    /// Cluster name. Default "ringkv".
    pub name: String,
    /// Number of nodes, ids 1..=nodes. Default 3.
    pub nodes: usize,
    /// Number of datacenters `dc1..dcN`; nodes are spread over them round robin. Default 1.
    pub datacenters: usize,
    /// Replication factor: of the cluster with one datacenter, of every datacenter otherwise.
    /// Default 3.
    pub rf: usize,
    /// Virtual nodes per node. Default 64.
    pub vnodes: u32,
    /// Node `id` listens on 127.0.0.1:(base_port + id); 0 picks free ports. Default 7400.
    pub base_port: u16,
    /// When writes reach the disk on every node. Default periodic.
    pub durability: DurabilityMode,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            name: "ringkv".into(),
            nodes: 3,
            datacenters: 1,
            rf: 3,
            vnodes: 64,
            base_port: 7400,
            durability: DurabilityMode::Periodic,
        }
    }
}

/// Plans a cluster: node ids, addresses, datacenters, racks and replication, checked for
/// consistency. `ports[i]` is the port of node `i + 1`. Pure: writes nothing.
pub fn plan(opts: &CreateOptions, ports: &[u16]) -> Result<ClusterFile, ClusterError> {
    validate(opts)?;
    if ports.len() != opts.nodes {
        return Err(ClusterError::Layout(format!(
            "{} ports for {} nodes",
            ports.len(),
            opts.nodes
        )));
    }
    let mut per_dc_count = vec![0usize; opts.datacenters];
    let mut nodes = Vec::with_capacity(opts.nodes);
    for (index, &port) in ports.iter().enumerate() {
        let dc = index % opts.datacenters;
        let rack = per_dc_count[dc] % MAX_RACKS_PER_DC;
        per_dc_count[dc] += 1;
        nodes.push(NodeEntry {
            id: node_id(index)?,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            datacenter: format!("dc{}", dc + 1),
            rack: format!("rack{}", rack + 1),
            vnodes: opts.vnodes,
        });
    }
    let replication = if opts.datacenters == 1 {
        Replication::Simple { rf: opts.rf }
    } else {
        Replication::PerDatacenter {
            datacenters: (1..=opts.datacenters)
                .map(|d| (format!("dc{d}"), opts.rf))
                .collect(),
        }
    };
    let file = ClusterFile {
        format: CLUSTER_FORMAT,
        name: opts.name.clone(),
        replication,
        durability: Durability {
            mode: opts.durability,
        },
        client: ClientFiles {
            ca: "ca.pem".into(),
            cert: "client.pem".into(),
            key: "client.key".into(),
        },
        nodes,
    };
    // The ring is the authority on what a node will accept; refuse here what it would refuse.
    ring_of(&file).map_err(|e| ClusterError::Layout(e.to_string()))?;
    Ok(file)
}

fn node_id(index: usize) -> Result<NodeId, ClusterError> {
    NodeId::try_from(index + 1)
        .map_err(|_| ClusterError::Layout(format!("too many nodes: {}", index + 1)))
}

/// The ring a cluster file describes.
pub fn ring_of(file: &ClusterFile) -> Result<ring::Ring, ring::RingError> {
    let members = file
        .nodes
        .iter()
        .map(|n| ring::Member {
            id: n.id,
            datacenter: n.datacenter.clone(),
            rack: n.rack.clone(),
            tokens: ring::tokens_for(n.id, n.vnodes),
        })
        .collect();
    ring::Ring::new(members, file.replication.strategy())
}

fn validate(opts: &CreateOptions) -> Result<(), ClusterError> {
    let bad = |m: String| Err(ClusterError::Layout(m));
    if opts.name.trim().is_empty() {
        return bad("the cluster name is empty".into());
    }
    if opts.nodes == 0 {
        return bad("--nodes must be at least 1".into());
    }
    if opts.vnodes == 0 {
        return bad("--vnodes must be at least 1".into());
    }
    if opts.rf == 0 {
        return bad("--rf must be at least 1".into());
    }
    if opts.datacenters == 0 || opts.datacenters > opts.nodes {
        return bad(format!(
            "--datacenters {} with --nodes {}: every datacenter needs at least one node",
            opts.datacenters, opts.nodes
        ));
    }
    if opts.base_port != 0 && usize::from(opts.base_port) + opts.nodes > usize::from(u16::MAX) {
        return bad(format!(
            "--base-port {} + {} nodes runs past port 65535",
            opts.base_port, opts.nodes
        ));
    }
    if opts.datacenters == 1 && opts.rf > opts.nodes {
        return bad(format!(
            "--rf {} exceeds --nodes {}: every key needs {} distinct nodes",
            opts.rf, opts.nodes, opts.rf
        ));
    }
    // Round robin gives the last datacenters the fewest nodes.
    let smallest = opts.nodes / opts.datacenters;
    if opts.datacenters > 1 && smallest < opts.rf {
        let dc = opts.datacenters;
        return bad(format!(
            "datacenter dc{dc} gets only {smallest} node(s) (--nodes {} over --datacenters {dc}) but --rf {} asks \
             for {} replicas in every datacenter; use --nodes {} or more, or a smaller --rf",
            opts.nodes,
            opts.rf,
            opts.rf,
            opts.rf * dc
        ));
    }
    Ok(())
}

/// Picks `n` distinct free UDP ports on 127.0.0.1 (binds port 0, reads the port, releases it).
/// Another process may take a port before the node binds it; tests accept that small race.
pub fn pick_free_udp_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let sockets = (0..n)
        .map(|_| UdpSocket::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    sockets
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect()
}

/// The node's configuration file, in the schema `ringkv-node` reads (node/src/config.rs,
/// `NodeConfig`). Only the keys the launcher sets; the node's defaults cover the rest. Paths are
/// relative to the node's directory, so a cluster directory can be moved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeToml {
    /// Cluster name.
    pub cluster_name: String,
    /// This node's id.
    pub node_id: NodeId,
    /// RocksDB directory.
    pub data_dir: PathBuf,
    /// CA, node certificate and key.
    pub tls: NodeTlsFiles,
    /// Replica placement.
    pub replication: Replication,
    /// When writes reach the disk.
    pub durability: Durability,
    /// Bounds on the node's threads.
    pub limits: NodeTomlLimits,
    /// Prometheus metrics over HTTP: the node's own port number, over TCP.
    pub metrics_listen: SocketAddr,
    /// Nodes to learn the ring from (a node added to a running cluster); empty for the
    /// founding nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<SocketAddr>,
    /// Every member (for an added node: itself only).
    pub members: Vec<NodeTomlMember>,
}

/// The `[limits]` table of a node configuration (only what `cluster up` sets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeTomlLimits {
    /// Async runtime worker threads.
    pub runtime_threads: usize,
}

/// Runtime threads for each of `nodes` nodes sharing this machine: its cores split between
/// them, at least one each. (Every node of a local cluster runs here; more runtime threads than
/// cores only adds context switches between them.)
pub fn local_runtime_threads(nodes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / nodes.max(1)).max(1)
}

/// The `[tls]` table of a node configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeTlsFiles {
    /// CA certificate.
    pub ca: PathBuf,
    /// Node certificate.
    pub cert: PathBuf,
    /// Node private key.
    pub key: PathBuf,
}

/// One `[[members]]` entry of a node configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeTomlMember {
    /// Node id.
    pub id: NodeId,
    /// QUIC address.
    pub address: SocketAddr,
    /// Datacenter.
    pub datacenter: String,
    /// Rack.
    pub rack: String,
    /// Virtual nodes.
    pub vnodes: u32,
}

impl NodeToml {
    /// The configuration of node `id` of `file`.
    pub fn for_node(file: &ClusterFile, id: NodeId) -> NodeToml {
        NodeToml {
            cluster_name: file.name.clone(),
            node_id: id,
            data_dir: "data".into(),
            tls: NodeTlsFiles {
                ca: Path::new("..").join(&file.client.ca),
                cert: "node.pem".into(),
                key: "node.key".into(),
            },
            replication: file.replication.clone(),
            durability: file.durability,
            limits: NodeTomlLimits {
                runtime_threads: local_runtime_threads(file.nodes.len()),
            },
            metrics_listen: file
                .nodes
                .iter()
                .find(|n| n.id == id)
                .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |n| n.address),
            seeds: Vec::new(),
            members: file
                .nodes
                .iter()
                .map(|n| NodeTomlMember {
                    id: n.id,
                    address: n.address,
                    datacenter: n.datacenter.clone(),
                    rack: n.rack.clone(),
                    vnodes: n.vnodes,
                })
                .collect(),
        }
    }
}

/// A cluster directory and the paths inside it. Holds no open files; cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDir {
    root: PathBuf,
}

impl ClusterDir {
    /// The directory at `root` (made absolute against the current directory, because node
    /// processes and pid checks use these paths from elsewhere).
    pub fn new(root: impl AsRef<Path>) -> Result<ClusterDir, ClientError> {
        let root = root.as_ref();
        let root = std::path::absolute(root).map_err(|e| {
            ClientError::Config(format!("cluster directory {}: {e}", root.display()))
        })?;
        Ok(ClusterDir { root })
    }

    /// The directory the CLI uses: `flag` when given, else `$RINGKV_CLUSTER_DIR`, else
    /// `$HOME/.ringkv/cluster`.
    pub fn resolve(flag: Option<&Path>) -> Result<ClusterDir, ClientError> {
        if let Some(dir) = flag {
            return ClusterDir::new(dir);
        }
        if let Some(dir) = std::env::var_os(ENV_CLUSTER_DIR).filter(|d| !d.is_empty()) {
            return ClusterDir::new(PathBuf::from(dir));
        }
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => ClusterDir::new(PathBuf::from(home).join(".ringkv").join("cluster")),
            None => Err(ClientError::Config(format!(
                "no cluster directory: pass --cluster-dir DIR or set {ENV_CLUSTER_DIR} ($HOME is not set)"
            ))),
        }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `cluster.toml`.
    pub fn cluster_file(&self) -> PathBuf {
        self.root.join(CLUSTER_FILE)
    }
    /// The CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    /// The CA private key (mode 0600).
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }
    /// A node's directory, `node-<id>`.
    pub fn node_dir(&self, id: NodeId) -> PathBuf {
        self.root.join(format!("node-{id}"))
    }
    /// A node's configuration file.
    pub fn node_config(&self, id: NodeId) -> PathBuf {
        self.node_dir(id).join("node.toml")
    }
    /// A node's data directory.
    pub fn node_data(&self, id: NodeId) -> PathBuf {
        self.node_dir(id).join("data")
    }
    /// A node's log file (stdout and stderr, appended across restarts).
    pub fn node_log(&self, id: NodeId) -> PathBuf {
        self.node_dir(id).join("node.log")
    }
    /// A node's pid file.
    pub fn node_pid(&self, id: NodeId) -> PathBuf {
        self.node_dir(id).join("node.pid")
    }

    /// Whether a `cluster.toml` exists here.
    pub fn exists(&self) -> bool {
        self.cluster_file().is_file()
    }

    /// Reads `cluster.toml`. Missing or broken is [`ClientError::Config`], naming the file.
    pub fn load(&self) -> Result<ClusterFile, ClientError> {
        let path = self.cluster_file();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ClientError::Config(format!(
                "cannot read {}: {e}; run `ringkv cluster up` to create a local cluster, or pass \
                 --cluster-dir DIR (or set {ENV_CLUSTER_DIR}) to use another one",
                path.display()
            ))
        })?;
        parse_cluster_file(&text).map_err(|reason| {
            ClientError::Config(format!(
                "{} is not a usable cluster file: {reason}; recreate it with `ringkv cluster down --purge` \
                 and `ringkv cluster up`",
                path.display()
            ))
        })
    }

    /// The client's TLS material named by `file`.
    pub fn client_tls(&self, file: &ClusterFile) -> Result<TlsMaterial, ClientError> {
        let c = &file.client;
        TlsMaterial::load(
            &self.root.join(&c.ca),
            &self.root.join(&c.cert),
            &self.root.join(&c.key),
        )
        .map_err(|e| {
            ClientError::Config(format!(
                "client certificate of {}: {e}",
                self.root.display()
            ))
        })
    }

    /// A client configuration for this cluster: every node is a seed, TLS is the client
    /// certificate.
    pub fn client_config(
        &self,
        timeout: Duration,
        datacenter: Option<String>,
    ) -> Result<ClientConfig, ClientError> {
        let file = self.load()?;
        let mut cfg = ClientConfig::new(file.addresses(), self.client_tls(&file)?, timeout);
        cfg.datacenter = datacenter;
        Ok(cfg)
    }

    /// Creates a new cluster here: plans it (picking free ports when `base_port` is 0), then
    /// writes the CA, client and node certificates, every `node.toml` and, last, `cluster.toml`.
    /// The directory must be absent or empty; on failure what was written is removed again.
    pub fn create(&self, opts: &CreateOptions) -> Result<ClusterFile, ClusterError> {
        validate(opts)?;
        let ports = if opts.base_port == 0 {
            pick_free_udp_ports(opts.nodes)
                .map_err(ClusterError::io(Path::new("127.0.0.1:0 (udp)")))?
        } else {
            (1..=opts.nodes)
                .map(|i| {
                    opts.base_port
                        .saturating_add(u16::try_from(i).unwrap_or(u16::MAX))
                })
                .collect()
        };
        let file = plan(opts, &ports)?;
        self.prepare_root()?;
        let mut written = Written::default();
        match self.write_all(&file, &mut written) {
            Ok(()) => Ok(file),
            Err(e) => {
                written.undo();
                Err(e)
            }
        }
    }

    fn prepare_root(&self) -> Result<(), ClusterError> {
        if self.exists() {
            return Err(ClientError::Config(format!(
                "a cluster already exists at {}; `ringkv cluster up` starts it, `ringkv cluster down --purge` removes it",
                self.root.display()
            ))
            .into());
        }
        match std::fs::read_dir(&self.root) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(ClientError::Config(format!(
                        "{} is not empty and holds no ringkv cluster; choose another --cluster-dir",
                        self.root.display()
                    ))
                    .into());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.root).map_err(ClusterError::io(&self.root))?;
            }
            Err(e) => return Err(ClusterError::io(&self.root)(e)),
        }
        // The directory holds private keys.
        set_mode(&self.root, 0o700)
    }

    fn write_all(&self, file: &ClusterFile, written: &mut Written) -> Result<(), ClusterError> {
        let tls_err = |e: proto::tls::TlsError| ClusterError::Tls(e.to_string());
        let ca = generate_ca(&file.name).map_err(tls_err)?;
        written.pem(&self.ca_cert(), &ca.cert_pem, false)?;
        written.pem(&self.ca_key(), &ca.key_pem, true)?;
        let client = issue(&ca, &file.name, Role::Client, "client").map_err(tls_err)?;
        written.pem(&self.root.join(&file.client.cert), &client.cert_pem, false)?;
        written.pem(&self.root.join(&file.client.key), &client.key_pem, true)?;
        for node in &file.nodes {
            let dir = self.node_dir(node.id);
            written.dir(&dir)?;
            written.dir(&self.node_data(node.id))?;
            let cert = issue(&ca, &file.name, Role::Node, &format!("node-{}", node.id))
                .map_err(tls_err)?;
            written.pem(&dir.join("node.pem"), &cert.cert_pem, false)?;
            written.pem(&dir.join("node.key"), &cert.key_pem, true)?;
            let text = toml::to_string(&NodeToml::for_node(file, node.id))
                .map_err(|e| ClusterError::Layout(format!("cannot encode node.toml: {e}")))?;
            written.text(
                &self.node_config(node.id),
                &format!("{NODE_TOML_HEADER}{text}"),
            )?;
        }
        let text = toml::to_string(file)
            .map_err(|e| ClusterError::Layout(format!("cannot encode cluster.toml: {e}")))?;
        written.text(
            &self.cluster_file(),
            &format!("{CLUSTER_TOML_HEADER}{text}"),
        )
    }
}

impl ClusterDir {
    /// Adds a node to a local cluster's files: the next free id, a free port on 127.0.0.1, a
    /// certificate from the cluster CA, and a `node.toml` that learns the ring from `seeds`
    /// (the running nodes). Returns the new entry; `cluster.toml` lists it from now on.
    pub fn add_node(
        &self,
        file: &mut ClusterFile,
        seeds: Vec<SocketAddr>,
    ) -> Result<NodeEntry, ClusterError> {
        let tls_err = |e: proto::tls::TlsError| ClusterError::Tls(e.to_string());
        let id = file.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let used: Vec<u16> = file.nodes.iter().map(|n| n.address.port()).collect();
        let port = loop {
            let p = pick_free_udp_ports(1)
                .map_err(ClusterError::io(Path::new("127.0.0.1:0 (udp)")))?[0];
            if !used.contains(&p) {
                break p;
            }
        };
        let template = file.nodes.last().cloned();
        let entry = NodeEntry {
            id,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            datacenter: template
                .as_ref()
                .map_or_else(|| "dc1".into(), |t| t.datacenter.clone()),
            rack: template
                .as_ref()
                .map_or_else(|| "rack1".into(), |t| t.rack.clone()),
            vnodes: template.as_ref().map_or(64, |t| t.vnodes),
        };
        let read = |path: PathBuf| std::fs::read_to_string(&path).map_err(ClusterError::io(&path));
        let ca = proto::tls::CaBundle {
            cert_pem: read(self.ca_cert())?,
            key_pem: read(self.ca_key())?,
        };
        let dir = self.node_dir(id);
        std::fs::create_dir_all(self.node_data(id)).map_err(ClusterError::io(&dir))?;
        let cert = issue(&ca, &file.name, Role::Node, &format!("node-{id}")).map_err(tls_err)?;
        let mut written = Written::default();
        written.pem(&dir.join("node.pem"), &cert.cert_pem, false)?;
        written.pem(&dir.join("node.key"), &cert.key_pem, true)?;
        let mut with_new = file.clone();
        with_new.nodes.push(entry.clone());
        let mut toml_cfg = NodeToml::for_node(&with_new, id);
        toml_cfg.members.retain(|m| m.id == id);
        toml_cfg.seeds = seeds;
        let text = toml::to_string(&toml_cfg)
            .map_err(|e| ClusterError::Layout(format!("cannot encode node.toml: {e}")))?;
        written.text(&self.node_config(id), &format!("{NODE_TOML_HEADER}{text}"))?;
        self.save_file(&with_new)?;
        *file = with_new;
        Ok(entry)
    }

    /// Rewrites `cluster.toml` (after nodes were added or removed).
    pub fn save_file(&self, file: &ClusterFile) -> Result<(), ClusterError> {
        let text = toml::to_string(file)
            .map_err(|e| ClusterError::Layout(format!("cannot encode cluster.toml: {e}")))?;
        let path = self.cluster_file();
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, format!("{CLUSTER_TOML_HEADER}{text}"))
            .map_err(ClusterError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(ClusterError::io(&path))
    }
}

const NODE_TOML_HEADER: &str = "# ringkv-node configuration written by `ringkv cluster up`.\n\
# Keys are documented in node/src/config.rs; paths are relative to this file's directory.\n\n";
const CLUSTER_TOML_HEADER: &str = "# A local ringkv cluster, written by `ringkv cluster up`.\n\
# Paths are relative to this directory. `format` is the version of this file's layout.\n\n";

/// Parses `cluster.toml` text, checking the format marker before the rest so a file from a newer
/// version says so instead of failing on an unknown field.
pub fn parse_cluster_file(text: &str) -> Result<ClusterFile, String> {
    #[derive(Deserialize)]
    struct Probe {
        format: Option<u32>,
    }
    let probe: Probe = toml::from_str(text).map_err(|e| e.to_string())?;
    match probe.format {
        Some(CLUSTER_FORMAT) => {}
        Some(other) => {
            return Err(format!(
                "format {other} is not supported (this ringkv reads format {CLUSTER_FORMAT})"
            ))
        }
        None => return Err("no `format` marker".into()),
    }
    let file: ClusterFile = toml::from_str(text).map_err(|e| e.to_string())?;
    if file.nodes.is_empty() {
        return Err("no nodes".into());
    }
    Ok(file)
}

/// Files and directories written so far by `create`, removed again if it fails.
#[derive(Default)]
struct Written {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Written {
    fn dir(&mut self, path: &Path) -> Result<(), ClusterError> {
        std::fs::create_dir(path).map_err(ClusterError::io(path))?;
        self.dirs.push(path.to_path_buf());
        Ok(())
    }

    fn pem(&mut self, path: &Path, pem: &str, private: bool) -> Result<(), ClusterError> {
        write_pem(path, pem, private).map_err(ClusterError::io(path))?;
        self.files.push(path.to_path_buf());
        Ok(())
    }

    /// Writes through a temporary file and a rename, so a reader never sees half a file.
    fn text(&mut self, path: &Path, text: &str) -> Result<(), ClusterError> {
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(ClusterError::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(ClusterError::io(path))?;
        self.files.push(path.to_path_buf());
        Ok(())
    }

    fn undo(self) {
        for f in self.files.iter().rev() {
            let _ = std::fs::remove_file(f);
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ClusterError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(ClusterError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(nodes: usize, datacenters: usize, rf: usize) -> CreateOptions {
        CreateOptions {
            nodes,
            datacenters,
            rf,
            ..CreateOptions::default()
        }
    }

    fn ports(n: usize) -> Vec<u16> {
        (1..=n).map(|i| 7400 + i as u16).collect()
    }

    #[test]
    fn one_datacenter_is_simple_with_racks_round_robin() {
        let file = plan(&opts(4, 1, 3), &ports(4)).expect("valid");
        assert_eq!(file.replication, Replication::Simple { rf: 3 });
        let racks: Vec<&str> = file.nodes.iter().map(|n| n.rack.as_str()).collect();
        assert_eq!(racks, ["rack1", "rack2", "rack3", "rack1"]);
        assert!(file.nodes.iter().all(|n| n.datacenter == "dc1"));
        assert_eq!(
            file.nodes[0].address,
            "127.0.0.1:7401".parse().expect("addr")
        );
        assert_eq!(
            file.nodes.iter().map(|n| n.id).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
    }

    #[test]
    fn datacenters_get_nodes_round_robin_and_an_rf_each() {
        let file = plan(&opts(6, 2, 2), &ports(6)).expect("valid");
        let dcs: Vec<&str> = file.nodes.iter().map(|n| n.datacenter.as_str()).collect();
        assert_eq!(dcs, ["dc1", "dc2", "dc1", "dc2", "dc1", "dc2"]);
        let racks: Vec<&str> = file.nodes.iter().map(|n| n.rack.as_str()).collect();
        assert_eq!(
            racks,
            ["rack1", "rack1", "rack2", "rack2", "rack3", "rack3"]
        );
        let expected: BTreeMap<String, usize> =
            [("dc1".to_string(), 2), ("dc2".to_string(), 2)].into();
        assert_eq!(
            file.replication,
            Replication::PerDatacenter {
                datacenters: expected
            }
        );
    }

    #[test]
    fn impossible_layouts_are_refused_with_the_numbers() {
        let err = plan(&opts(4, 2, 3), &ports(4)).expect_err("2 nodes per dc < rf 3");
        let msg = err.to_string();
        assert!(
            msg.contains("dc2") && msg.contains("--rf 3") && msg.contains("--nodes 6"),
            "{msg}"
        );
        assert_eq!(err.exit_code(), 2);
        let msg = plan(&opts(2, 1, 3), &ports(2))
            .expect_err("rf > nodes")
            .to_string();
        assert!(msg.contains("--rf 3 exceeds --nodes 2"), "{msg}");
        assert!(
            plan(&opts(2, 3, 1), &ports(2)).is_err(),
            "more datacenters than nodes"
        );
        assert!(plan(&opts(0, 1, 1), &ports(0)).is_err(), "no nodes");
        assert!(plan(&opts(3, 1, 0), &ports(3)).is_err(), "rf 0");
        let high = CreateOptions {
            base_port: 65534,
            ..opts(3, 1, 3)
        };
        assert!(plan(&high, &ports(3)).is_err(), "ports past 65535");
    }

    #[test]
    fn create_writes_certificates_configs_and_a_loadable_cluster_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = ClusterDir::new(tmp.path().join("c")).expect("dir");
        let file = dir
            .create(&CreateOptions {
                base_port: 0,
                ..opts(3, 1, 2)
            })
            .expect("create");
        assert_eq!(dir.load().expect("load"), file);
        let ports: std::collections::HashSet<u16> =
            file.nodes.iter().map(|n| n.address.port()).collect();
        assert_eq!(ports.len(), 3, "free ports are distinct");
        for path in [
            dir.ca_cert(),
            dir.ca_key(),
            dir.root().join("client.pem"),
            dir.root().join("client.key"),
        ] {
            assert!(path.is_file(), "{} missing", path.display());
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.ca_key())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        for n in &file.nodes {
            let text = std::fs::read_to_string(dir.node_config(n.id)).expect("node.toml");
            let cfg: NodeToml = toml::from_str(&text).expect("node.toml parses");
            assert_eq!(cfg, NodeToml::for_node(&file, n.id));
            assert!(
                text.contains("strategy = \"simple\"") && text.contains("node-id"),
                "{text}"
            );
            assert!(dir.node_data(n.id).is_dir());
            assert!(dir.node_dir(n.id).join("node.key").is_file());
            let node_tls = TlsMaterial::load(
                &dir.node_dir(n.id).join(&cfg.tls.ca),
                &dir.node_dir(n.id).join(&cfg.tls.cert),
                &dir.node_dir(n.id).join(&cfg.tls.key),
            );
            assert!(
                node_tls.is_ok(),
                "node TLS paths resolve from the node directory"
            );
        }
        let cfg = dir
            .client_config(Duration::from_secs(1), None)
            .expect("client config");
        assert_eq!(cfg.seeds, file.addresses());
        let again = dir.create(&opts(3, 1, 2)).expect_err("already exists");
        assert_eq!(again.exit_code(), 9);
    }

    #[test]
    fn per_datacenter_node_toml_has_the_node_schema() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = ClusterDir::new(tmp.path()).expect("dir");
        dir.create(&CreateOptions {
            base_port: 0,
            ..opts(4, 2, 2)
        })
        .expect("create");
        let text = std::fs::read_to_string(dir.node_config(2)).expect("node.toml");
        let value: toml::Table = toml::from_str(&text).expect("toml");
        let replication = value["replication"].as_table().expect("table");
        assert_eq!(replication["strategy"].as_str(), Some("per-datacenter"));
        assert_eq!(replication["datacenters"]["dc2"].as_integer(), Some(2));
        let members = value["members"].as_array().expect("members");
        assert_eq!(members.len(), 4);
        assert_eq!(members[1]["datacenter"].as_str(), Some("dc2"));
        assert_eq!(value["node-id"].as_integer(), Some(2));
        assert_eq!(value["tls"]["ca"].as_str(), Some("../ca.pem"));
        // Four nodes share this machine's cores: at least one runtime thread each, never more
        // than the machine has.
        let threads = value["limits"]["runtime-threads"]
            .as_integer()
            .expect("threads");
        assert_eq!(threads as usize, local_runtime_threads(4));
        assert!(threads >= 1);
        assert_eq!(local_runtime_threads(1_000), 1);
    }

    #[test]
    fn durability_is_kept_in_the_cluster_file_and_rendered_into_every_node_toml() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = ClusterDir::new(tmp.path()).expect("dir");
        let file = dir
            .create(&CreateOptions {
                base_port: 0,
                durability: DurabilityMode::Sync,
                ..opts(3, 1, 3)
            })
            .expect("create");
        assert_eq!(file.durability.mode, DurabilityMode::Sync);
        assert_eq!(
            dir.load().expect("load").durability.mode,
            DurabilityMode::Sync
        );
        for n in &file.nodes {
            let text = std::fs::read_to_string(dir.node_config(n.id)).expect("node.toml");
            let value: toml::Table = toml::from_str(&text).expect("toml");
            assert_eq!(value["durability"]["mode"].as_str(), Some("sync"), "{text}");
        }
        // The default, and a cluster.toml written before the setting existed, are periodic.
        let file = plan(&opts(3, 1, 3), &ports(3)).expect("valid");
        assert_eq!(file.durability.mode, DurabilityMode::Periodic);
        let node = toml::to_string(&NodeToml::for_node(&file, 1)).expect("encode");
        assert!(node.contains("[durability]\nmode = \"periodic\""), "{node}");
        let old = toml::to_string(&file)
            .expect("encode")
            .replace("[durability]\nmode = \"periodic\"\n", "");
        assert!(!old.contains("durability"), "{old}");
        assert_eq!(parse_cluster_file(&old).expect("old file"), file);
    }

    #[test]
    fn missing_broken_or_newer_cluster_files_name_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = ClusterDir::new(tmp.path()).expect("dir");
        let msg = dir.load().expect_err("missing").to_string();
        assert!(
            msg.contains("cluster.toml") && msg.contains("ringkv cluster up"),
            "{msg}"
        );
        std::fs::write(dir.cluster_file(), "format = [").expect("write");
        let err = dir.load().expect_err("broken");
        assert_eq!(err.exit_code(), 9);
        assert!(err.to_string().contains("cluster.toml"), "{err}");
        std::fs::write(dir.cluster_file(), "format = 2\nwhatever = 1\n").expect("write");
        let msg = dir.load().expect_err("newer").to_string();
        assert!(msg.contains("format 2 is not supported"), "{msg}");
    }

    #[test]
    fn refuses_a_non_empty_foreign_directory_and_leaves_it_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("notes.txt"), "mine").expect("write");
        let dir = ClusterDir::new(tmp.path()).expect("dir");
        let err = dir.create(&opts(1, 1, 1)).expect_err("not empty");
        assert!(err.to_string().contains("not empty"), "{err}");
        assert_eq!(std::fs::read_dir(tmp.path()).expect("read").count(), 1);
    }
}
