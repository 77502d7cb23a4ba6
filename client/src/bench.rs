//! `ringkv bench`: a load generator. `concurrency` tasks share one store client and run until
//! the operation count or the duration runs out, either closed-loop (each task starts its next
//! operation when the last one ends) or open-loop at a target rate (`--rate`: operation `i` is
//! due at `start + i / rate`; one a task takes up late, because every task was waiting on the
//! store, is timed from its due time, so a stall counts against every operation it delays:
//! latencies corrected for coordinated omission, as wrk2 does). Keys are drawn uniformly or zipfian ([`keys`]). Latencies go into HDR histograms (µs);
//! errors are counted by kind, not timed. For a local cluster the CPU the node processes used
//! per operation is read from `/proc` ([`cpu`]).
//!
//! The runner is generic over [`Store`], so the same workload drives other systems too (the
//! `ringkv-compare` tool runs it against etcd and Redis).

pub mod cpu;
pub mod keys;

use crate::cli::BenchArgs;
use crate::client::Client;
use crate::cluster_dir::ClusterDir;
use crate::data_commands::check_read_level;
use crate::error::ClientError;
use crate::output::Output;
use hdrhistogram::Histogram;
use keys::{Distribution, KeyChooser};
use proto::limits::MAX_VALUE_BYTES;
use proto::Consistency;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How one operation ended, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Written, or read and found.
    Done,
    /// Read and not found (timed, not an error).
    NotFound,
}

/// One operation's result: an error is named by its kind (for example `"Timeout"`).
pub type OpResult = Result<Outcome, &'static str>;

/// A key-value store the benchmark can drive.
pub trait Store: Send + Sync + 'static {
    /// Writes `value` under `key`.
    fn put(&self, key: &[u8], value: &[u8]) -> impl Future<Output = OpResult> + Send;
    /// Reads `key`.
    fn get(&self, key: &[u8]) -> impl Future<Output = OpResult> + Send;
}

/// ringkv through its client library, at one consistency level.
pub struct RingkvStore {
    /// The shared client.
    pub client: Arc<Client>,
    /// Level of every operation.
    pub consistency: Consistency,
}

fn ringkv_result<T>(r: Result<T, ClientError>) -> OpResult {
    match r {
        Ok(_) => Ok(Outcome::Done),
        Err(ClientError::NotFound) => Ok(Outcome::NotFound),
        Err(e) => Err(e.kind()),
    }
}

impl Store for RingkvStore {
    async fn put(&self, key: &[u8], value: &[u8]) -> OpResult {
        ringkv_result(self.client.put(key, value, self.consistency).await)
    }

    async fn get(&self, key: &[u8]) -> OpResult {
        ringkv_result(self.client.get(key, self.consistency).await)
    }
}

/// Which operations a benchmark runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Puts only.
    Write,
    /// Gets only, of keys written by a preload first.
    Read,
    /// Gets and puts (`--read-ratio` of them gets), after a preload.
    Mixed,
}

impl Workload {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Write => "write",
            Workload::Read => "read",
            Workload::Mixed => "mixed",
        }
    }

    /// Whether it reads (and so needs a preload and a level reads accept).
    pub fn reads(self) -> bool {
        self != Workload::Write
    }

    fn writes(self) -> bool {
        self != Workload::Read
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Stop after this many operations...
    pub ops: u64,
    /// ...or after this long, whichever comes first.
    pub duration: Duration,
    /// Operations in flight at most (one task each).
    pub concurrency: usize,
    /// Bytes per written value.
    pub value_size: usize,
    /// Distinct keys (`bench-0000000000` ..).
    pub keys: u64,
    /// How keys are drawn.
    pub distribution: Distribution,
    /// Level of every measured operation (ringkv only).
    pub consistency: Consistency,
    /// Which operations.
    pub workload: Workload,
    /// Share of operations that are gets in the mixed workload, 0 to 1.
    pub read_ratio: f64,
    /// Open loop: operations started per second in total; `None` runs closed-loop.
    pub rate: Option<f64>,
}

