//! Nemeses: the faults the harness injects, and their schedule (quiet, fault, heal, repeat until
//! the workload's end). Each fault becomes a [`NemesisWindow`] in the report, shaded on the plots.
//!
//! - partitions (nftables rules in the node namespaces; see [`crate::partition`] for the shapes);
//! - `kill`: kill -9 of a random minority of nodes, restarted at heal;
//! - `pause`: SIGSTOP of a random minority, SIGCONT at heal;
//! - `clock-skew`: one node restarted under libfaketime, cycling through the skews of
//!   [`CLOCK_SKEWS_SECS`] (within and beyond the node's 5 s tolerance, ahead and behind), and
//!   restarted with the true time at heal;
//! - `kill-wipe`: kill -9 of one node, its data directory deleted, restarted: the disk lost
//!   acknowledged writes. With RF 1 that loses data, which the set checker must catch.

use crate::cluster::Cluster;
use crate::error::HarnessError;
use crate::history::Recorder;
use crate::partition::{self, Shape};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use ring::NodeId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

/// Clock offsets the clock-skew nemesis cycles through, in seconds: ahead within the node's
/// tolerance (5 s), ahead beyond it, behind beyond it.
pub const CLOCK_SKEWS_SECS: [i64; 3] = [3, 10, -10];

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum NemesisKind {
    /// No faults.
    None,
    /// Two random halves.
    PartitionHalves,
    /// One node isolated.
    PartitionOne,
    /// Every node sees a different majority.
    PartitionMajoritiesRing,
    /// Two sides bridged by one middle node.
    PartitionBridge,
    /// kill -9 of a random minority, then restart.
    Kill,
    /// SIGSTOP of a random minority, then SIGCONT.
    Pause,
    /// One node restarted with a skewed clock, then with the true one.
    ClockSkew,
    /// kill -9 of one node, its data deleted, restart (loses data unless replicas restore it).
    KillWipe,
}

impl NemesisKind {
    /// Every kind, in documentation order.
    pub const ALL: [NemesisKind; 9] = [
        NemesisKind::None,
        NemesisKind::PartitionHalves,
        NemesisKind::PartitionOne,
        NemesisKind::PartitionMajoritiesRing,
        NemesisKind::PartitionBridge,
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::ClockSkew,
        NemesisKind::KillWipe,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::None => "none",
            NemesisKind::PartitionHalves => "partition-halves",
            NemesisKind::PartitionOne => "partition-one",
            NemesisKind::PartitionMajoritiesRing => "partition-majorities-ring",
            NemesisKind::PartitionBridge => "partition-bridge",
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::ClockSkew => "clock-skew",
            NemesisKind::KillWipe => "kill-wipe",
        }
    }

    /// The partition shape, for partition nemeses.
    pub fn shape(self) -> Option<Shape> {
        match self {
            NemesisKind::PartitionHalves => Some(Shape::Halves),
            NemesisKind::PartitionOne => Some(Shape::One),
            NemesisKind::PartitionMajoritiesRing => Some(Shape::MajoritiesRing),
            NemesisKind::PartitionBridge => Some(Shape::Bridge),
            _ => None,
        }
    }

    /// Whether it needs network namespaces (root).
    pub fn needs_network(self) -> bool {
        self.shape().is_some()
    }

    /// Checks the kind can act on a cluster of `nodes` nodes.
    pub fn validate(self, nodes: usize) -> Result<(), HarnessError> {
        if let Some(shape) = self.shape() {
            let ids: Vec<NodeId> = (1..=nodes as NodeId).collect();
            partition::plan(shape, &ids).map_err(HarnessError::Usage)?;
        }
        if matches!(
            self,
            NemesisKind::Kill | NemesisKind::Pause | NemesisKind::ClockSkew
        ) && nodes < 2
        {
            return Err(HarnessError::Usage(format!(
                "the {} nemesis needs at least 2 nodes",
                self.name()
            )));
        }
        Ok(())
    }
}

