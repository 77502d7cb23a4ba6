//! `ringkv-compare`: the `ringkv bench` workloads, with the same concurrency, value size, key
//! count and duration, against ringkv and against etcd and Redis, driven from this one process
//! through each system's client crate, and one table of the results.
//!
//! Durability is compared like for like:
//! - ringkv with `--durability sync` (every batch of writes fsynced before it is acknowledged:
//!   group commit), QUORUM, against etcd (a write commits once a majority fsynced it);
//! - ringkv in its default `periodic` mode (write-ahead log written before the ack, fsynced every
//!   second), QUORUM, against Redis with `appendonly yes`, `appendfsync everysec`, and two
//!   replicas; plain SET acknowledges once the primary has the write, `SET` + `WAIT 1` once a
//!   replica has it too.
//!
//! Every system gets three server processes on 127.0.0.1 with data in the work directory, and
//! runs alone: it is started, preloaded (when a workload reads), measured and stopped before the
//! next one starts. Only the processes this run started are ever signalled; they are stopped on
//! every exit path, Ctrl-C and SIGTERM included. Built with `--features compare`
//! (`scripts/compare.sh` installs the peers, builds and runs it).

mod etcd_peer;
mod procs;
mod redis_peer;
mod table;

use anyhow::{bail, Context};
use clap::Parser;
use client::bench::{measured, parse_warmup, preload, BenchOptions, RingkvStore, Store, Workload};
use client::cluster_dir::{ClusterDir, CreateOptions, DurabilityMode};
use client::launcher::{find_node_binary, LocalCluster};
use client::Client;
use proto::Consistency;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use table::{Comparison, Row};

/// The peers ringkv can be compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
enum Peer {
    /// etcd, 3 members, against ringkv with `--durability sync`.
    Etcd,
    /// Redis, a primary and 2 replicas (AOF everysec), against ringkv in its default mode.
    Redis,
}

/// Compares ringkv with etcd and Redis on this machine, one system after another, and prints
/// one table.
#[derive(Debug, Parser)]
#[command(name = "ringkv-compare", version)]
struct Args {
    /// Seconds each workload runs on each system.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    duration: f64,
    /// Seconds each workload first runs unmeasured on each system (0: no warmup).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    warmup: f64,
    /// Operations in flight at once (one task each, sharing one client of the system).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Bytes per written value.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    value_size: usize,
    /// Distinct keys (drawn uniformly); workloads that read preload all of them first.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    keys: u64,
    /// Workloads to run on every system, in order (comma separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Workload::Write, Workload::Read])]
    workloads: Vec<Workload>,
    /// Share of gets in the mixed workload.
    #[arg(long, value_name = "SHARE", default_value_t = 0.5)]
    read_ratio: f64,
    /// Peers to compare with (comma separated): etcd against ringkv `sync`, redis against
    /// ringkv `periodic`.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Peer::Etcd, Peer::Redis])]
    peers: Vec<Peer>,
    /// Also run Redis writes as SET + `WAIT N` (acknowledged once N replicas have the write);
    /// 0 leaves that row out.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=2))]
    redis_wait: u32,
    /// Longest one operation may take, in milliseconds, on every system.
    #[arg(long, value_name = "MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    /// Directory for every system's data and logs [default: a new temporary directory, removed
    /// at the end]. Its `pids` file lists every server process started.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the data and logs in the work directory.
    #[arg(long)]
    keep: bool,
    /// The ringkv-node binary [default: $RINGKV_NODE_BIN, else next to this binary, else PATH].
    #[arg(long, value_name = "PATH")]
    node_bin: Option<PathBuf>,
    /// The etcd server binary (Debian: etcd-server).
    #[arg(long, value_name = "PATH", default_value = "etcd")]
    etcd_bin: PathBuf,
    /// The Redis server binary (Debian: redis-server).
    #[arg(long, value_name = "PATH", default_value = "redis-server")]
    redis_bin: PathBuf,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// What was measured: a system in one durability setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// ringkv, `--durability sync`.
    RingkvSync,
    /// etcd.
    Etcd,
    /// ringkv, `--durability periodic`.
    RingkvPeriodic,
    /// Redis, plain SET.
    Redis,
    /// Redis, SET + WAIT n.
    RedisWait(u32),
}

impl System {
    /// Its name in the table.
    pub fn name(self) -> String {
        match self {
            System::RingkvSync | System::RingkvPeriodic => "ringkv".into(),
            System::Etcd => "etcd".into(),
            System::Redis => "redis".into(),
            System::RedisWait(n) => format!("redis WAIT {n}"),
        }
    }

    /// The ringkv setting it is compared with (itself for ringkv).
    pub fn ringkv(self) -> System {
        match self {
            System::RingkvSync | System::Etcd => System::RingkvSync,
            _ => System::RingkvPeriodic,
        }
    }

