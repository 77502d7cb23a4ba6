//! The node's configuration file (TOML, kebab-case keys): identity, members, replication, TLS
//! files, timeouts and limits. Every field has a documented default where one makes sense;
//! [`NodeConfig::validate`] rejects inconsistent files with a message naming the problem.

use ring::{Member, NodeId, Strategy, Token};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {reason}")]
    Parse { path: String, reason: String },
    /// The values are inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// A whole node configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    /// Name of the cluster; part of the CA's name. Default "ringkv".
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,
    /// This node's id; must appear in `members`.
    pub node_id: NodeId,
    /// Address to bind (UDP). Default: this node's address in `members`.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Directory for the RocksDB database.
    pub data_dir: PathBuf,
    /// Certificates and keys.
    pub tls: TlsFiles,
    /// Replica placement.
    pub replication: Replication,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Bounds on concurrent work.
    #[serde(default)]
    pub limits: Limits,
    /// When writes reach the disk.
    #[serde(default)]
    pub durability: Durability,
    /// Hinted handoff.
    #[serde(default)]
    pub hints: HintsConfig,
    /// Merkle-tree anti-entropy and tombstone purge.
    #[serde(default)]
    pub anti_entropy: AntiEntropyConfig,
    /// Address of the Prometheus metrics HTTP endpoint (`GET /metrics`). Default: none.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Streaming of ranges during topology changes.
    #[serde(default)]
    pub streaming: StreamingConfig,
    /// Addresses of existing cluster nodes to learn the ring from. Empty (the default): this
    /// node founds a cluster whose initial ring is `members`. Non-empty: only this node's own
    /// entry of `members` is read (its address, datacenter, rack, tokens); the ring comes from
    /// the seeds by gossip, and the node owns data only once `ringkv cluster join` has
    /// committed it. A node that has run before always restarts from the ring it last saw.
    #[serde(default)]
    pub seeds: Vec<SocketAddr>,
    /// Every member of the cluster, this node included (see `seeds`).
    pub members: Vec<MemberConfig>,
}

/// Range streaming during topology changes (join, leave, replace).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct StreamingConfig {
    /// Most bytes (keys and values) a gaining node receives per second, over all its streams,
    /// so client requests keep their latency. Default 8 MiB/s.
    pub max_bytes_per_sec: u64,
    /// Records asked for per page. Default 1000.
    pub page_records: u32,
    /// How long a stream waits for a source that is down before skipping it (the other
    /// replicas of the range are still streamed). Default 30000.
    pub source_wait_ms: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            max_bytes_per_sec: 8 << 20,
            page_records: 1000,
            source_wait_ms: 30_000,
        }
    }
}

/// PEM files: the cluster CA certificate, this node's certificate and key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsFiles {
    /// CA certificate.
    pub ca: PathBuf,
    /// Node certificate (signed by the CA, node role).
    pub cert: PathBuf,
    /// Node private key.
    pub key: PathBuf,
}

/// Replica placement.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", tag = "strategy")]
pub enum Replication {
    /// `strategy = "simple"`: `rf` distinct nodes clockwise.
    Simple {
        /// Replication factor.
        rf: usize,
    },
    /// `strategy = "per-datacenter"`: a replication factor per datacenter, spread across racks.
    PerDatacenter {
        /// Datacenter name to replication factor.
        datacenters: BTreeMap<String, usize>,
    },
}

impl Replication {
    /// The ring strategy this describes.
    pub fn strategy(&self) -> Strategy {
        match self {
            Replication::Simple { rf } => Strategy::Simple { rf: *rf },
            Replication::PerDatacenter { datacenters } => Strategy::PerDatacenter {
                rf: datacenters.clone(),
            },
        }
    }
}

/// One member of the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MemberConfig {
    /// Unique node id.
    pub id: NodeId,
    /// QUIC address peers and clients use.
    pub address: SocketAddr,
    /// Datacenter name. Default "dc1".
    #[serde(default = "default_dc")]
    pub datacenter: String,
    /// Rack name. Default "rack1".
    #[serde(default = "default_rack")]
    pub rack: String,
    /// Number of virtual nodes when `tokens` is empty. Default 64.
    #[serde(default = "default_vnodes")]
    pub vnodes: u32,
    /// Explicit tokens (overrides `vnodes`).
    #[serde(default)]
    pub tokens: Vec<Token>,
}