impl std::fmt::Display for NemesisKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// When faults start and stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Quiet time before the first fault, and between a heal and the next fault.
    pub quiet: Duration,
    /// How long each fault lasts.
    pub fault: Duration,
}

/// One fault as it happened, for the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisWindow {
    /// The nemesis kind.
    pub kind: NemesisKind,
    /// What was done (`isolated 3`, `killed 2,5`, `node 4 clock +10 s`).
    pub description: String,
    /// Nodes affected.
    pub nodes: Vec<NodeId>,
    /// Start (ns from the run's start).
    pub start_ns: u64,
    /// End, when healed (ns from the run's start).
    pub end_ns: u64,
}

/// A fault in progress.
enum Active {
    Partition,
    Killed(Vec<NodeId>),
    Paused(Vec<NodeId>),
    Skewed(NodeId),
}

/// Injects one kind of fault into a cluster.
pub struct Nemesis {
    kind: NemesisKind,
    cluster: Arc<Cluster>,
    rng: StdRng,
    active: Option<Active>,
    skews_done: usize,
}

impl Nemesis {
    /// A nemesis of `kind` for `cluster`, making its random choices from `rng`.
    pub fn new(kind: NemesisKind, cluster: Arc<Cluster>, rng: StdRng) -> Nemesis {
        Nemesis {
            kind,
            cluster,
            rng,
            active: None,
            skews_done: 0,
        }
    }

    /// A random non-empty minority of the nodes (at least one node).
    fn minority(&mut self) -> Vec<NodeId> {
        let mut ids = self.cluster.ids();
        ids.shuffle(&mut self.rng);
        let max = ((ids.len() - 1) / 2).max(1);
        let count = self.rng.gen_range(1..=max);
        let mut chosen: Vec<NodeId> = ids.into_iter().take(count).collect();
        chosen.sort_unstable();
        chosen
    }

    fn random_node(&mut self) -> NodeId {
        let ids = self.cluster.ids();
        ids[self.rng.gen_range(0..ids.len())]
    }

    /// Starts a fault (blocking: signals, process starts, nft). Returns its description and the
    /// nodes affected. `None` when this kind injects nothing.
    pub fn start_fault(&mut self) -> Result<Option<(String, Vec<NodeId>)>, HarnessError> {
        self.heal()?;
        let c = Arc::clone(&self.cluster);
        let started = match self.kind {
            NemesisKind::None => return Ok(None),
            kind if kind.shape().is_some() => {
                let net = c.network().ok_or_else(|| {
                    HarnessError::Setup(format!("the {kind} nemesis needs network namespaces"))
                })?;
                let mut ids = c.ids();
                ids.shuffle(&mut self.rng);
                let shape = kind
                    .shape()
                    .ok_or_else(|| HarnessError::Usage(kind.to_string()))?;
                let p = partition::plan(shape, &ids).map_err(HarnessError::Usage)?;
                net.apply_cuts(&p.cuts)?;
                self.active = Some(Active::Partition);
                let cut: Vec<NodeId> = p
                    .cuts
                    .iter()
                    .filter(|(_, s)| !s.is_empty())
                    .map(|(&id, _)| id)
                    .collect();
                (p.description, cut)
            }
            NemesisKind::Kill => {
                let nodes = self.minority();
                for &id in &nodes {
                    c.kill(id);
                }
                self.active = Some(Active::Killed(nodes.clone()));
                (format!("killed {}", list(&nodes)), nodes)
            }
            NemesisKind::Pause => {
                let nodes = self.minority();
                for &id in &nodes {
                    c.pause(id);
                }
                self.active = Some(Active::Paused(nodes.clone()));
                (format!("paused {}", list(&nodes)), nodes)
            }
            NemesisKind::ClockSkew => {
                let id = self.random_node();
                let skew = CLOCK_SKEWS_SECS[self.skews_done % CLOCK_SKEWS_SECS.len()];
                self.skews_done += 1;
                c.kill(id);
                c.start(id, Some(skew))?;
                self.active = Some(Active::Skewed(id));
                (
                    format!("node {id} restarted with clock {skew:+} s"),
                    vec![id],
                )
            }
            NemesisKind::KillWipe => {
                let id = self.random_node();
                c.kill(id);
                c.wipe(id)?;
                c.start(id, None)?;
                (
                    format!("node {id} killed, data deleted, restarted"),
                    vec![id],
                )
            }
            _ => return Ok(None),
        };
        info!(nemesis = %self.kind, what = %started.0, "fault started");
        Ok(Some(started))
    }

