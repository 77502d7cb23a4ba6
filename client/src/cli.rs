//! The `ringkv` command line: argument definitions (clap) and dispatch to the data commands,
//! the cluster commands and the benchmark. Every command returns its process exit status; the
//! statuses are listed in [`EXIT_STATUS_HELP`] and come from [`crate::error::ClientError::exit_code`].

use crate::bench::Workload;
use crate::cluster_dir::DurabilityMode;
use crate::output::Output;
use crate::{admin_commands, bench, cluster_commands, data_commands};
use clap::{Args, Parser, Subcommand};
use proto::Consistency;
use ring::NodeId;
use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// The exit statuses, shown by `ringkv --help`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0   success
  1   other failure
  2   usage error: unknown flag or consistency level, impossible cluster layout, unknown node id
  3   not found
  4   unavailable: too few replicas up (nothing written); `cluster status`: a node is unreachable;
      `cluster up` / `start-node`: a node did not become ready
  5   timeout: too few replicas answered in time (a write may or may not have been applied)
  6   invalid request: key over 65536 bytes, value over 1048576 bytes, ANY for a read
  7   unauthorized: a certificate was refused
  8   overloaded: the node is at its in-flight limit; retry later
  9   configuration: missing or broken cluster directory or certificates, no ringkv-node binary
  10  cannot reach the cluster
  11  stale: no replica had the version this session already saw (nothing older was returned)
  12  clock skew: the key's newest version is too far ahead of the coordinator's clock (nothing written)

The cluster directory is --cluster-dir, else $RINGKV_CLUSTER_DIR, else ~/.ringkv/cluster.
RUST_LOG sets the log filter (default: warn); logs go to stderr.";

/// `ringkv`: a client for ringkv clusters and a launcher for local ones.
#[derive(Debug, Parser)]
#[command(name = "ringkv", version, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    /// Cluster directory [default: $RINGKV_CLUSTER_DIR, else ~/.ringkv/cluster].
    #[arg(long, global = true, visible_alias = "dir", value_name = "DIR")]
    pub cluster_dir: Option<PathBuf>,
    /// Print one JSON object on stdout (errors too) instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a value under a key.
    Put(PutArgs),
    /// Read a key's value; prints the raw bytes (a newline is added only on a terminal).
    Get(KeyArgs),
    /// Delete a key (writes a tombstone; deleting a missing key succeeds).
    Delete(KeyArgs),
    /// Run a local cluster of ringkv-node processes.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Measure throughput and latency against a cluster.
    Bench(BenchArgs),
    /// Run a Merkle-tree anti-entropy round now, on one node or every node.
    Repair(RepairArgs),
}

/// `ringkv repair`.
#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Only this node runs a round (with every peer); default: every node, one after another.
    #[arg(long = "node-id", visible_alias = "node", value_name = "ID")]
    pub node: Option<u32>,
    /// Wait for each round and report what it repaired (a progress bar on a terminal);
    /// without it, rounds are started and the command returns.
    #[arg(long)]
    pub wait: bool,
    /// Longest one node's round may take, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
}

/// How to reach the cluster and at which level; shared by the data commands and `bench`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Consistency level: ANY (writes only), ONE, TWO, THREE, QUORUM, LOCAL_ONE, LOCAL_QUORUM,
    /// EACH_QUORUM, ALL, LINEARIZABLE (case-insensitive).
    #[arg(short = 'c', long, value_name = "LEVEL", default_value = "QUORUM", value_parser = parse_consistency)]
    pub consistency: Consistency,
    /// Longest one request may take, end to end, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// The client's datacenter: coordinators there are preferred.
    #[arg(long, value_name = "DC")]
    pub datacenter: Option<String>,
    /// A node to contact (repeatable), instead of the nodes listed in the cluster directory.
    #[arg(long = "node", value_name = "ADDR", value_parser = parse_addr)]
    pub nodes: Vec<SocketAddr>,
    /// Cluster CA certificate (with --cert and --key: no cluster directory needed with --node).
    #[arg(long = "ca", value_name = "PATH", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate.
    #[arg(long = "cert", value_name = "PATH", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// Client private key.
    #[arg(long = "key", value_name = "PATH", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
}

/// `ringkv put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key (its bytes as given; at most 65536).
    pub key: OsString,
    /// The value; `-` or none (without --file) reads standard input. At most 1048576 bytes.
    #[arg(conflicts_with = "file")]
    pub value: Option<OsString>,
    /// Read the value from this file (any bytes).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Connection and consistency.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Session and receipt.
    #[command(flatten)]
    pub session: SessionArgs,
}

/// Session guarantees and receipts of the data commands.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Print which replicas acknowledged, were hinted, were stale and repaired, and the version.
    #[arg(long)]
    pub receipt: bool,
    /// Keep the session (the newest version seen per key, for read-your-writes and monotonic
    /// reads across commands) in this file. Default: `session.json` in the cluster directory
    /// when one is used; with only --node, the session lasts one command.
    #[arg(long, value_name = "PATH", conflicts_with = "no_session")]
    pub session: Option<PathBuf>,
    /// No session guarantees: a read may return an older version than this session wrote or read.
    #[arg(long)]
    pub no_session: bool,
}

