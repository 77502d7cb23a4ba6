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
//! - `membership`: topology changes under load. The cluster starts with two spare nodes outside
//!   the ring; each fault is one committed change (`join` of a spare, then `leave` of the oldest
//!   members), so the ring grows from N-2 to N and shrinks back to N-2 members. A fault lasts
//!   until its transition has ended (streaming done, the new ring in force); a node that left
//!   is then stopped. After the last change the nemesis injects nothing more.

use crate::cluster::Cluster;
use crate::error::HarnessError;
use crate::history::Recorder;
use crate::partition::{self, Shape};
use proto::membership::MembershipOp;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use ring::NodeId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info};

/// Clock offsets the clock-skew nemesis cycles through, in seconds: ahead within the node's
/// tolerance (5 s), ahead beyond it, behind beyond it.
pub const CLOCK_SKEWS_SECS: [i64; 3] = [3, 10, -10];
/// Nodes the membership nemesis starts outside the ring (joined, then as many members leave).
pub const MEMBERSHIP_SPARES: usize = 2;
/// How long a spare gets to learn the ring from its seeds.
const LEARN_RING_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one committed change may take to end (streaming included) before the run fails.
const TRANSITION_TIMEOUT: Duration = Duration::from_secs(120);
/// Budget of one membership request.
const MEMBERSHIP_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts of one staging request (a node may still be learning the spare's address).
const STAGE_ATTEMPTS: usize = 20;
/// Between polls of a transition and between staging attempts.
const POLL: Duration = Duration::from_millis(250);

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
    /// The ring grows by the two spare nodes, then the two oldest members leave.
    Membership,
}

impl NemesisKind {
    /// Every kind, in documentation order.
    pub const ALL: [NemesisKind; 10] = [
        NemesisKind::None,
        NemesisKind::PartitionHalves,
        NemesisKind::PartitionOne,
        NemesisKind::PartitionMajoritiesRing,
        NemesisKind::PartitionBridge,
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::ClockSkew,
        NemesisKind::KillWipe,
        NemesisKind::Membership,
    ];

    /// Nodes of the cluster that start outside the ring, for this nemesis to join.
    pub fn spares(self) -> usize {
        if self == NemesisKind::Membership {
            MEMBERSHIP_SPARES
        } else {
            0
        }
    }

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
            NemesisKind::Membership => "membership",
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
        if self == NemesisKind::Membership && nodes < 2 + MEMBERSHIP_SPARES {
            return Err(HarnessError::Usage(format!(
                "the membership nemesis needs at least {} nodes ({MEMBERSHIP_SPARES} of them start as spares)",
                2 + MEMBERSHIP_SPARES
            )));
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
    /// A committed topology change and the transition carrying it out.
    Transition {
        step: Step,
        id: u64,
    },
}

/// One topology change of the membership nemesis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A spare joins the ring.
    Join(NodeId),
    /// A member leaves the ring (decommission: its ranges stream to the new owners first).
    Leave(NodeId),
}

impl Step {
    fn node(self) -> NodeId {
        match self {
            Step::Join(n) | Step::Leave(n) => n,
        }
    }
}

/// The membership nemesis's changes for a cluster whose ring is `members` of `ids`: every
/// spare joins (ascending), then as many of the first members leave, so the ring ends as large
/// as it started.
pub fn membership_steps(ids: &[NodeId], members: &[NodeId]) -> Vec<Step> {
    let spares: Vec<NodeId> = ids
        .iter()
        .copied()
        .filter(|id| !members.contains(id))
        .collect();
    let leaving = members.iter().copied().take(spares.len());
    spares
        .iter()
        .map(|&n| Step::Join(n))
        .chain(leaving.map(Step::Leave))
        .collect()
}

/// Injects one kind of fault into a cluster.
pub struct Nemesis {
    kind: NemesisKind,
    cluster: Arc<Cluster>,
    rng: StdRng,
    active: Option<Active>,
    skews_done: usize,
    /// Changes the membership nemesis has still to make.
    steps: std::collections::VecDeque<Step>,
}

