//! Workloads: client tasks that talk to the cluster only through the `client` library, each as a
//! user would, and record every operation in the history.
//!
//! - set: every write puts a new unique key; at the end every key is read at ALL.
//! - register: a few keys, concurrent reads and writes of unique values.
//!
//! Every operation goes either where the client library routes it with its coordinator windows
//! off (token-aware: the key's first live replica) or, with [`Coordinators::Random`], to a node
//! drawn at random for that operation (`put_via`/`get_via`), so one key's operations are
//! coordinated by every node in turn.
//!
//! Every loop is bounded in count and time, and paced to a total rate.

use crate::history::{Op, OpKind, Outcome, Phase, Recorder};
use client::{Client, ClientError};
use futures::StreamExt;
use proto::Consistency;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ring::NodeId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Attempts of one final read (a transient error is retried after a pause).
const FINAL_READ_ATTEMPTS: usize = 6;
/// Pause between final read attempts.
const FINAL_READ_RETRY: Duration = Duration::from_millis(500);
/// Final reads in flight at once.
const FINAL_READ_CONCURRENCY: usize = 16;

/// Which workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// Unique-key writes, all read back at the end.
    Set,
    /// Reads and writes of a few keys.
    Register,
}

impl WorkloadKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Set => "set",
            WorkloadKind::Register => "register",
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which node coordinates each operation.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Coordinators {
    /// The client library's token-aware routing without coordinator windows: the key's first
    /// live replica, so while it is up every request for a key goes to the same node.
    #[default]
    Token,
    /// A node drawn at random for every operation, up or not (seeded by `--seed`).
    Random,
}

impl Coordinators {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Coordinators::Token => "token",
            Coordinators::Random => "random",
        }
    }
}

impl std::fmt::Display for Coordinators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Mixed into the seed of the coordinator choices, so they are drawn from a stream of their own
/// and the keys, values and read/write choices are the same under either [`Coordinators`] mode.
const COORDINATOR_SEED_SALT: u64 = 0x636f_6f72_6469_6e61;

/// The random stream of worker `index`'s coordinator choices.
pub fn coordinator_rng(seed: u64, index: u32) -> StdRng {
    StdRng::seed_from_u64((seed ^ COORDINATOR_SEED_SALT).wrapping_add(u64::from(index)))
}

/// Draws the coordinator of one operation uniformly from `nodes` (up or not: a request to a
/// node that is down fails to connect, and is recorded as `fail`). `None` when `nodes` is empty.
pub fn pick_coordinator(rng: &mut impl Rng, nodes: &[NodeId]) -> Option<NodeId> {
    (!nodes.is_empty()).then(|| nodes[rng.gen_range(0..nodes.len())])
}

/// How one workload runs.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Which workload.
    pub kind: WorkloadKind,
    /// Level of every read and write in the main phase.
    pub consistency: Consistency,
    /// Total operations per second over all workers.
    pub rate: u32,
    /// Keys of the register workload.
    pub keys: usize,
    /// Most operations one worker issues.
    pub max_ops_per_worker: u64,
    /// Seed of the workers' random choices.
    pub seed: u64,
    /// Which node coordinates each operation.
    pub coordinators: Coordinators,
}

/// Maps a client error to the history outcome: `fail` when the request certainly had no effect,
/// `info` when it may have had one.
pub fn outcome_of(e: &ClientError) -> Outcome {
    match e {
        // Nothing was sent, or the node refused before doing anything.
        ClientError::Unavailable { .. }
        | ClientError::Overloaded(_)
        | ClientError::InvalidRequest(_)
        | ClientError::Unauthorized(_)
        | ClientError::Connect(_)
        | ClientError::Config(_) => Outcome::Fail,
        // A read that found no replica as new as the session's floor returned nothing; a write
        // the coordinator could not stamp within its clock bound wrote nothing.
        ClientError::Stale(_) | ClientError::ClockSkew(_) => Outcome::Fail,
        // Sent, and the reply was lost, late or an internal error: unknown.
        ClientError::Timeout { .. } | ClientError::Server(_) | ClientError::NotFound => {
            Outcome::Info
        }
    }
}

/// One worker: its client, its process numbering, its pacing.
struct Worker {
    index: u32,
    workers: u32,
    generation: u32,
    client: Arc<Client>,
    recorder: Arc<Recorder>,
    cfg: WorkloadConfig,
    rng: StdRng,
    /// Draws coordinators (random mode only).
    coordinator_rng: StdRng,
    /// Every member of the cluster, by id.
    nodes: Vec<NodeId>,
}