/// Most operations per second an open-loop run may ask for.
pub const MAX_RATE: f64 = 10_000_000.0;
/// Longest warmup `ringkv bench` accepts.
pub const MAX_WARMUP: Duration = Duration::from_secs(3600);
/// The `--warmup` seconds as a duration: 0 to [`MAX_WARMUP`], else `InvalidRequest`.
pub fn parse_warmup(secs: f64) -> Result<Duration, ClientError> {
    match Duration::try_from_secs_f64(secs) {
        Ok(w) if w <= MAX_WARMUP => Ok(w),
        _ => Err(ClientError::InvalidRequest(format!(
            "--warmup must be between 0 and {} seconds, not {secs}",
            MAX_WARMUP.as_secs()
        ))),
    }
}

/// Most tasks a benchmark may run.
pub const MAX_CONCURRENCY: usize = 100_000;

impl BenchOptions {
    /// Refuses options that cannot run, before connecting.
    pub fn validate(&self) -> Result<(), ClientError> {
        let bad = |m: String| Err(ClientError::InvalidRequest(m));
        if self.concurrency == 0 || self.keys == 0 || self.ops == 0 {
            return bad("--concurrency, --keys and --ops must be at least 1".into());
        }
        if self.concurrency > MAX_CONCURRENCY {
            return bad(format!("--concurrency is at most {MAX_CONCURRENCY}"));
        }
        if self.duration.is_zero() {
            return bad("--duration must be positive".into());
        }
        if self.value_size > MAX_VALUE_BYTES {
            return bad(format!(
                "--value-size {} exceeds the {MAX_VALUE_BYTES}-byte value limit",
                self.value_size
            ));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return bad(format!(
                "--read-ratio must be between 0 and 1, not {}",
                self.read_ratio
            ));
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r <= MAX_RATE) {
                return bad(format!(
                    "--rate must be above 0 and at most {MAX_RATE}, not {r}"
                ));
            }
        }
        KeyChooser::new(self.keys, self.distribution).map_err(ClientError::InvalidRequest)?;
        if self.workload.reads() {
            check_read_level(self.consistency)?;
        }
        Ok(())
    }

    fn read_share(&self) -> f64 {
        match self.workload {
            Workload::Read => 1.0,
            Workload::Write => 0.0,
            Workload::Mixed => self.read_ratio,
        }
    }
}

/// Outcomes of one operation type.
#[derive(Clone, Debug)]
pub struct OpStats {
    /// Latency of every completed operation (successes and not-found reads), in µs.
    pub latency_us: Histogram<u64>,
    /// Successful operations.
    pub ok: u64,
    /// Reads that found no value (timed, not errors).
    pub not_found: u64,
    /// Failed operations by error kind.
    pub errors: BTreeMap<&'static str, u64>,
}

/// Largest latency the histograms track: one hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

impl OpStats {
    fn new() -> OpStats {
        // 1 µs to 1 hour at 3 significant figures; larger values are clamped to the top.
        let latency_us = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .expect("bounds and precision are valid constants");
        OpStats {
            latency_us,
            ok: 0,
            not_found: 0,
            errors: BTreeMap::new(),
        }
    }

    /// Records one operation that was due at `due` (its start, closed-loop) and ended now.
    fn record(&mut self, due: Instant, outcome: OpResult) {
        let us = u64::try_from(due.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_LATENCY_US);
        match outcome {
            Ok(Outcome::Done) => self.ok += 1,
            Ok(Outcome::NotFound) => self.not_found += 1,
            Err(kind) => {
                *self.errors.entry(kind).or_default() += 1;
                return;
            }
        }
        self.latency_us.saturating_record(us);
    }

    fn merge(&mut self, other: &OpStats) {
        // Both histograms have the same bounds, so adding cannot fail on range.
        let _ = self.latency_us.add(&other.latency_us);
        self.ok += other.ok;
        self.not_found += other.not_found;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
    }

    /// Operations that ended, errors included.
    pub fn total(&self) -> u64 {
        self.ok + self.not_found + self.errors.values().sum::<u64>()
    }

