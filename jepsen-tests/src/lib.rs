//! Jepsen-style black-box tests of real ringkv clusters.
//!
//! The harness starts a cluster of `ringkv-node` processes, each on its own network host (a
//! Linux network namespace per node, joined by a bridge; loopback when not root), drives it with
//! concurrent clients that use only the `client` library, injects faults on a schedule
//! (partitions with nftables, kill -9, SIGSTOP, clock skew with libfaketime), records every
//! operation in a history, heals, runs a repair round, and checks the history: no acknowledged
//! write lost (set), linearizability (register), and replicas converged. Each run writes a
//! directory with the history, the checker results and an HTML report with SVG plots.
//!
//! Run it with `cargo run --release -p jepsen-tests -- --help` (see the crate's README).
//!
//! # Layout
//! - [`scenario`]: [`Scenario`], one run from empty directory to checked report ([`scenario::run`]).
//! - [`suite`]: the short (CI) and full matrices and their Markdown table.
//! - [`cluster`]: node processes (in namespaces or on loopback), their configs, process faults.
//! - [`netns`]: namespaces, bridge and veths per run; nftables partition rules; cleanup.
//! - [`partition`]: partition shapes (halves, one, majorities ring, bridge), pure planning.
//! - [`nemesis`]: fault kinds, the fault/heal schedule, nemesis windows.
//! - [`workload`]: the set and register client tasks, final reads, error-to-outcome mapping.
//! - [`admin`]: Status, Repair and Inspect requests to single nodes.
//! - [`history`]: operations, the concurrent recorder, JSON lines.
//! - [`checker`]: set, register (linearizability) and convergence checkers.
//! - [`report`]: `results.json`, `index.html` with SVG plots, the text summary.
//! - [`error`]: [`HarnessError`] and the CLI exit statuses.

#![warn(missing_docs)]

pub mod admin;
pub mod checker;
pub mod cluster;
pub mod error;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod partition;
pub mod report;
pub mod scenario;
pub mod suite;
pub mod workload;

pub use error::HarnessError;
pub use scenario::{RunOptions, RunReport, Scenario};
