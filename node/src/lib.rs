//! The ringkv node: a leaderless replica that coordinates any client request.
//!
//! # Layout
//! - [`config`]: the TOML configuration file and its validation.
//! - [`node`]: a running node's shared state, the request handler, start-up and shutdown.
//! - [`coordinator`]: coordinating puts, deletes and gets across a key's replicas.
//! - [`levels`]: what each consistency level requires of a key's replicas.
//! - [`failure_detector`]: the phi-accrual failure detector (liveness of peers).
//! - [`membership`]: the gossiped ring state, this node's view of it, and topology changes
//!   (staging, commit, range streaming, the transition driver).
//! - [`local_store`]: the storage engine behind a batching writer thread and the blocking pool;
//!   keeps the Merkle trees current on every write.
//! - [`replica_batcher`]: per-peer queues that send a coordinator's replica writes in batches.
//! - [`op_memory`]: the bounded memory of client write op ids and their versions (safe retries).
//! - [`hinted_handoff`]: durable hints for replicas that missed writes, and their replay.
//! - [`anti_entropy`]: Merkle-tree comparison with other replicas, and tombstone purge.
//! - [`metrics`]: the Prometheus text endpoint.
//!
//! A request flows: transport (proto) -> [`node::Node`] handler -> [`coordinator`] -> replica
//! requests to peers (or [`local_store`] for this node) -> answer when the level is met.

pub mod anti_entropy;
pub mod config;
pub mod coordinator;
pub mod failure_detector;
pub mod hinted_handoff;
pub mod levels;
pub mod local_store;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod op_memory;
pub mod replica_batcher;