    /// Latency at quantile `q`, in µs.
    pub fn quantile_us(&self, q: f64) -> u64 {
        self.latency_us.value_at_quantile(q)
    }

    fn to_json(&self, elapsed: Duration) -> Value {
        let h = &self.latency_us;
        json!({
            "ok": self.ok,
            "not_found": self.not_found,
            "errors": self.errors,
            "ops_per_s": per_second(self.total(), elapsed),
            "latency_us": {
                "p50": h.value_at_quantile(0.5),
                "p90": h.value_at_quantile(0.9),
                "p99": h.value_at_quantile(0.99),
                "p999": h.value_at_quantile(0.999),
                "max": h.max(),
                "mean": h.mean(),
            },
        })
    }
}

/// The preload that read and mixed workloads start with.
#[derive(Clone, Debug)]
pub struct PreloadReport {
    /// Keys written.
    pub keys: u64,
    /// How long it took.
    pub elapsed: Duration,
    /// Puts that failed.
    pub errors: u64,
}

/// CPU used during the measured phase.
#[derive(Clone, Debug)]
pub struct CpuUse {
    /// Seconds of CPU used by the server processes (summed).
    pub server_secs: f64,
    /// How many server processes were measured.
    pub servers: usize,
    /// Seconds of CPU used by this (load-generating) process.
    pub client_secs: f64,
}

/// A finished benchmark.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// What ran.
    pub options: BenchOptions,
    /// The preload, if one ran.
    pub preload: Option<PreloadReport>,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// How long the same workload ran, unmeasured, before the measured phase.
    pub warmup: Duration,
    /// Gets.
    pub read: OpStats,
    /// Puts.
    pub write: OpStats,
    /// CPU of the server processes and of this one, when they could be measured.
    pub cpu: Option<CpuUse>,
}

impl BenchReport {
    /// Operations that ended, of every type.
    pub fn total(&self) -> u64 {
        self.read.total() + self.write.total()
    }

    /// Server CPU per completed operation, in µs.
    pub fn server_cpu_us_per_op(&self) -> Option<f64> {
        let c = self.cpu.as_ref()?;
        (self.total() > 0).then(|| c.server_secs * 1e6 / self.total() as f64)
    }

    fn client_cpu_us_per_op(&self) -> Option<f64> {
        let c = self.cpu.as_ref()?;
        (self.total() > 0).then(|| c.client_secs * 1e6 / self.total() as f64)
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let o = &self.options;
        let mut ops = Map::new();
        if o.workload.reads() {
            ops.insert("read".into(), self.read.to_json(self.elapsed));
        }
        if o.workload.writes() {
            ops.insert("write".into(), self.write.to_json(self.elapsed));
        }
        json!({
            "ok": true,
            "op": "bench",
            "workload": o.workload.name(),
            "read_ratio": o.read_share(),
            "consistency": o.consistency.name(),
            "concurrency": o.concurrency,
            "value_size": o.value_size,
            "keys": o.keys,
            "distribution": o.distribution.name(),
            "mode": if o.rate.is_some() { "open" } else { "closed" },
            "target_rate": o.rate,
            "preload": self.preload.as_ref().map(|p| json!({
                "keys": p.keys, "elapsed_s": p.elapsed.as_secs_f64(), "errors": p.errors,
            })),
            "warmup_s": self.warmup.as_secs_f64(),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "total_ops": self.total(),
            "ops_per_s": per_second(self.total(), self.elapsed),
            "cpu": self.cpu.as_ref().map(|c| json!({
                "server_processes": c.servers,
                "server_secs": c.server_secs,
                "server_us_per_op": self.server_cpu_us_per_op(),
                "client_secs": c.client_secs,
                "client_us_per_op": self.client_cpu_us_per_op(),
            })),
            "ops": ops,
        })
    }

