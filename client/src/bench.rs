//! `ringkv bench`: a closed-loop benchmark. `concurrency` tasks share one [`Client`]; each runs
//! one operation at a time on uniformly random keys until the operation count or the duration
//! runs out. Latencies of completed operations go into HDR histograms (µs); errors are counted
//! by kind, not timed.

use crate::cli::BenchArgs;
use crate::client::Client;
use crate::data_commands::{check_read_level, connect};
use crate::error::ClientError;
use crate::output::Output;
use hdrhistogram::Histogram;
use proto::limits::MAX_VALUE_BYTES;
use proto::Consistency;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which operations a benchmark runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Puts only.
    Write,
    /// Gets only, of keys written by a preload first.
    Read,
    /// Half gets, half puts, after a preload.
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

    fn reads(self) -> bool {
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
    /// Operations in flight at once.
    pub concurrency: usize,
    /// Bytes per written value.
    pub value_size: usize,
    /// Distinct keys (`bench-0000000000` ..).
    pub keys: u64,
    /// Level of every measured operation.
    pub consistency: Consistency,
    /// Which operations.
    pub workload: Workload,
}

impl BenchOptions {
    /// Refuses options that cannot run, before connecting.
    pub fn validate(&self) -> Result<(), ClientError> {
        let bad = |m: &str| Err(ClientError::InvalidRequest(m.to_string()));
        if self.concurrency == 0 || self.keys == 0 || self.ops == 0 {
            return bad("--concurrency, --keys and --ops must be at least 1");
        }
        if self.duration.is_zero() {
            return bad("--duration must be positive");
        }
        if self.value_size > MAX_VALUE_BYTES {
            return Err(ClientError::InvalidRequest(format!(
                "--value-size {} exceeds the {MAX_VALUE_BYTES}-byte value limit",
                self.value_size
            )));
        }
        if self.workload.reads() {
            check_read_level(self.consistency)?;
        }
        Ok(())
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
    /// Failed operations by error kind ([`ClientError::kind`]).
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

    fn record(&mut self, started: Instant, outcome: Result<(), ClientError>) {
        let us = u64::try_from(started.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_LATENCY_US);
        match outcome {
            Ok(()) => self.ok += 1,
            Err(ClientError::NotFound) => self.not_found += 1,
            Err(e) => {
                *self.errors.entry(e.kind()).or_default() += 1;
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

/// A finished benchmark.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// What ran.
    pub options: BenchOptions,
    /// The preload, if one ran.
    pub preload: Option<PreloadReport>,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Gets.
    pub read: OpStats,
    /// Puts.
    pub write: OpStats,
}

impl BenchReport {
    /// Operations that ended, of every type.
    pub fn total(&self) -> u64 {
        self.read.total() + self.write.total()
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
            "consistency": o.consistency.name(),
            "concurrency": o.concurrency,
            "value_size": o.value_size,
            "keys": o.keys,
            "preload": self.preload.as_ref().map(|p| json!({
                "keys": p.keys, "elapsed_s": p.elapsed.as_secs_f64(), "errors": p.errors,
            })),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "total_ops": self.total(),
            "ops_per_s": per_second(self.total(), self.elapsed),
            "ops": ops,
        })
    }

    /// The report as a text table.
    pub fn render(&self) -> String {
        let o = &self.options;
        let mut s = format!(
            "{} workload, {}, {} tasks, {}-byte values, {} keys\n",
            o.workload.name(),
            o.consistency,
            o.concurrency,
            o.value_size,
            o.keys
        );
        if let Some(p) = &self.preload {
            s += &format!(
                "preload: {} keys in {:.2} s, {} errors\n",
                p.keys,
                p.elapsed.as_secs_f64(),
                p.errors
            );
        }
        s += &format!(
            "{} ops in {:.2} s: {:.0} ops/s\n",
            self.total(),
            self.elapsed.as_secs_f64(),
            per_second(self.total(), self.elapsed)
        );
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

/// Writes every key once at QUORUM (so reads at any level a live cluster can serve find them),
/// with `concurrency` tasks.
pub async fn preload(client: &Arc<Client>, options: &BenchOptions) -> PreloadReport {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..options.concurrency)
        .map(|_| {
            let (client, next, opts) = (client.clone(), next.clone(), options.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::from_entropy();
                let mut value = vec![0u8; opts.value_size];
                rng.fill(&mut value[..]);
                let mut errors = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= opts.keys {
                        break errors;
                    }
                    if client
                        .put(&key_name(i), &value, Consistency::Quorum)
                        .await
                        .is_err()
                    {
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

/// Runs the measured phase (without preload).
pub async fn run(client: Arc<Client>, options: &BenchOptions) -> BenchReport {
    let started = Instant::now();
    let deadline = started + options.duration;
    let claimed = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..options.concurrency)
        .map(|_| {
            tokio::spawn(worker(
                client.clone(),
                options.clone(),
                claimed.clone(),
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
    BenchReport {
        options: options.clone(),
        preload: None,
        elapsed: started.elapsed(),
        read,
        write,
    }
}

async fn worker(
    client: Arc<Client>,
    opts: BenchOptions,
    claimed: Arc<AtomicU64>,
    deadline: Instant,
) -> (OpStats, OpStats) {
    let mut rng = StdRng::from_entropy();
    let mut value = vec![0u8; opts.value_size];
    rng.fill(&mut value[..]);
    let (mut read, mut write) = (OpStats::new(), OpStats::new());
    while Instant::now() < deadline && claimed.fetch_add(1, Ordering::Relaxed) < opts.ops {
        let key = key_name(rng.gen_range(0..opts.keys));
        let is_read = match opts.workload {
            Workload::Read => true,
            Workload::Write => false,
            Workload::Mixed => rng.gen_bool(0.5),
        };
        let started = Instant::now();
        if is_read {
            let outcome = client.get(&key, opts.consistency).await.map(|_| ());
            read.record(started, outcome);
        } else {
            let outcome = client.put(&key, &value, opts.consistency).await.map(|_| ());
            write.record(started, outcome);
        }
    }
    (read, write)
}

/// `ringkv bench`: validates, connects, preloads when reads are involved, runs, prints. Exits 0
/// when at least one operation succeeded, 1 when none did.
pub async fn run_cli(dir: Option<&Path>, out: Output, args: BenchArgs) -> i32 {
    let options = BenchOptions {
        ops: args.ops,
        duration: Duration::try_from_secs_f64(args.duration).unwrap_or(Duration::ZERO),
        concurrency: args.concurrency,
        value_size: args.value_size,
        keys: args.keys,
        consistency: args.connect.consistency,
        workload: args.workload,
    };
    let client = match options.validate() {
        Ok(()) => connect(dir, &args.connect).await,
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
        Some(preload(&client, &options).await)
    } else {
        None
    };
    let mut report = run(client, &options).await;
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

    fn options(workload: Workload, consistency: Consistency) -> BenchOptions {
        BenchOptions {
            ops: 10,
            duration: Duration::from_secs(1),
            concurrency: 2,
            value_size: 100,
            keys: 10,
            consistency,
            workload,
        }
    }

    #[test]
    fn stats_time_successes_and_count_errors_by_kind() {
        let mut s = OpStats::new();
        let t = Instant::now();
        s.record(t, Ok(()));
        s.record(t, Err(ClientError::NotFound));
        s.record(t, Err(ClientError::Overloaded("busy".into())));
        s.record(t, Err(ClientError::Overloaded("busy".into())));
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
        let big = BenchOptions {
            value_size: MAX_VALUE_BYTES + 1,
            ..options(Workload::Write, Consistency::One)
        };
        assert!(big.validate().is_err());
        let idle = BenchOptions {
            concurrency: 0,
            ..options(Workload::Write, Consistency::One)
        };
        assert!(idle.validate().is_err());
    }

    #[test]
    fn reports_show_only_the_operations_of_the_workload() {
        let report = BenchReport {
            options: options(Workload::Write, Consistency::Quorum),
            preload: None,
            elapsed: Duration::from_secs(2),
            read: OpStats::new(),
            write: OpStats::new(),
        };
        let v = report.to_json();
        assert!(
            v["ops"].get("write").is_some() && v["ops"].get("read").is_none(),
            "{v}"
        );
        let text = report.render();
        assert!(text.contains("write") && !text.contains("\nread"), "{text}");
    }
}
