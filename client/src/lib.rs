//! The ringkv client library and the `ringkv` command-line tool.
//!
//! A [`Client`] connects to any node of a cluster, learns the topology and sends each request to
//! a replica of its key, at the consistency level the caller chooses. Around it sit the pieces of
//! the `ringkv` binary: a launcher for local clusters of real `ringkv-node` processes (also used
//! by integration tests and the jepsen harness), the data commands and a benchmark.
//!
//! # Layout
//! - [`client`]: [`Client`], [`ClientConfig`], token-aware routing (with coordinator windows),
//!   request size checks.
//! - [`session`]: [`session::Session`], the per-key versions behind read-your-writes and
//!   monotonic reads, and its file form for the CLI.
//! - [`error`]: [`ClientError`], with a stable CLI exit status per kind.
//! - [`cluster_dir`]: the cluster directory (`cluster.toml`, certificates, per-node
//!   `node.toml`): planning a layout, writing it, loading it, [`ClusterError`].
//! - [`launcher`]: [`LocalCluster`], starting, stopping and watching node processes, and
//!   [`launcher::ClusterGuard`], which stops them on drop.
//! - [`cli`]: the command line (clap definitions, dispatch, exit status table).
//! - [`output`]: text or `--json` output, and error reporting.
//! - [`data_commands`]: `put`, `get`, `delete`.
//! - [`cluster_commands`]: `cluster up/down/status/stop-node/start-node`.
//! - [`bench`]: `bench`, the load generator (closed or open loop, generic over a
//!   [`bench::Store`] so `ringkv-compare` drives etcd and Redis with it too), with
//!   [`bench::keys`] (uniform and scrambled zipfian key choice) and [`bench::cpu`] (process CPU
//!   time from `/proc`).
//! - [`admin_commands`]: `repair` and `get --replica`.

pub mod admin_commands;
pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster_commands;
pub mod cluster_dir;
pub mod data_commands;
pub mod error;
pub mod launcher;
pub mod output;
pub mod session;

pub use client::{Client, ClientConfig, ReadOutcome, WriteOutcome};
pub use cluster_dir::{ClusterDir, ClusterError, CreateOptions};
pub use error::ClientError;
pub use launcher::{LocalCluster, StopSignal};