impl MemberConfig {
    /// The ring member this describes (tokens derived from the id when none are given).
    pub fn member(&self) -> Member {
        let tokens = if self.tokens.is_empty() {
            ring::tokens_for(self.id, self.vnodes)
        } else {
            self.tokens.clone()
        };
        Member {
            id: self.id,
            datacenter: self.datacenter.clone(),
            rack: self.rack.clone(),
            tokens,
        }
    }
}

/// Timeouts, in milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Timeouts {
    /// Longest a coordinator waits for replicas on one request. Default 2000.
    pub request_ms: u64,
    /// Connection handshake timeout. Default 2000.
    pub connect_ms: u64,
    /// Heartbeat interval of the failure detector. Default 200.
    pub heartbeat_ms: u64,
    /// The phi-accrual failure detector's threshold: a peer is down while its suspicion level
    /// phi exceeds it. Default 8.
    pub phi_threshold: f64,
    /// Silence tolerated on top of a peer's mean heartbeat interval before phi rises. Default
    /// 300.
    pub acceptable_pause_ms: u64,
    /// A peer silent for this long is down whatever phi says (also the heartbeat timeout).
    /// Default 1000.
    pub down_after_ms: u64,
    /// Peer timestamps further ahead of local time than this are refused. Default 5000.
    pub max_clock_ahead_ms: u64,
    /// How long shutdown waits for requests in flight. Default 5000.
    pub shutdown_grace_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request_ms: 2000,
            connect_ms: 2000,
            heartbeat_ms: 200,
            phi_threshold: 8.0,
            acceptable_pause_ms: 300,
            down_after_ms: 1000,
            max_clock_ahead_ms: 5000,
            shutdown_grace_ms: 5000,
        }
    }
}

/// Bounds on concurrent work.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Limits {
    /// Client requests coordinated at once; more get `Overloaded`. Default 4096.
    pub max_client_requests: usize,
    /// Replica requests served at once; more get `Overloaded`. Default 16384.
    pub max_internal_requests: usize,
    /// Writes (and, separately, reads) queued for the storage threads. Default 8192.
    pub write_queue: usize,
    /// Async runtime worker threads. 0 (the default) means one per CPU core; several nodes
    /// sharing one machine (a local cluster) do better with fewer each, as thread hand-offs
    /// then cost context switches. At most 64. With 1, the runtime is tokio's current-thread
    /// scheduler on the node's main thread.
    pub runtime_threads: usize,
}

/// Most runtime worker threads a node may ask for.
pub const MAX_RUNTIME_THREADS: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_client_requests: 4096,
            max_internal_requests: 16384,
            write_queue: 8192,
            runtime_threads: 0,
        }
    }
}

/// When acknowledged writes reach the disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Durability {
    /// `periodic` (default): the write-ahead log is written before a write is acknowledged and
    /// fsynced every `periodic-ms`, as Cassandra's periodic commitlog: a node process crash loses
    /// nothing, a machine crash (power loss) can lose the last `periodic-ms` of acknowledged
    /// writes on that replica. `sync`: every batch of writes is fsynced before any of them is
    /// acknowledged (group commit on the storage writer thread): nothing acknowledged is lost,
    /// at the cost of an fsync per batch.
    pub mode: DurabilityMode,
    /// fsync interval in `periodic` mode, in milliseconds. Default 1000.
    pub periodic_ms: u64,
}

/// See [`Durability::mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilityMode {
    /// fsync every `periodic-ms`.
    Periodic,
    /// fsync before acknowledging.
    Sync,
}

impl Default for Durability {
    fn default() -> Self {
        Durability {
            mode: DurabilityMode::Periodic,
            periodic_ms: 1000,
        }
    }
}