impl Nemesis {
    /// A nemesis of `kind` for `cluster`, making its random choices from `rng`.
    pub fn new(kind: NemesisKind, cluster: Arc<Cluster>, rng: StdRng) -> Nemesis {
        let steps = if kind == NemesisKind::Membership {
            membership_steps(&cluster.ids(), &cluster.members()).into()
        } else {
            Default::default()
        };
        Nemesis {
            kind,
            cluster,
            rng,
            active: None,
            skews_done: 0,
            steps,
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
            NemesisKind::Membership => {
                let Some(step) = self.steps.pop_front() else {
                    return Ok(None);
                };
                let id = tokio::runtime::Handle::current().block_on(commit_step(&c, step))?;
                self.active = Some(Active::Transition { step, id });
                let what = match step {
                    Step::Join(n) => format!("node {n} joins (transition {id})"),
                    Step::Leave(n) => format!("node {n} leaves (transition {id})"),
                };
                (what, vec![step.node()])
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
            Some(Active::Transition { step, id }) => {
                tokio::runtime::Handle::current().block_on(wait_transition(&c, id))?;
                match step {
                    Step::Join(n) => c.add_member(n),
                    Step::Leave(n) => {
                        c.remove_member(n);
                        c.stop(n);
                    }
                }
                info!(?step, transition = id, "topology change complete");
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
        for id in c.members() {
            if !running.contains(&id) {
                c.start(id, None)?;
            }
        }
        Ok(())
    }
}

/// Makes one change: for a join, starts the spare and waits until it has learned the ring; then
/// stages the change on a member and commits it. Returns the transition's id.
async fn commit_step(c: &Cluster, step: Step) -> Result<u64, HarnessError> {
    let fail = |m: String| HarnessError::Setup(format!("membership nemesis: {m}"));
    let node = step.node();
    let node_addr = c
        .addr(node)
        .ok_or_else(|| fail(format!("no address for node {node}")))?;
    if let Step::Join(_) = step {
        c.start(node, None)?;
        let until = Instant::now() + LEARN_RING_TIMEOUT;
        loop {
            match c
                .admin()
                .status(node_addr, MEMBERSHIP_REQUEST_TIMEOUT)
                .await
            {
                Ok(s) if s.ring_epoch > 0 => break,
                _ if Instant::now() >= until => {
                    return Err(fail(format!(
                        "node {node} did not learn the ring from its seeds in {} s",
                        LEARN_RING_TIMEOUT.as_secs()
                    )))
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }
    // Staged and committed through a member that stays.
    let via = c
        .members()
        .into_iter()
        .find(|&m| m != node && c.running().contains(&m))
        .and_then(|m| c.addr(m))
        .ok_or_else(|| fail("no running member to send the change to".into()))?;
    let op = match step {
        Step::Join(_) => MembershipOp::Join {
            addr: node_addr.to_string(),
        },
        Step::Leave(n) => MembershipOp::Leave { node: n },
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match c
            .admin()
            .membership(via, op.clone(), MEMBERSHIP_REQUEST_TIMEOUT)
            .await
        {
            Ok(_) => break,
            // An earlier attempt that reported an error was applied after all.
            Err(e) if e.to_string().contains("already") => {
                debug!(?step, error = %e, "already staged");
                break;
            }
            Err(e) if attempt >= STAGE_ATTEMPTS => {
                return Err(fail(format!("staging {step:?} failed: {e}")))
            }
            Err(e) => {
                debug!(?step, error = %e, "staging refused; retrying");
                tokio::time::sleep(POLL).await;
            }
        }
    }
    let view = c
        .admin()
        .membership(via, MembershipOp::Commit, MEMBERSHIP_REQUEST_TIMEOUT)
        .await
        .map_err(|e| fail(format!("commit of {step:?} failed: {e}")))?;
    let t = view
        .ring
        .transition
        .ok_or_else(|| fail(format!("the commit of {step:?} started no transition")))?;
    info!(?step, transition = t.id, "topology change committed");
    Ok(t.id)
}

/// Waits until transition `id` has ended, as the running members see it.
async fn wait_transition(c: &Cluster, id: u64) -> Result<(), HarnessError> {
    let until = Instant::now() + TRANSITION_TIMEOUT;
    loop {
        for m in c.members() {
            let Some(addr) = c.addr(m) else { continue };
            if let Ok(v) = c
                .admin()
                .membership(addr, MembershipOp::Show, MEMBERSHIP_REQUEST_TIMEOUT)
                .await
            {
                // A member that has not yet seen the commit (epoch below it) proves nothing.
                if v.ring.epoch >= id && v.ring.transition.is_none_or(|t| t.id != id) {
                    return Ok(());
                }
                break;
            }
        }
        if Instant::now() >= until {
            return Err(HarnessError::Setup(format!(
                "membership nemesis: transition {id} still in progress after {} s",
                TRANSITION_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_grows_by_every_spare_then_shrinks_by_as_many_founders() {
        assert_eq!(
            membership_steps(&[1, 2, 3, 4, 5], &[1, 2, 3]),
            vec![Step::Join(4), Step::Join(5), Step::Leave(1), Step::Leave(2)]
        );
        assert!(membership_steps(&[1, 2, 3], &[1, 2, 3]).is_empty());
    }

    #[test]
    fn only_the_membership_nemesis_has_spares_and_it_needs_room_for_them() {
        assert_eq!(NemesisKind::Membership.spares(), MEMBERSHIP_SPARES);
        assert!(NemesisKind::ALL
            .iter()
            .filter(|k| **k != NemesisKind::Membership)
            .all(|k| k.spares() == 0));
        assert!(NemesisKind::Membership.validate(3).is_err());
        assert!(NemesisKind::Membership.validate(5).is_ok());
    }
}