    /// The report as a text table.
    pub fn render(&self) -> String {
        let o = &self.options;
        let mix = match o.workload {
            Workload::Mixed => format!(" ({:.0}% reads)", o.read_share() * 100.0),
            _ => String::new(),
        };
        let mode = match o.rate {
            Some(r) => {
                format!("open loop at {r:.0} ops/s (latency from each operation's due time)")
            }
            None => "closed loop".into(),
        };
        let mut s = format!(
            "{} workload{mix}, {}, {} tasks, {}, {}-byte values, {} keys {}\n",
            o.workload.name(),
            o.consistency,
            o.concurrency,
            mode,
            o.value_size,
            o.keys,
            o.distribution.name(),
        );
        if let Some(p) = &self.preload {
            s += &format!(
                "preload: {} keys in {:.2} s, {} errors\n",
                p.keys,
                p.elapsed.as_secs_f64(),
                p.errors
            );
        }
        if !self.warmup.is_zero() {
            s += &format!(
                "warmup: {:.1} s of the same workload before the measured phase (not counted)\n",
                self.warmup.as_secs_f64()
            );
        }
        s += &format!(
            "{} ops in {:.2} s: {:.0} ops/s\n",
            self.total(),
            self.elapsed.as_secs_f64(),
            per_second(self.total(), self.elapsed)
        );
        if let (Some(c), Some(server), Some(client)) = (
            &self.cpu,
            self.server_cpu_us_per_op(),
            self.client_cpu_us_per_op(),
        ) {
            s += &format!(
                "cpu per op: {server:.1} µs in {} node processes, {client:.1} µs in this client\n",
                c.servers
            );
        }
        s += &format!(
            "{:<6} {:>9} {:>10} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>7}\n",
            "op",
            "ok",
            "ops/s",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "not found",
            "errors"
        );
        let rows = [
            ("read", &self.read, o.workload.reads()),
            ("write", &self.write, o.workload.writes()),
        ];
        for (name, st, _) in rows.iter().filter(|r| r.2) {
            let h = &st.latency_us;
            s += &format!(
                "{:<6} {:>9} {:>10.0} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>7}\n",
                name,
                st.ok,
                per_second(st.total(), self.elapsed),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
                st.not_found,
                st.errors.values().sum::<u64>()
            );
        }
        for (name, st, _) in rows.iter().filter(|r| r.2 && !r.1.errors.is_empty()) {
            let kinds: Vec<String> = st.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
            s += &format!("{name} errors: {}\n", kinds.join(" "));
        }
        s
    }
}

fn per_second(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// The key of index `i`.
pub fn key_name(i: u64) -> Vec<u8> {
    format!("bench-{i:010}").into_bytes()
}

/// Writes every key once, with `concurrency` tasks, so that reads find them.
pub async fn preload<S: Store>(store: &Arc<S>, options: &BenchOptions) -> PreloadReport {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..options.concurrency)
        .map(|_| {
            let (store, next, opts) = (store.clone(), next.clone(), options.clone());
            tokio::spawn(async move {
                let value = random_value(opts.value_size);
                let mut errors = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= opts.keys {
                        break errors;
                    }
                    if store.put(&key_name(i), &value).await.is_err() {
                        errors += 1;
                    }
                }
            })
        })
        .collect();
    let mut errors = 0;
    for t in futures::future::join_all(tasks).await {
        errors += t.unwrap_or(0);
    }
    PreloadReport {
        keys: options.keys,
        elapsed: started.elapsed(),
        errors,
    }
}

fn random_value(size: usize) -> Vec<u8> {
    let mut value = vec![0u8; size];
    StdRng::from_entropy().fill(&mut value[..]);
    value
}

