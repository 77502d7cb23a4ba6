//! `ringkv-node --config FILE`: runs one ringkv node until SIGTERM or SIGINT.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;

/// A ringkv node.
#[derive(Parser)]
#[command(
    name = "ringkv-node",
    version,
    about = "A ringkv node: stores replicas and coordinates requests"
)]
struct Args {
    /// Path to the node's TOML configuration.
    #[arg(long, short)]
    config: PathBuf,
}

// Rust allocations (frames, records, tasks) go through mimalloc: glibc's malloc showed up in
// the profile of the request path at several percent (consolidating and unlinking chunks).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for an unusable configuration (distinct from runtime failures, which exit 1).
const EXIT_CONFIG: i32 = 78;

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match node::config::NodeConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    // A small fixed number of runtime threads: the node shares the machine with its peers (with
    // one, tokio's current-thread scheduler on this thread).
    let mut builder = proto::transport::runtime_builder(cfg.runtime_threads());
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cfg)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The memtable size of node `id`: 8, 9 or 10 MiB by id. Replicas of the same ranges receive
/// the same writes; with equal memtables they flushed, and then compacted their whole data set,
/// at the same moment, and three compactions at once took the cores from the requests. Sizes
/// that differ by an eighth spread those moments apart (all stay small enough for the memtable
/// inserts to hit the CPU caches, see `RocksOptions::write_buffer_bytes`).
fn staggered_write_buffer(id: u32) -> usize {
    (8 + (id as usize % 3)) << 20
}

async fn run(cfg: node::config::NodeConfig) -> anyhow::Result<()> {
    let opts = storage::RocksOptions {
        sync_writes: cfg.durability.mode == node::config::DurabilityMode::Sync,
        write_buffer_bytes: staggered_write_buffer(cfg.node_id),
        ..Default::default()
    };
    let path = cfg.data_dir.clone();
    let engine = tokio::task::spawn_blocking(move || storage::RocksEngine::open(&path, opts))
        .await?
        .with_context(|| format!("opening storage at {}", cfg.data_dir.display()))?;
    let engine: Arc<dyn storage::Engine> = Arc::new(engine);
    let running = node::node::start(cfg, engine.clone()).await?;
    eprintln!(
        "ringkv-node {} listening on {}",
        running.node.id, running.addr
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("signal received; shutting down");
    running.shutdown().await;
    tokio::task::spawn_blocking(move || engine.flush()).await??;
    Ok(())
}