/// Hinted handoff settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct HintsConfig {
    /// Store hints for replicas that miss a write. Default true.
    pub enabled: bool,
    /// Hints older than this are dropped, left to anti-entropy. Default 3 hours.
    pub window_ms: u64,
    /// Most hints kept per target; further ones are dropped and counted. Default 1,000,000.
    pub max_per_target: u64,
    /// Hints sent per replay batch. Default 256.
    pub replay_batch: usize,
    /// Most hints replayed per second per target. Default 20,000.
    pub replay_rate: u64,
    /// How often each target's hints are checked for replay. Default 500.
    pub check_interval_ms: u64,
}

impl Default for HintsConfig {
    fn default() -> Self {
        HintsConfig {
            enabled: true,
            window_ms: 3 * 3600 * 1000,
            max_per_target: 1_000_000,
            replay_batch: 256,
            replay_rate: 20_000,
            check_interval_ms: 500,
        }
    }
}

/// Anti-entropy settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AntiEntropyConfig {
    /// Interval between automatic rounds. Default 60,000 (one minute).
    pub interval_ms: u64,
    /// Tombstones are purged only once older than this; it must exceed twice the interval so a
    /// delete reaches every replica before its tombstone can go. Default 10 days (as Cassandra's
    /// gc_grace_seconds).
    pub tombstone_grace_ms: u64,
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        AntiEntropyConfig {
            interval_ms: 60_000,
            tombstone_grace_ms: 10 * 24 * 3600 * 1000,
        }
    }
}

fn default_cluster_name() -> String {
    "ringkv".into()
}
fn default_dc() -> String {
    "dc1".into()
}
fn default_rack() -> String {
    "rack1".into()
}
fn default_vnodes() -> u32 {
    64
}

impl NodeConfig {
    /// Runtime worker threads to start: `limits.runtime-threads`, or one per core when 0.
    pub fn runtime_threads(&self) -> usize {
        match self.limits.runtime_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(MAX_RUNTIME_THREADS)
    }

    /// Reads, parses and validates a configuration file. Relative paths inside it are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut cfg.data_dir,
            &mut cfg.tls.ca,
            &mut cfg.tls.cert,
            &mut cfg.tls.key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values agree with each other and that the ring can be built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.members.iter().all(|m| m.id != self.node_id) {
            return bad(format!("node-id {} is not among the members", self.node_id));
        }
        let mut addrs = std::collections::HashSet::new();
        for m in &self.members {
            if !addrs.insert(m.address) {
                return bad(format!("two members share the address {}", m.address));
            }
            if m.tokens.is_empty() && m.vnodes == 0 {
                return bad(format!("member {} has no tokens (vnodes = 0)", m.id));
            }
        }
        let t = &self.timeouts;
        if !(t.phi_threshold.is_finite() && t.phi_threshold > 0.0) {
            return bad("timeouts: phi-threshold must be a positive number".into());
        }
        let st = &self.streaming;
        if st.max_bytes_per_sec == 0 || st.page_records == 0 {
            return bad("streaming: max-bytes-per-sec and page-records must be > 0".into());
        }
        if t.request_ms == 0 || t.heartbeat_ms == 0 || t.down_after_ms <= t.heartbeat_ms {
            return bad("timeouts: request-ms and heartbeat-ms must be > 0 and down-after-ms > heartbeat-ms".into());
        }
        let l = &self.limits;
        if l.max_client_requests == 0 || l.max_internal_requests == 0 || l.write_queue == 0 {
            return bad("limits must be > 0".into());
        }
        if l.runtime_threads > MAX_RUNTIME_THREADS {
            return bad(format!(
                "limits: runtime-threads is at most {MAX_RUNTIME_THREADS} (0 = one per core)"
            ));
        }
        if t.max_clock_ahead_ms < 4_000 {
            return bad("timeouts: max-clock-ahead-ms must be at least 4000 (a restarted node's clock may run 2 s ahead)".into());
        }
        if self.durability.periodic_ms == 0 {
            return bad("durability: periodic-ms must be > 0".into());
        }
        let h = &self.hints;
        if h.replay_batch == 0
            || h.replay_rate == 0
            || h.max_per_target == 0
            || h.check_interval_ms == 0
        {
            return bad("hints: replay-batch, replay-rate, max-per-target and check-interval-ms must be > 0".into());
        }
        let ae = &self.anti_entropy;
        if ae.interval_ms == 0 || ae.tombstone_grace_ms <= 2 * ae.interval_ms {
            return bad(format!(
                "anti-entropy: tombstone-grace-ms ({}) must exceed twice interval-ms ({}), or deleted data can come back",
                ae.tombstone_grace_ms, ae.interval_ms
            ));
        }
        if !self.seeds.is_empty() {
            // The ring comes from the seeds; only this node's own entry matters here.
            return Ok(());
        }
        self.ring()
            .map(|_| ())
            .map_err(|e| ConfigError::Invalid(format!("ring: {e}")))
    }

    /// The ring the members and replication describe.
    pub fn ring(&self) -> Result<ring::Ring, ring::RingError> {
        ring::Ring::new(
            self.members.iter().map(MemberConfig::member).collect(),
            self.replication.strategy(),
        )
    }

    /// This node's member entry.
    pub fn me(&self) -> Option<&MemberConfig> {
        self.members.iter().find(|m| m.id == self.node_id)
    }

    /// The address to bind.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.or_else(|| self.me().map(|m| m.address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node-id = 1