    /// Whether this is ringkv.
    pub fn is_ringkv(self) -> bool {
        matches!(self, System::RingkvSync | System::RingkvPeriodic)
    }

    /// Its durability, in short.
    pub fn durability(self) -> String {
        match self {
            System::RingkvSync => "sync: fsync per batch, QUORUM".into(),
            System::Etcd => "raft: WAL fsync, majority".into(),
            System::RingkvPeriodic => "periodic: fsync every 1 s, QUORUM".into(),
            System::Redis => "AOF everysec, async replicas".into(),
            System::RedisWait(n) => format!("AOF everysec, WAIT {n} replica(s)"),
        }
    }

    /// What an acknowledged write and a read mean.
    pub fn acknowledges(self) -> String {
        match self {
            System::RingkvSync => "a put is acknowledged once 2 of its 3 replicas have applied it and fsynced their \
                write-ahead log (one fsync per batch of writes: group commit); gets are QUORUM (2 of 3 \
                replicas, newest version wins)"
                .into(),
            System::Etcd => "a put is acknowledged once the raft leader committed it: a majority (2 of 3 \
                members) fsynced it in their WAL; gets are linearizable (confirmed with the leader)"
                .into(),
            System::RingkvPeriodic => "a put is acknowledged once 2 of its 3 replicas have written it to their \
                write-ahead log (OS page cache, fsynced every second): a crashed node process loses \
                nothing, a power loss can lose the last second on a replica; gets are QUORUM"
                .into(),
            System::Redis => "a SET is acknowledged once the primary applied it in memory; its append-only \
                file is written and fsynced within about a second (appendfsync everysec) and the 2 \
                replicas copy it asynchronously, so a failover can lose acknowledged writes; GETs read \
                the primary; all tasks share one pipelined connection"
                .into(),
            System::RedisWait(n) => format!(
                "a SET followed by WAIT {n}: acknowledged once the primary applied it and {n} replica(s) \
                 confirmed receiving it; WAIT blocks its connection, so each task has its own"
            ),
        }
    }
}

fn main() {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        // When a signal wins, the comparison's future is dropped here, and with it every guard
        // that stops the servers it started and removes its work directory.
        tokio::select! {
            result = compare(&args) => match result {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            },
            signal = interrupted() => {
                eprintln!("ringkv-compare: {signal}: stopped the servers this run started");
                130
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(code);
}

/// Resolves when SIGINT, SIGTERM or SIGHUP arrives, with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    async fn recv(s: &mut Option<Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = recv(&mut term) => "SIGTERM",
        _ = recv(&mut hup) => "SIGHUP",
    }
}

/// The work directory; removed on drop when this run created it (unless `--keep`).
struct WorkDir {
    path: PathBuf,
    remove: bool,
    keep: bool,
}

impl WorkDir {
    fn new(args: &Args) -> anyhow::Result<WorkDir> {
        let (path, created) = match &args.work_dir {
            Some(p) => (std::path::absolute(p)?, false),
            None => (
                std::env::temp_dir().join(format!("ringkv-compare-{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir {
            path,
            remove: created && !args.keep,
            keep: args.keep,
        })
    }

    /// Removes a system's directory after it stopped (unless `--keep`).
    fn done_with(&self, dir: &Path) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        } else if self.keep {
            say(format_args!(
                "data and logs kept in {}",
                self.path.display()
            ));
        }
    }
}

/// A program named like `etcd` is looked up on PATH; a path must be an executable file.
fn resolve_program(p: &Path, package: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |c: &Path| {
        std::fs::metadata(c).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if p.components().count() > 1 {
        executable(p).then(|| p.to_path_buf())
    } else {
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.join(p))
            .find(|c| executable(c))
    };
    found.with_context(|| {
        format!(
            "cannot find {} (install Debian's {package} package, or pass its path)",
            p.display()
        )
    })
}

fn bench_options(args: &Args, workload: Workload) -> BenchOptions {
    BenchOptions {
        ops: u64::MAX,
        duration: Duration::try_from_secs_f64(args.duration).unwrap_or(Duration::ZERO),
        concurrency: args.concurrency,
        value_size: args.value_size,
        keys: args.keys,
        distribution: client::bench::keys::Distribution::Uniform,
        consistency: Consistency::Quorum,
        workload,
        read_ratio: args.read_ratio,
        rate: None,
    }
}

/// The load average (1, 5, 15 minutes), from /proc/loadavg.
fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

fn say(msg: impl std::fmt::Display) {
    eprintln!("ringkv-compare: {msg}");
}