/// Runs the measured phase (without preload). `done` counts finished operations as they end
/// (for a progress display). Fails only when the key distribution is impossible (see
/// [`BenchOptions::validate`]).
pub async fn run<S: Store>(
    store: Arc<S>,
    options: &BenchOptions,
    done: Arc<AtomicU64>,
) -> Result<BenchReport, ClientError> {
    let chooser = Arc::new(
        KeyChooser::new(options.keys, options.distribution).map_err(ClientError::InvalidRequest)?,
    );
    // Every task's state is made before the clock starts: two histograms of 188 KB each per
    // task (24 MB for 64 tasks) and a random source. Made by each task after the start, they
    // delayed the open-loop schedule's first operations, which were counted as waiting for the
    // store: in three 10 s runs at 12,500 writes/s, 1,092 to 2,242 operations due in the first
    // 200 ms took over 8 ms; 38 to 260 with the state made first.
    let states: Vec<WorkerState> = (0..options.concurrency)
        .map(|_| WorkerState::new(options.value_size))
        .collect();
    let started = Instant::now();
    let deadline = started + options.duration;
    let claimed = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = states
        .into_iter()
        .map(|state| {
            tokio::spawn(worker(
                store.clone(),
                options.clone(),
                state,
                chooser.clone(),
                claimed.clone(),
                done.clone(),
                started,
                deadline,
            ))
        })
        .collect();
    let mut read = OpStats::new();
    let mut write = OpStats::new();
    for (r, w) in futures::future::join_all(tasks).await.into_iter().flatten() {
        read.merge(&r);
        write.merge(&w);
    }
    Ok(BenchReport {
        options: options.clone(),
        preload: None,
        elapsed: started.elapsed(),
        warmup: Duration::ZERO,
        read,
        write,
        cpu: None,
    })
}

/// What one benchmark task owns: its random source, the value it writes and its statistics.
struct WorkerState {
    rng: StdRng,
    value: Vec<u8>,
    read: OpStats,
    write: OpStats,
}

