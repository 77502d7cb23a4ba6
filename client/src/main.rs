//! `ringkv`: parses the command line, sets up logging (RUST_LOG, default `warn`, on stderr) and
//! runs the command; the process exits with the status the command returns (see `--help`).

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    // Usage errors exit here with status 2, help and version with 0.
    let cli = client::cli::Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    std::process::exit(client::cli::run(cli));
}
