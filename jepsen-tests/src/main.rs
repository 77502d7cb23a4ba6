//! `ringkv-jepsen`: runs one scenario or a suite against real `ringkv-node` processes, prints a
//! one-screen summary per scenario, and exits 0 (every checker passed), 1 (a checker failed),
//! 2 (usage error) or 3 (setup failure, for example a partition nemesis without root).

use clap::Parser;
use jepsen_tests::error::{EXIT_CHECK_FAILED, EXIT_OK, EXIT_SETUP};
use jepsen_tests::nemesis::{NemesisKind, Schedule};
use jepsen_tests::scenario::NetMode;
use jepsen_tests::suite::{self, SuiteKind};
use jepsen_tests::workload::{Coordinators, WorkloadKind};
use jepsen_tests::{report, scenario, RunOptions, Scenario};
use proto::Consistency;
use std::path::PathBuf;
use std::time::Duration;

/// Jepsen-style fault tests of a real ringkv cluster.
#[derive(Parser, Debug)]
#[command(
    name = "ringkv-jepsen",
    version,
    after_help = "Exit status: 0 all checkers passed, 1 a checker failed, 2 usage error, 3 setup failure.\n\
                  Example: ringkv-jepsen --nodes 5 --workload set --consistency quorum --nemesis partition-halves --time 60"
)]
struct Args {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Replication factor.
    #[arg(long, default_value_t = 3)]
    rf: usize,
    /// Workload: `set` (unique-key writes, all read back at the end) or `register` (reads and
    /// writes of a few keys, checked for linearizability).
    #[arg(long, value_enum, default_value_t = WorkloadKind::Set)]
    workload: WorkloadKind,
    /// Consistency level of the workload's reads and writes (one, quorum, all, ...).
    #[arg(long, default_value = "quorum", value_parser = parse_level)]
    consistency: Consistency,
    /// The fault to inject.
    #[arg(long, value_enum, default_value_t = NemesisKind::None)]
    nemesis: NemesisKind,
    /// Seconds of workload.
    #[arg(long, default_value_t = 30)]
    time: u64,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Total operations per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Keys of the register workload.
    #[arg(long, default_value_t = 5)]
    keys: usize,
    /// Coordinator of each operation: `token` (the client library's routing with its
    /// coordinator windows off: the key's first live replica) or `random` (a node drawn per
    /// operation, up or not; seeded by --seed).
    #[arg(long, value_enum, default_value_t = Coordinators::Token)]
    coordinators: Coordinators,
    /// Times the client library resends a write that ended ambiguously (same op id).
    #[arg(long, default_value_t = client::client::DEFAULT_WRITE_RETRIES)]
    write_retries: u32,
    /// Seconds each fault lasts.
    #[arg(long, default_value_t = 5)]
    fault_secs: u64,
    /// Seconds of quiet before the first fault and between faults.
    #[arg(long, default_value_t = 5)]
    quiet_secs: u64,
    /// Where nodes run: auto (namespaces when root, else loopback), netns, loopback.
    #[arg(long, value_enum, default_value_t = NetMode::Auto)]
    net: NetMode,
    /// Directory for run directories (default: jepsen-tests/runs).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The ringkv-node binary (default: $RINGKV_NODE_BIN, next to this binary, or on PATH).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Run a matrix instead of one scenario: `short` (the CI suite), `full`, or `linearizable`
    /// (the register at LINEARIZABLE and QUORUM with random coordinators, every nemesis).
    #[arg(long, value_enum)]
    suite: Option<SuiteKind>,
    /// Seed of the random choices (nemesis targets, register keys, random coordinators).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Keep the nodes' data directories after the run.
    #[arg(long)]
    keep_data: bool,
    /// Name of the run (default: workload-level-nemesis).
    #[arg(long)]
    name: Option<String>,
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM with what happened and the exit status shells use
/// for it (128 + the signal number).
async fn interrupted() -> (&'static str, i32) {
    use tokio::signal::unix::{signal, SignalKind};
    const INTERRUPTED: (&str, i32) = ("interrupted", 130);
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => INTERRUPTED,
            _ = term.recv() => ("terminated", 143),
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            INTERRUPTED
        }
    }
}

fn parse_level(s: &str) -> Result<Consistency, String> {
    s.parse::<Consistency>().map_err(|e| e.to_string())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,jepsen_tests=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(EXIT_SETUP);
        }
    };
    let code = runtime.block_on(async {
        tokio::select! {
            code = run(args) => code,
            (what, code) = interrupted() => {
                eprintln!("{what}: stopping nodes and removing the network");
                code
            }
        }
    });
    // Dropping the runtime drops every task still holding the cluster, which kills the nodes and
    // removes the namespaces.
    drop(runtime);
    std::process::exit(code);
}

async fn run(args: Args) -> i32 {
    let opts = RunOptions {
        out_root: args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("runs")),
        node_bin: args.node_bin.clone(),
        keep_data: args.keep_data,
    };
    if let Some(kind) = args.suite {
        return run_suite(kind, &opts, args.seed).await;
    }
    let s = scenario_of(&args);
    match scenario::run(&s, &opts).await {
        Ok(r) => {
            print!("{}", report::summary(&r));
            if r.all_checks_valid() && r.passed {
                EXIT_OK
            } else {
                EXIT_CHECK_FAILED
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn scenario_of(args: &Args) -> Scenario {
    let mut s = Scenario::new(args.workload, args.consistency, args.nemesis);
    s.coordinators = args.coordinators;
    s.write_retries = args.write_retries;
    s.name = match &args.name {
        Some(name) => name.clone(),
        None => s.default_name(),
    };
    if s.workload == WorkloadKind::Register && s.consistency == Consistency::Linearizable {
        // Promised at this level: a search that ran out of budget is not a pass.
        s.must_be_valid = vec!["linearizability".into()];
    }
    s.nodes = args.nodes;
    s.rf = args.rf;
    s.time = Duration::from_secs(args.time);
    s.concurrency = args.concurrency;
    s.rate = args.rate;
    s.keys = args.keys;
    s.net = args.net;
    s.seed = args.seed;
    s.schedule = Schedule {
        quiet: Duration::from_secs(args.quiet_secs),
        fault: Duration::from_secs(args.fault_secs),
    };
    s
}

async fn run_suite(kind: SuiteKind, opts: &RunOptions, seed: u64) -> i32 {
    let mut scenarios = suite::scenarios(kind);
    for s in &mut scenarios {
        s.seed = seed;
    }
    println!(
        "running the {kind:?} suite: {} scenario(s)",
        scenarios.len()
    );
    let rows = suite::run(scenarios, opts, |row| match &row.result {
        Ok(r) => print!("{}", report::summary(r)),
        Err(e) => println!("== {}: setup error: {e}", row.scenario.name),
    })
    .await;
    let table = suite::markdown(&rows);
    println!("\n{table}");
    let path = opts
        .out_root
        .join(format!("suite-{kind:?}.md").to_lowercase());
    if let Err(e) = std::fs::write(&path, &table) {
        eprintln!("cannot write {}: {e}", path.display());
    } else {
        println!("table written to {}", path.display());
    }
    let failed = rows
        .iter()
        .any(|r| matches!(&r.result, Ok(rep) if !rep.passed));
    let errors = rows.iter().any(|r| r.result.is_err());
    if failed {
        EXIT_CHECK_FAILED
    } else if errors {
        EXIT_SETUP
    } else {
        EXIT_OK
    }
}