    /// Heals the fault in progress (blocking).
    pub fn heal(&mut self) -> Result<(), HarnessError> {
        let c = Arc::clone(&self.cluster);
        match self.active.take() {
            None => {}
            Some(Active::Partition) => {
                if let Some(net) = c.network() {
                    net.heal()?;
                }
            }
            Some(Active::Killed(nodes)) => {
                for id in nodes {
                    c.start(id, None)?;
                }
            }
            Some(Active::Paused(nodes)) => {
                for id in nodes {
                    c.resume(id);
                }
            }
            Some(Active::Skewed(id)) => {
                c.kill(id);
                c.start(id, None)?;
            }
        }
        Ok(())
    }

    /// Heals everything, whatever happened: network rules gone, paused nodes resumed, skewed
    /// nodes restarted with the true time, every node running.
    pub fn heal_all(&mut self) -> Result<(), HarnessError> {
        self.heal()?;
        let c = Arc::clone(&self.cluster);
        if let Some(net) = c.network() {
            net.heal()?;
        }
        for id in c.paused() {
            c.resume(id);
        }
        for id in c.skewed() {
            c.kill(id);
        }
        let running = c.running();
        for id in c.ids() {
            if !running.contains(&id) {
                c.start(id, None)?;
            }
        }
        Ok(())
    }
}

fn list(ids: &[NodeId]) -> String {
    ids.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `nemesis` on `schedule` until `deadline`, then heals everything. Returns the windows.
pub async fn run(
    nemesis: Nemesis,
    schedule: Schedule,
    deadline: Instant,
    recorder: Arc<Recorder>,
) -> Result<Vec<NemesisWindow>, HarnessError> {
    let kind = nemesis.kind;
    let mut nemesis = Some(nemesis);
    let mut windows = Vec::new();
    loop {
        let fault_at = Instant::now() + schedule.quiet;
        if kind == NemesisKind::None || fault_at >= deadline {
            break;
        }
        tokio::time::sleep_until(fault_at.into()).await;
        let start_ns = recorder.now_ns();
        let (n, started) = blocking(nemesis.take(), |n| n.start_fault()).await?;
        nemesis = Some(n);
        let Some((description, nodes)) = started else {
            break;
        };
        let heal_at = (Instant::now() + schedule.fault).min(deadline);
        tokio::time::sleep_until(heal_at.into()).await;
        let (n, ()) = blocking(nemesis.take(), |n| n.heal()).await?;
        nemesis = Some(n);
        windows.push(NemesisWindow {
            kind,
            description,
            nodes,
            start_ns,
            end_ns: recorder.now_ns(),
        });
    }
    blocking(nemesis.take(), |n| n.heal_all()).await?;
    Ok(windows)
}

/// Runs a blocking nemesis action on the blocking pool and hands the nemesis back.
async fn blocking<T: Send + 'static>(
    nemesis: Option<Nemesis>,
    action: impl FnOnce(&mut Nemesis) -> Result<T, HarnessError> + Send + 'static,
) -> Result<(Nemesis, T), HarnessError> {
    let mut n = nemesis.ok_or_else(|| HarnessError::Setup("nemesis lost".into()))?;
    tokio::task::spawn_blocking(move || {
        let r = action(&mut n);
        r.map(|v| (n, v))
    })
    .await
    .map_err(|e| HarnessError::Setup(format!("nemesis task failed: {e}")))?
}