impl Worker {
    fn process(&self) -> u32 {
        self.index + self.workers * self.generation
    }

    /// The coordinator of the next operation: `None` for the library's own routing.
    fn coordinator(&mut self) -> Option<NodeId> {
        match self.cfg.coordinators {
            Coordinators::Token => None,
            Coordinators::Random => pick_coordinator(&mut self.coordinator_rng, &self.nodes),
        }
    }

    /// Records an operation; after an `info` the worker continues as a new process.
    fn record(&mut self, mut op: Op) {
        op.process = self.process();
        if op.outcome == Outcome::Info {
            self.generation += 1;
        }
        self.recorder.record(op);
    }

    async fn run(mut self, deadline: Instant) {
        let period =
            Duration::from_secs_f64(f64::from(self.workers) / f64::from(self.cfg.rate.max(1)));
        // Spread the workers' first operations over one period.
        let mut next =
            Instant::now() + period.mul_f64(f64::from(self.index) / f64::from(self.workers));
        let mut n: u64 = 0;
        while n < self.cfg.max_ops_per_worker && !self.recorder.is_full() {
            tokio::time::sleep_until(next.into()).await;
            if Instant::now() >= deadline {
                break;
            }
            next = (next + period).max(Instant::now());
            let via = self.coordinator();
            let op = match self.cfg.kind {
                WorkloadKind::Set => {
                    let key = format!("set-{}-{n}", self.index);
                    write(
                        &self.client,
                        &self.recorder,
                        &key,
                        &key,
                        self.cfg.consistency,
                        via,
                    )
                    .await
                }
                WorkloadKind::Register => {
                    let key = format!("reg-{}", self.rng.gen_range(0..self.cfg.keys.max(1)));
                    if self.rng.gen_bool(0.5) {
                        let value = format!("{}-{n}", self.index);
                        write(
                            &self.client,
                            &self.recorder,
                            &key,
                            &value,
                            self.cfg.consistency,
                            via,
                        )
                        .await
                    } else {
                        read(
                            &self.client,
                            &self.recorder,
                            &key,
                            self.cfg.consistency,
                            Phase::Main,
                            via,
                        )
                        .await
                    }
                }
            };
            self.record(op);
            n += 1;
        }
    }
}