async fn compare(args: &Args) -> anyhow::Result<i32> {
    let mut peers = args.peers.clone();
    peers.sort();
    peers.dedup();
    let mut workloads: Vec<Workload> = Vec::new();
    for &w in &args.workloads {
        if !workloads.contains(&w) {
            workloads.push(w);
        }
    }
    if peers.is_empty() || workloads.is_empty() {
        bail!("--peers and --workloads need at least one value each");
    }
    for &w in &workloads {
        bench_options(args, w).validate()?;
    }
    // Refused here, before any server starts.
    parse_warmup(args.warmup)?;
    let node_bin = find_node_binary(args.node_bin.as_deref())?;
    let etcd_bin = if peers.contains(&Peer::Etcd) {
        Some(resolve_program(&args.etcd_bin, "etcd-server")?)
    } else {
        None
    };
    let redis_bin = if peers.contains(&Peer::Redis) {
        Some(resolve_program(&args.redis_bin, "redis-server")?)
    } else {
        None
    };
    let work = WorkDir::new(args)?;
    let load_before = load_average();
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for peer in peers {
        // Like for like: etcd acknowledges after a majority fsynced, Redis (everysec) does not.
        let durability = match peer {
            Peer::Etcd => DurabilityMode::Sync,
            Peer::Redis => DurabilityMode::Periodic,
        };
        rows.extend(run_ringkv(args, &work, &node_bin, &workloads, durability, &mut notes).await?);
        match peer {
            Peer::Etcd => {
                let bin = etcd_bin.as_deref().context("etcd binary")?;
                rows.extend(run_etcd(args, &work, bin, &workloads).await?);
            }
            Peer::Redis => {
                let bin = redis_bin.as_deref().context("redis binary")?;
                rows.extend(run_redis(args, &work, bin, &workloads).await?);
            }
        }
    }
    let comparison = Comparison {
        options: bench_options(args, Workload::Write),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before,
        load_after: load_average(),
        rows,
        notes,
    };
    if args.json {
        println!("{}", comparison.to_json());
    } else {
        print!("{}", comparison.render());
    }
    let all_ran = comparison
        .rows
        .iter()
        .all(|r| r.report.read.ok + r.report.read.not_found + r.report.write.ok > 0);
    Ok(if all_ran { 0 } else { 1 })
}

/// Preloads (when a workload reads), then runs each workload against `store`.
async fn run_workloads<S: Store>(
    args: &Args,
    system: System,
    store: Arc<S>,
    pids: &[i32],
    workloads: &[Workload],
) -> anyhow::Result<Vec<Row>> {
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let warmup = parse_warmup(args.warmup)?;
    let mut preloaded = None;
    if workloads.iter().any(|w| w.reads()) {
        say(format_args!(
            "{}: preloading {} keys",
            system.name(),
            args.keys
        ));
        let p = preload(&store, &bench_options(args, Workload::Read)).await;
        say(format_args!(
            "{}: preloaded in {:.1} s ({} errors)",
            system.name(),
            p.elapsed.as_secs_f64(),
            p.errors
        ));
        preloaded = Some(p);
    }
    let mut rows = Vec::new();
    for &w in workloads {
        let opts = bench_options(args, w);
        say(format_args!(
            "{}: {} workload, {} s",
            system.name(),
            w.name(),
            args.duration
        ));
        let mut report = measured(store.clone(), &opts, pids, show_progress, warmup).await?;
        if w.reads() {
            report.preload = preloaded.clone();
        }
        say(format_args!(
            "{}: {}",
            system.name(),
            table::summary(&report)
        ));
        rows.push(Row {
            system,
            workload: w,
            report,
        });
    }
    Ok(rows)
}