impl WorkerState {
    fn new(value_size: usize) -> WorkerState {
        WorkerState {
            rng: StdRng::from_entropy(),
            value: random_value(value_size),
            read: OpStats::new(),
            write: OpStats::new(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn worker<S: Store>(
    store: Arc<S>,
    opts: BenchOptions,
    state: WorkerState,
    chooser: Arc<KeyChooser>,
    claimed: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    started: Instant,
    deadline: Instant,
) -> (OpStats, OpStats) {
    let WorkerState {
        mut rng,
        value,
        mut read,
        mut write,
    } = state;
    let read_share = opts.read_share();
    loop {
        let i = claimed.fetch_add(1, Ordering::Relaxed);
        if i >= opts.ops {
            break;
        }
        // When the operation's latency is counted from: its start (closed loop), or its due
        // time on the open-loop schedule when this task took it up late (every task was busy:
        // the store is behind, and the wait is part of the latency). A task that took it up
        // early sleeps until it is due and counts from when it woke (tokio's timer wakes up to
        // a millisecond late, and that lateness is the generator's, not the store's).
        let now = Instant::now();
        let counted_from = match opts.rate {
            None => now,
            Some(rate) => {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                if due >= deadline {
                    break;
                }
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                }
            }
        };
        if now >= deadline {
            break;
        }
        let key = key_name(chooser.next(&mut rng));
        if read_share > 0.0 && (read_share >= 1.0 || rng.gen_bool(read_share)) {
            let outcome = store.get(&key).await;
            read.record(counted_from, outcome);
        } else {
            let outcome = store.put(&key, &value).await;
            write.record(counted_from, outcome);
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    (read, write)
}

/// The pids of a local cluster's running nodes, from their pid files.
fn local_node_pids(dir: Option<&Path>) -> Vec<i32> {
    let Ok(cd) = ClusterDir::resolve(dir) else {
        return Vec::new();
    };
    let Ok(file) = cd.load() else {
        return Vec::new();
    };
    file.nodes
        .iter()
        .filter_map(|n| std::fs::read_to_string(cd.node_pid(n.id)).ok())
        .filter_map(|s| s.trim().parse::<i32>().ok())
        .filter(|&pid| cpu::process_cpu_secs(pid).is_some())
        .collect()
}

/// Runs the workload unmeasured for `warmup` (connections opened, the nodes' caches and
/// tables filled: what a long-running client has behind it), then the measured phase ([`run`])
/// while showing a progress bar over `options`' duration and operation count on standard error
/// (hidden when it is not a terminal), and measures the CPU `pids` and this process use during
/// the measured phase.
pub async fn measured<S: Store>(
    store: Arc<S>,
    options: &BenchOptions,
    pids: &[i32],
    show_progress: bool,
    warmup: Duration,
) -> Result<BenchReport, ClientError> {
    if !warmup.is_zero() {
        let warm = BenchOptions {
            ops: u64::MAX,
            duration: warmup,
            ..options.clone()
        };
        run(store.clone(), &warm, Arc::new(AtomicU64::new(0))).await?;
    }
    let done = Arc::new(AtomicU64::new(0));
    let bar = if show_progress {
        indicatif::ProgressBar::new(1000)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:40}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let ticker = {
        let (bar, done, opts) = (bar.clone(), done.clone(), options.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let n = done.load(Ordering::Relaxed);
                let t = started.elapsed();
                let by_time = t.as_secs_f64() / opts.duration.as_secs_f64();
                let by_ops = n as f64 / opts.ops as f64;
                bar.set_position((by_time.max(by_ops).min(1.0) * 1000.0) as u64);
                bar.set_message(format!("{n} ops, {:.0} ops/s", per_second(n, t)));
            }
        })
    };
    let cpu_before = (cpu::total_cpu_secs(pids), cpu::own_cpu_secs());
    let report = run(store, options, done).await;
    let cpu_after = (cpu::total_cpu_secs(pids), cpu::own_cpu_secs());
    ticker.abort();
    bar.finish_and_clear();
    let mut report = report?;
    report.warmup = warmup;
    if let ((Some(s0), Some(c0)), (Some(s1), Some(c1))) = (cpu_before, cpu_after) {
        if !pids.is_empty() {
            report.cpu = Some(CpuUse {
                server_secs: s1 - s0,
                servers: pids.len(),
                client_secs: c1 - c0,
            });
        }
    }
    Ok(report)
}

/// `ringkv bench`: validates, connects, preloads when reads are involved, runs, prints. Exits 0
/// when at least one operation succeeded, 1 when none did.
pub async fn run_cli(dir: Option<&Path>, out: Output, args: BenchArgs) -> i32 {
    let distribution = match args.zipfian {
        Some(theta) => Distribution::Zipfian { theta },
        None => Distribution::Uniform,
    };
    let options = BenchOptions {
        ops: args.ops,
        duration: Duration::try_from_secs_f64(args.duration).unwrap_or(Duration::ZERO),
        concurrency: args.concurrency,
        value_size: args.value_size,
        keys: args.keys,
        distribution,
        consistency: args.connect.consistency,
        workload: args.workload,
        read_ratio: args.read_ratio,
        rate: args.rate,
    };
    let warmup = match parse_warmup(args.warmup) {
        Ok(w) => w,
        Err(e) => return out.client_error(&e, Map::new()),
    };
    let client = match options.validate() {
        // The benchmark measures the cluster at the level asked: no session floors, and a
        // timed-out write counts as an error instead of being retried.
        Ok(()) => match crate::data_commands::client_config(dir, &args.connect) {
            Ok(mut cfg) => {
                cfg.session_keys = 0;
                cfg.write_retries = 0;
                cfg.coordinator_window = Duration::from_millis(args.coordinator_window_ms);
                Client::connect(cfg).await
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let client = match client {
        Ok(c) => Arc::new(c),
        Err(e) => return out.client_error(&e, Map::new()),
    };
    let preloaded = if options.workload.reads() {
        if !out.json {
            eprintln!("preloading {} keys at QUORUM...", options.keys);
        }
        let quorum = Arc::new(RingkvStore {
            client: client.clone(),
            consistency: Consistency::Quorum,
        });
        Some(preload(&quorum, &options).await)
    } else {
        None
    };
    // Only a cluster started from a cluster directory has pid files; with --node the nodes
    // may be anywhere, so no CPU figure is given.
    let pids = if args.connect.nodes.is_empty() {
        local_node_pids(dir)
    } else {
        Vec::new()
    };
    let store = Arc::new(RingkvStore {
        client,
        consistency: options.consistency,
    });
    let mut report = match measured(store, &options, &pids, !out.json, warmup).await {
        Ok(r) => r,
        Err(e) => return out.client_error(&e, Map::new()),
    };
    report.preload = preloaded;
    if out.json {
        out.print_json(&report.to_json());
    } else {
        print!("{}", report.render());
    }
    if report.read.ok + report.read.not_found + report.write.ok > 0 {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn options(workload: Workload, consistency: Consistency) -> BenchOptions {
        BenchOptions {
            ops: 10,
            duration: Duration::from_secs(1),
            concurrency: 2,
            value_size: 100,
            keys: 10,
            distribution: Distribution::Uniform,
            consistency,
            workload,
            read_ratio: 0.5,
            rate: None,
        }
    }

    #[test]
    fn stats_time_successes_and_count_errors_by_kind() {
        let mut s = OpStats::new();
        let t = Instant::now();
        s.record(t, Ok(Outcome::Done));
        s.record(t, Ok(Outcome::NotFound));
        s.record(t, Err("Overloaded"));
        s.record(t, Err("Overloaded"));
        assert_eq!((s.ok, s.not_found, s.total()), (1, 1, 4));
        assert_eq!(s.latency_us.len(), 2, "errors are not timed");
        assert_eq!(s.errors.get("Overloaded"), Some(&2));
        let mut sum = OpStats::new();
        sum.merge(&s);
        sum.merge(&s);
        assert_eq!(
            (
                sum.total(),
                sum.latency_us.len(),
                sum.errors.get("Overloaded")
            ),
            (8, 4, Some(&4))
        );
    }

    #[test]
    fn impossible_options_are_refused_before_connecting() {
        assert!(options(Workload::Write, Consistency::Any)
            .validate()
            .is_ok());
        assert!(options(Workload::Read, Consistency::Any)
            .validate()
            .is_err());
        assert!(options(Workload::Mixed, Consistency::Any)
            .validate()
            .is_err());
        let one = || options(Workload::Write, Consistency::One);
        for bad in [
            BenchOptions {
                value_size: MAX_VALUE_BYTES + 1,
                ..one()
            },
            BenchOptions {
                concurrency: 0,
                ..one()
            },
            BenchOptions {
                read_ratio: 1.5,
                ..one()
            },
            BenchOptions {
                rate: Some(0.0),
                ..one()
            },
            BenchOptions {
                distribution: Distribution::Zipfian { theta: 1.2 },
                ..one()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reports_show_only_the_operations_of_the_workload() {
        let report = BenchReport {
            options: options(Workload::Write, Consistency::Quorum),
            preload: None,
            elapsed: Duration::from_secs(2),
            warmup: Duration::ZERO,
            read: OpStats::new(),
            write: OpStats::new(),
            cpu: None,
        };
        let v = report.to_json();
        assert!(
            v["ops"].get("write").is_some() && v["ops"].get("read").is_none(),
            "{v}"
        );
        let text = report.render();
        assert!(text.contains("write") && !text.contains("\nread"), "{text}");
    }

    /// A store that takes a fixed time per operation and records what it was asked.
    struct SlowStore {
        delay: Duration,
        seen: Mutex<Vec<(bool, Vec<u8>)>>,
    }

    impl SlowStore {
        async fn pause(&self) {
            // A zero sleep would still wait for the timer's next tick.
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
        }
    }

    impl Store for SlowStore {
        async fn put(&self, key: &[u8], _value: &[u8]) -> OpResult {
            self.seen.lock().unwrap().push((false, key.to_vec()));
            self.pause().await;
            Ok(Outcome::Done)
        }
        async fn get(&self, key: &[u8]) -> OpResult {
            self.seen.lock().unwrap().push((true, key.to_vec()));
            self.pause().await;
            Ok(Outcome::NotFound)
        }
    }

    fn slow(delay_ms: u64) -> Arc<SlowStore> {
        Arc::new(SlowStore {
            delay: Duration::from_millis(delay_ms),
            seen: Mutex::new(Vec::new()),
        })
    }

    #[tokio::test]
    async fn mixed_runs_follow_the_read_ratio_and_the_operation_count() {
        let store = slow(0);
        let opts = BenchOptions {
            ops: 4000,
            duration: Duration::from_secs(30),
            concurrency: 8,
            read_ratio: 0.9,
            ..options(Workload::Mixed, Consistency::One)
        };
        let report = run(store.clone(), &opts, Arc::default()).await.unwrap();
        assert_eq!(report.total(), 4000);
        let reads = store.seen.lock().unwrap().iter().filter(|s| s.0).count();
        assert!((3400..3800).contains(&reads), "{reads} reads of 4000");
        assert_eq!(report.read.not_found as usize, reads);
    }

    #[tokio::test]
    async fn open_loop_latency_counts_the_wait_behind_a_slow_store() {
        // One task, 100 ops/s scheduled, but each operation takes 50 ms: operations fall ever
        // further behind their due times, and the latencies show it (closed loop would report
        // a flat 50 ms).
        let store = slow(50);
        let opts = BenchOptions {
            ops: 20,
            duration: Duration::from_secs(60),
            concurrency: 1,
            rate: Some(100.0),
            ..options(Workload::Write, Consistency::One)
        };
        let report = run(store.clone(), &opts, Arc::default()).await.unwrap();
        assert_eq!(report.write.ok, 20);
        // The 20th op was due at 190 ms and ended at 1000 ms or later.
        let max = report.write.latency_us.max();
        assert!((800_000..=2_000_000).contains(&max), "max {max} µs");
        let closed = run(
            store,
            &BenchOptions {
                rate: None,
                ..opts.clone()
            },
            Arc::default(),
        )
        .await
        .unwrap();
        assert!(closed.write.latency_us.value_at_quantile(0.5) < 150_000);
    }

    #[tokio::test]
    async fn closed_loop_never_waits_on_a_timer() {
        // Back-to-back operations on an instant store: 500 of them take far less than the
        // 500 ms they would if each waited for a (millisecond) timer tick.
        let opts = BenchOptions {
            ops: 500,
            duration: Duration::from_secs(60),
            concurrency: 1,
            ..options(Workload::Write, Consistency::One)
        };
        let report = run(slow(0), &opts, Arc::default()).await.unwrap();
        assert_eq!(report.write.ok, 500);
        assert!(
            report.elapsed < Duration::from_millis(250),
            "{:?}",
            report.elapsed
        );
    }

    #[tokio::test]
    async fn open_loop_does_not_count_the_timers_own_lateness() {
        // An instant store that keeps up: each operation is started by a timer that may fire up
        // to a millisecond late; that is the generator's delay, not the store's.
        let opts = BenchOptions {
            ops: 200,
            duration: Duration::from_secs(60),
            concurrency: 4,
            rate: Some(400.0),
            ..options(Workload::Write, Consistency::One)
        };
        let report = run(slow(0), &opts, Arc::default()).await.unwrap();
        assert_eq!(report.write.ok, 200);
        assert!(
            report.write.quantile_us(0.5) < 500,
            "{}",
            report.write.quantile_us(0.5)
        );
    }

    #[tokio::test]
    async fn open_loop_keeps_to_its_rate_when_the_store_keeps_up() {
        let store = slow(1);
        let opts = BenchOptions {
            ops: 1_000_000,
            duration: Duration::from_secs(2),
            concurrency: 4,
            rate: Some(500.0),
            ..options(Workload::Write, Consistency::One)
        };
        let report = run(store, &opts, Arc::default()).await.unwrap();
        // Ops are due every 2 ms until the 2 s deadline: about 1000 of them, not as many as
        // four tasks could run closed-loop.
        assert!(
            (900..=1000).contains(&report.write.ok),
            "{}",
            report.write.ok
        );
        assert!(report.write.quantile_us(0.5) < 20_000);
    }
}