/// `ringkv get` and `ringkv delete`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The key (its bytes as given; at most 65536).
    pub key: OsString,
    /// `get` only: read what replica node ID alone holds, without coordination or repair
    /// (tombstones read as not found; `--json` shows them).
    #[arg(long, value_name = "ID")]
    pub replica: Option<u32>,
    /// Connection and consistency.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Session and receipt.
    #[command(flatten)]
    pub session: SessionArgs,
}

/// `ringkv cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create a local cluster (when the directory holds none) and start every node that is not
    /// running, then wait until every node sees every other one up.
    Up(UpArgs),
    /// Stop every node (SIGTERM, then SIGKILL after 10 s).
    Down {
        /// Also delete the cluster directory: configs, certificates, data and logs.
        #[arg(long)]
        purge: bool,
    },
    /// Show every node: process, reachability, its view of its peers, records, uptime.
    /// Exits 4 when a node is unreachable.
    Status,
    /// Stop one node (SIGTERM, or SIGKILL with --kill).
    StopNode {
        /// The node's id.
        id: NodeId,
        /// Kill it (SIGKILL) instead of shutting it down gracefully.
        #[arg(long)]
        kill: bool,
    },
    /// Start one stopped node with its existing config and data, and wait until it answers.
    StartNode {
        /// The node's id.
        id: NodeId,
        /// The ringkv-node binary [default: $RINGKV_NODE_BIN, else next to ringkv, else PATH].
        #[arg(long, value_name = "PATH")]
        node_bin: Option<PathBuf>,
        /// How long to wait for the node to answer, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        timeout_secs: u64,
    },
    /// Stage the join of a node listening at ADDR that was started with this cluster's seeds
    /// (`seeds = [...]` in its node.toml). `cluster commit` carries it out.
    Join {
        /// The new node's address (host:port).
        #[arg(value_parser = parse_addr)]
        addr: SocketAddr,
    },
    /// Stage the decommission of a member: it streams its ranges to the next owners, then
    /// leaves the ring. `cluster commit` carries it out.
    Leave {
        /// The member's id.
        id: NodeId,
    },
    /// Stage the replacement of a dead member by the node listening at ADDR (started with this
    /// cluster's seeds): it takes the dead node's tokens and streams its data from the other
    /// replicas. `cluster commit` carries it out.
    Replace {
        /// The dead member's id.
        dead: NodeId,
        /// The new node's address (host:port).
        #[arg(long = "with", value_name = "ADDR", value_parser = parse_addr)]
        with: SocketAddr,
    },
    /// Show the ring, the staged changes and what they would move (or the transition in
    /// progress and what it moves).
    Plan,
    /// Drop every staged change.
    Clear,
    /// Commit the staged changes, then follow the transition (streaming progress) until it ends.
    /// The commit is served by the admin node (the lowest-id member seen up) and waits up to
    /// 10 s until it sees every node staged to join up; it is refused otherwise.
    Commit(CommitArgs),
    /// Start one more local node and join it (or, with --replace, replace a dead node with it),
    /// then commit and follow the transition until it ends.
    Add {
        /// Replace this dead member instead of adding capacity.
        #[arg(long, value_name = "ID")]
        replace: Option<NodeId>,
        /// Only stage the change; `cluster commit` carries it out.
        #[arg(long)]
        no_commit: bool,
        /// The ringkv-node binary [default: $RINGKV_NODE_BIN, else next to ringkv, else PATH].
        #[arg(long, value_name = "PATH")]
        node_bin: Option<PathBuf>,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `ringkv cluster commit`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// How a topology change is followed.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Return once committed instead of following the transition to its end.
    #[arg(long)]
    pub no_wait: bool,
    /// Longest the transition may take, in seconds (exit 5 when it is still running then; it
    /// goes on in the cluster).
    #[arg(long, value_name = "SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
}

/// `ringkv cluster up`. The layout flags apply only when a new cluster is created.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Number of nodes [default: 3].
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Number of datacenters dc1..dcN; nodes are spread round robin [default: 1].
    #[arg(long)]
    pub datacenters: Option<usize>,
    /// Replication factor (per datacenter when there are several) [default: 3].
    #[arg(long)]
    pub rf: Option<usize>,
    /// Virtual nodes per node [default: 64].
    #[arg(long)]
    pub vnodes: Option<u32>,
    /// Node N listens on 127.0.0.1:(PORT + N); 0 picks free ports [default: 7400].
    #[arg(long, value_name = "PORT")]
    pub base_port: Option<u16>,
    /// Cluster name [default: ringkv].
    #[arg(long)]
    pub name: Option<String>,
    /// When writes reach the disk on every node: `periodic` writes the write-ahead log before
    /// acknowledging and fsyncs it every second; `sync` fsyncs every batch of writes before
    /// acknowledging any of them (group commit) [default: periodic].
    #[arg(long, value_enum, value_name = "MODE")]
    pub durability: Option<DurabilityMode>,
    /// The ringkv-node binary [default: $RINGKV_NODE_BIN, else next to ringkv, else PATH].
    #[arg(long, value_name = "PATH")]
    pub node_bin: Option<PathBuf>,
    /// How long to wait for the cluster to become ready, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout_secs: u64,
}