async fn run_ringkv(
    args: &Args,
    work: &WorkDir,
    node_bin: &Path,
    workloads: &[Workload],
    durability: DurabilityMode,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    let system = match durability {
        DurabilityMode::Sync => System::RingkvSync,
        DurabilityMode::Periodic => System::RingkvPeriodic,
    };
    let path = work.path.join(format!("ringkv-{durability}"));
    say(format_args!(
        "ringkv: starting 3 nodes, RF 3, durability {durability} in {}",
        path.display()
    ));
    let opts = CreateOptions {
        name: "compare".into(),
        nodes: 3,
        rf: 3,
        base_port: 0,
        durability,
        ..CreateOptions::default()
    };
    let rows = {
        let cluster = LocalCluster::create(ClusterDir::new(&path)?, &opts)?
            .with_node_bin(node_bin)
            .into_guard();
        let started = cluster.start_all()?;
        for (id, s) in &started {
            if let Ok(pid) = u32::try_from(s.pid()) {
                procs::record_pid(&work.path.join("pids"), pid, &format!("ringkv node {id}"));
            }
        }
        cluster.wait_ready(Duration::from_secs(30)).await?;
        let pids: Vec<i32> = cluster
            .node_ids()
            .into_iter()
            .filter_map(|id| cluster.pid(id))
            .collect();
        let timeout = Duration::from_millis(args.timeout_ms);
        let mut cfg = cluster.client_config(timeout)?;
        // As `ringkv bench`: no session floors, no retries of timed-out writes.
        cfg.session_keys = 0;
        cfg.write_retries = 0;
        let client = Client::connect(cfg)
            .await
            .context("cannot connect to the ringkv cluster")?;
        let store = Arc::new(RingkvStore {
            client: Arc::new(client),
            consistency: Consistency::Quorum,
        });
        let addresses = cluster.file().addresses();
        let before = wal_counters(&addresses).await;
        let rows = run_workloads(args, system, store, &pids, workloads).await?;
        // The nodes' own count of fsyncs shows the durability mode at work during the run.
        match (before, wal_counters(&addresses).await) {
            (Ok((syncs0, writes0)), Ok((syncs1, writes1))) => {
                let (syncs, writes) = (
                    syncs1.saturating_sub(syncs0),
                    writes1.saturating_sub(writes0),
                );
                let note = format!(
                    "ringkv ({}): the 3 nodes fsynced their WAL {syncs} times for {writes} stored writes \
                     ({:.1} writes per fsync) over this setting's preload and workloads",
                    system.durability(),
                    writes as f64 / syncs.max(1) as f64
                );
                say(&note);
                notes.push(note);
            }
            (Err(e), _) | (_, Err(e)) => {
                say(format_args!("ringkv: no WAL counters from /metrics: {e:#}"))
            }
        }
        say("ringkv: stopping");
        rows
        // The guard stops every node here.
    };
    work.done_with(&path);
    Ok(rows)
}

/// The sums over `nodes` of `ringkv_wal_syncs_total` and `ringkv_storage_writes_total`, from each
/// node's `/metrics` (served over TCP on the node's own port).
async fn wal_counters(nodes: &[std::net::SocketAddr]) -> anyhow::Result<(u64, u64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut syncs, mut writes) = (0, 0);
    for addr in nodes {
        let text = tokio::time::timeout(Duration::from_secs(5), async {
            let mut sock = tokio::net::TcpStream::connect(addr).await?;
            sock.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
            let mut text = String::new();
            sock.read_to_string(&mut text).await?;
            anyhow::Ok(text)
        })
        .await
        .with_context(|| format!("{addr}/metrics did not answer in 5 s"))??;
        let counter = |name: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(name)?
                        .strip_prefix(' ')?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .with_context(|| format!("{addr}/metrics has no {name}"))
        };
        syncs += counter("ringkv_wal_syncs_total")?;
        writes += counter("ringkv_storage_writes_total")?;
    }
    Ok((syncs, writes))
}

async fn run_etcd(
    args: &Args,
    work: &WorkDir,
    bin: &Path,
    workloads: &[Workload],
) -> anyhow::Result<Vec<Row>> {
    let path = work.path.join("etcd");
    say(format_args!(
        "etcd: starting {} members in {}",
        etcd_peer::MEMBERS,
        path.display()
    ));
    let rows = {
        let cluster = etcd_peer::start(bin, &work.path, &path).await?;
        let store = etcd_peer::EtcdStore::connect(
            &cluster.endpoints,
            Duration::from_millis(args.timeout_ms),
        )
        .await?;
        let rows = run_workloads(
            args,
            System::Etcd,
            Arc::new(store),
            &cluster.procs.pids(),
            workloads,
        )
        .await?;
        say("etcd: stopping");
        rows
    };
    work.done_with(&path);
    Ok(rows)
}

async fn run_redis(
    args: &Args,
    work: &WorkDir,
    bin: &Path,
    workloads: &[Workload],
) -> anyhow::Result<Vec<Row>> {
    let path = work.path.join("redis");
    say(format_args!(
        "redis: starting a primary and {} replicas in {}",
        redis_peer::REPLICAS,
        path.display()
    ));
    let rows = {
        let set = redis_peer::start(bin, &work.path, &path).await?;
        let timeout = Duration::from_millis(args.timeout_ms);
        let pids = set.procs.pids();
        let store = redis_peer::RedisStore::connect(&set.primary, timeout).await?;
        let mut rows =
            run_workloads(args, System::Redis, Arc::new(store), &pids, workloads).await?;
        if args.redis_wait > 0 && workloads.contains(&Workload::Write) {
            let store = redis_peer::RedisStore::connect_wait(
                &set.primary,
                timeout,
                args.redis_wait,
                args.concurrency,
            )
            .await?;
            let system = System::RedisWait(args.redis_wait);
            rows.extend(
                run_workloads(args, system, Arc::new(store), &pids, &[Workload::Write]).await?,
            );
        }
        say("redis: stopping");
        rows
    };
    work.done_with(&path);
    Ok(rows)
}