data-dir = "data"
[tls]
ca = "ca.pem"
cert = "node.pem"
key = "node.key"
[replication]
strategy = "simple"
rf = 2
[[members]]
id = 1
address = "127.0.0.1:7401"
[[members]]
id = 2
address = "127.0.0.1:7402"
"#;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("node.toml");
        std::fs::write(&p, text).expect("write");
        (dir, p)
    }

    #[test]
    fn loads_with_defaults_and_resolves_paths() {
        let (dir, p) = write(GOOD);
        let cfg = NodeConfig::load(&p).expect("valid");
        assert_eq!(cfg.data_dir, dir.path().join("data"));
        assert_eq!(cfg.timeouts.request_ms, 2000);
        assert_eq!(
            cfg.listen_addr(),
            Some("127.0.0.1:7401".parse().expect("addr"))
        );
        assert_eq!(cfg.me().map(|m| m.datacenter.as_str()), Some("dc1"));
    }

    #[test]
    fn runtime_threads_default_to_the_cores_and_are_bounded() {
        let (_d, p) = write(GOOD);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            NodeConfig::load(&p).expect("valid").runtime_threads(),
            cores
        );
        let (_d, p) = write(&format!("{GOOD}\n[limits]\nruntime-threads = 1\n"));
        assert_eq!(NodeConfig::load(&p).expect("valid").runtime_threads(), 1);
        let (_d, p) = write(&format!("{GOOD}\n[limits]\nruntime-threads = 65\n"));
        assert!(matches!(NodeConfig::load(&p), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn durability_modes_parse_and_default_to_periodic() {
        let (_d, p) = write(GOOD);
        assert_eq!(
            NodeConfig::load(&p).expect("valid").durability.mode,
            DurabilityMode::Periodic
        );
        let (_d, p) = write(&format!("{GOOD}\n[durability]\nmode = \"sync\"\n"));
        assert_eq!(
            NodeConfig::load(&p).expect("valid").durability.mode,
            DurabilityMode::Sync
        );
        let (_d, p) = write(&format!("{GOOD}\n[durability]\nmode = \"sometimes\"\n"));
        assert!(matches!(
            NodeConfig::load(&p),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn rejects_unknown_keys_bad_syntax_and_inconsistencies() {
        let (_d, p) = write(&format!("{GOOD}\nbogus = 1\n"));
        assert!(matches!(
            NodeConfig::load(&p),
            Err(ConfigError::Parse { .. })
        ));
        let (_d, p) = write("node-id = [");
        assert!(matches!(
            NodeConfig::load(&p),
            Err(ConfigError::Parse { .. })
        ));
        let (_d, p) = write(&GOOD.replace("node-id = 1", "node-id = 9"));
        assert!(matches!(NodeConfig::load(&p), Err(ConfigError::Invalid(_))));
        let (_d, p) = write(&GOOD.replace("rf = 2", "rf = 3"));
        assert!(matches!(NodeConfig::load(&p), Err(ConfigError::Invalid(_))));
        assert!(matches!(
            NodeConfig::load(Path::new("/nonexistent/x.toml")),
            Err(ConfigError::Read { .. })
        ));
    }
}