/// Runs the workload's workers (one per client) until `deadline` and waits for them.
pub async fn run(
    clients: Vec<Arc<Client>>,
    cfg: &WorkloadConfig,
    deadline: Instant,
    recorder: Arc<Recorder>,
) {
    let workers = u32::try_from(clients.len()).unwrap_or(u32::MAX);
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let mut nodes: Vec<NodeId> = client
                .topology()
                .members
                .iter()
                .map(|m| m.member.id)
                .collect();
            nodes.sort_unstable();
            let worker = Worker {
                index,
                workers,
                generation: 0,
                client,
                recorder: Arc::clone(&recorder),
                cfg: cfg.clone(),
                rng: StdRng::seed_from_u64(cfg.seed.wrapping_add(u64::from(index))),
                coordinator_rng: coordinator_rng(cfg.seed, index),
                nodes,
            };
            tokio::spawn(worker.run(deadline))
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// Puts `value` under `key` through the library's routing, or with `via` as the coordinator,
/// and returns the operation (process filled in by the caller). The library retries a write that
/// ended ambiguously with the same op id; the operation spans every attempt (invoked before the
/// first, completed after the last) and is one operation of the history.
pub async fn write(
    client: &Client,
    recorder: &Recorder,
    key: &str,
    value: &str,
    level: Consistency,
    via: Option<NodeId>,
) -> Op {
    let invoke_ns = recorder.now_ns();
    let result = match via {
        Some(node) => {
            client
                .put_via(node, key.as_bytes(), value.as_bytes(), level)
                .await
        }
        None => client.put(key.as_bytes(), value.as_bytes(), level).await,
    };
    let complete_ns = recorder.now_ns();
    let (outcome, error, coordinator, attempts) = match result {
        Ok(w) => (
            Outcome::Ok,
            None,
            Some(w.coordinator),
            (w.attempts > 1).then_some(w.attempts),
        ),
        Err(e) => (outcome_of(&e), Some(describe(&e)), via, None),
    };
    Op {
        process: 0,
        kind: OpKind::Write,
        key: key.to_string(),
        value: Some(value.to_string()),
        outcome,
        invoke_ns,
        complete_ns,
        error,
        coordinator,
        phase: Phase::Main,
        attempts,
    }
}

/// Reads `key` through the library's routing, or with `via` as the coordinator, and returns the
/// operation (a missing key is an `ok` read of nothing).
pub async fn read(
    client: &Client,
    recorder: &Recorder,
    key: &str,
    level: Consistency,
    phase: Phase,
    via: Option<NodeId>,
) -> Op {
    let invoke_ns = recorder.now_ns();
    let result = match via {
        Some(node) => client.get_via(node, key.as_bytes(), level).await,
        None => client.get(key.as_bytes(), level).await,
    };
    let complete_ns = recorder.now_ns();
    let (outcome, value, error, coordinator) = match result {
        Ok(r) => (
            Outcome::Ok,
            Some(String::from_utf8_lossy(&r.value).into_owned()),
            None,
            Some(r.coordinator),
        ),
        Err(ClientError::NotFound) => (Outcome::Ok, None, None, via),
        Err(e) => (outcome_of(&e), None, Some(describe(&e)), via),
    };
    Op {
        process: 0,
        kind: OpKind::Read,
        key: key.to_string(),
        value,
        outcome,
        invoke_ns,
        complete_ns,
        error,
        coordinator,
        phase,
        attempts: None,
    }
}

fn describe(e: &ClientError) -> String {
    format!("{}: {e}", e.kind())
}

/// Reads every key at ALL (retrying transient errors) and records each attempt in the final
/// phase, as process `process`. Bounded: [`FINAL_READ_ATTEMPTS`] per key.
pub async fn final_reads(client: &Client, recorder: &Recorder, keys: &[String], process: u32) {
    futures::stream::iter(keys)
        .map(|key| async move {
            for attempt in 0..FINAL_READ_ATTEMPTS {
                let mut op =
                    read(client, recorder, key, Consistency::All, Phase::Final, None).await;
                op.process = process;
                let done = op.outcome == Outcome::Ok;
                recorder.record(op);
                if done {
                    break;
                }
                if attempt + 1 < FINAL_READ_ATTEMPTS {
                    tokio::time::sleep(FINAL_READ_RETRY).await;
                }
            }
        })
        .buffer_unordered(FINAL_READ_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_that_prove_nothing_happened_are_failures() {
        let unavailable = ClientError::Unavailable {
            message: String::new(),
            alive: 1,
            required: 2,
        };
        let timeout = ClientError::Timeout {
            message: String::new(),
            acks: 1,
            required: 2,
            receipt: None,
        };
        assert_eq!(outcome_of(&unavailable), Outcome::Fail);
        assert_eq!(outcome_of(&ClientError::Connect("x".into())), Outcome::Fail);
        assert_eq!(outcome_of(&timeout), Outcome::Info);
        assert_eq!(
            outcome_of(&ClientError::Server("internal".into())),
            Outcome::Info
        );
        assert_eq!(
            outcome_of(&ClientError::ClockSkew("ahead".into())),
            Outcome::Fail
        );
        // A read that found nothing as new as the session's floor returned nothing.
        assert_eq!(
            outcome_of(&ClientError::Stale("behind".into())),
            Outcome::Fail
        );
    }

    #[test]
    fn random_coordinators_are_deterministic_per_seed_and_cover_every_node() {
        let nodes: Vec<NodeId> = (1..=5).collect();
        let draw = |seed: u64, index: u32| -> Vec<NodeId> {
            let mut rng = coordinator_rng(seed, index);
            (0..200)
                .map(|_| pick_coordinator(&mut rng, &nodes).expect("a node"))
                .collect()
        };
        assert_eq!(draw(7, 0), draw(7, 0), "same seed and worker, same choices");
        assert_ne!(draw(7, 0), draw(8, 0), "another seed, other choices");
        assert_ne!(draw(7, 0), draw(7, 1), "another worker, other choices");
        let picks = draw(7, 0);
        for n in &nodes {
            let count = picks.iter().filter(|p| *p == n).count();
            // 200 uniform draws over 5 nodes: about 40 each.
            assert!(
                count >= 15,
                "node {n} coordinated {count} of 200: {picks:?}"
            );
        }
        assert_eq!(pick_coordinator(&mut coordinator_rng(1, 0), &[]), None);
        assert_eq!(pick_coordinator(&mut coordinator_rng(1, 0), &[4]), Some(4));
    }
}