/// `ringkv bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Stop after this many operations (or at --duration, whichever comes first).
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: u64,
    /// Stop after this many seconds (or at --ops, whichever comes first).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,
    /// Run the same workload this many seconds first, unmeasured (0: no warmup).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub warmup: f64,
    /// Threads of the benchmark's own async runtime.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub client_threads: u64,
    /// Writes that start within the same window of this many milliseconds prefer the same
    /// coordinator among their key's replicas (the preferred node rotates over the members,
    /// window by window), so concurrent writes share a coordinator and travel to each other
    /// replica in one batch. Reads, and every operation with 0, go to the key's first replica.
    #[arg(long, value_name = "MS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub coordinator_window_ms: u64,
    /// Operations in flight at once (one task each, sharing one client).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Bytes per written value.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub value_size: usize,
    /// Number of distinct keys.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub keys: u64,
    /// Draw keys zipfian with this skew (0 < THETA < 1; YCSB uses 0.99) instead of uniformly.
    #[arg(long, value_name = "THETA")]
    pub zipfian: Option<f64>,
    /// What to run: writes, reads (of preloaded keys) or a mix (see --read-ratio).
    #[arg(long, value_enum, default_value_t = Workload::Write)]
    pub workload: Workload,
    /// Share of gets in the mixed workload, 0 to 1.
    #[arg(long, value_name = "SHARE", default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Open loop: start this many operations per second in total, and time each from when it
    /// was due (corrected for coordinated omission). Without it the run is closed-loop.
    #[arg(long, value_name = "OPS_PER_SEC")]
    pub rate: Option<f64>,
    /// Connection and consistency.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Parses a consistency level; the error lists the valid levels (clap then exits with 2).
pub fn parse_consistency(s: &str) -> Result<Consistency, String> {
    s.parse::<Consistency>().map_err(|e| e.to_string())
}

/// Parses `host:port`, resolving a host name to its first address.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("{s:?} is not a host:port address: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

/// Runs a parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> i32 {
    // The benchmark usually shares the machine with the nodes it loads: by default it runs on
    // one thread (fewer cross-thread wake-ups, measured: a quarter less client CPU per op).
    let threads = match &cli.command {
        Command::Bench(args) => usize::try_from(args.client_threads).unwrap_or(1),
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut builder = proto::transport::runtime_builder(threads);
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let out = Output { json: cli.json };
    let dir = cli.cluster_dir.as_deref();
    runtime.block_on(async move {
        match cli.command {
            Command::Put(args) => data_commands::put(dir, out, args).await,
            Command::Get(args) => data_commands::get(dir, out, args).await,
            Command::Delete(args) => data_commands::delete(dir, out, args).await,
            Command::Cluster(cmd) => cluster_commands::run(dir, out, cmd).await,
            Command::Bench(args) => bench::run_cli(dir, out, args).await,
            Command::Repair(args) => admin_commands::repair(dir, out, args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn levels_parse_case_insensitively_and_errors_list_the_levels() {
        let cli =
            Cli::try_parse_from(["ringkv", "get", "k", "-c", "local_quorum"]).expect("parses");
        match cli.command {
            Command::Get(a) => assert_eq!(a.connect.consistency, Consistency::LocalQuorum),
            other => panic!("unexpected {other:?}"),
        }
        let err =
            Cli::try_parse_from(["ringkv", "get", "k", "-c", "most"]).expect_err("unknown level");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("EACH_QUORUM"), "{err}");
    }

    #[test]
    fn durability_is_periodic_or_sync() {
        let up = |extra: &[&str]| {
            let mut args = vec!["ringkv", "cluster", "up"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Command::Cluster(ClusterCommand::Up(a)) => a.durability,
                other => panic!("unexpected {other:?}"),
            })
        };
        assert_eq!(up(&[]).expect("parses"), None);
        assert_eq!(
            up(&["--durability", "sync"]).expect("parses"),
            Some(DurabilityMode::Sync)
        );
        assert_eq!(
            up(&["--durability", "periodic"]).expect("parses"),
            Some(DurabilityMode::Periodic)
        );
        let err = up(&["--durability", "sometimes"]).expect_err("unknown mode");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("periodic"), "{err}");
    }

    #[test]
    fn tls_flags_come_as_a_set() {
        assert!(Cli::try_parse_from(["ringkv", "get", "k", "--ca", "ca.pem"]).is_err());
        assert!(Cli::try_parse_from([
            "ringkv", "get", "k", "--ca", "a", "--cert", "b", "--key", "c"
        ])
        .is_ok());
    }
}
