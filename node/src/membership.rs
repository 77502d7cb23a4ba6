//! Membership: the gossiped ring state, this node's view of it, and topology changes.
//!
//! - **State.** Every node holds one [`RingState`] (members, staged changes, the transition in
//!   progress) and the [`EndpointState`] of every node it has heard of. A state is replaced whole
//!   by a newer one ([`RingState::newer_than`]); every change is proposed by some node as epoch
//!   plus one and spread by gossip. The state is persisted, so a restarted node comes back with
//!   the ring it last saw, whatever its configuration file says.
//! - **Gossip.** Every heartbeat carries the sender's `(epoch, author)`; a node whose peer runs
//!   another ring exchanges full state with it at once (push-pull). Every second each node also
//!   exchanges state with one random known node, which spreads endpoint states (addresses,
//!   generations): a node restarted with a new address is recognised by its id. A node that
//!   knows no ring yet gossips with its seeds.
//! - **View.** [`View`] is what request paths read: the ring reads use, the other ring that
//!   writes must also meet during a transition, and the addresses and datacenters of nodes.
//! - **Changes, staged then committed (as Riak).** `Join`, `Leave` and `Replace` are staged;
//!   `Commit` starts a [`Transition`] to the next member list. Every node that gains ranges
//!   first waits until every live node runs the commit (so every coordinator writes to both
//!   rings), then streams each gained range from every live current replica (any one of them
//!   may lack a write the others acknowledged), throttled, resumable from persisted cursors.
//!   When no gaining node is pending the transition moves to `ReadNew` (reads use the next ring,
//!   writes still both); once every live node runs that, the next ring becomes the only one.
//!   The lowest-id live member of the next ring drives those two steps; every step is
//!   idempotent, so a lost race or a crash just means it is proposed again.

use crate::node::Node;
use proto::membership::{
    Change, EndpointState, GossipState, MembershipOp, MembershipView, Movement, Phase, RingState,
    StreamProgress, Transition,
};
use proto::message::{KeyRecord, MemberInfo};
use proto::{ErrorCode, ErrorReply, Request, Response};
use ring::{NodeId, Ring, Strategy, Token, TokenRange};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Metadata key of the persisted ring state.
const RING_META_KEY: &str = "ring-state";
/// How long a commit waits for the nodes it brings in to be seen up.
const NEWCOMER_WAIT: Duration = Duration::from_secs(10);
/// How often each node exchanges full state with one random known node.
const GOSSIP_EVERY: Duration = Duration::from_secs(1);
/// How often the transition driver looks at the state (it is also woken by every change).
const DRIVE_EVERY: Duration = Duration::from_millis(250);
/// Stream cursors are persisted at most this often.
const SAVE_PROGRESS_EVERY: Duration = Duration::from_millis(1000);
/// Most endpoint states a node keeps (bounds gossip messages).
const MAX_ENDPOINTS: usize = 1024;

fn stream_meta_key(transition: u64) -> String {
    format!("stream-{transition}")
}

/// What request paths need of the membership, rebuilt whenever it changes.
pub struct View {
    /// Ring epoch this view was built from.
    pub epoch: u64,
    /// The ring reads use (`None` before this node has learned a cluster).
    pub read: Option<Ring>,
    /// During a transition, the other ring: writes must meet their level in it too.
    pub also: Option<Ring>,
    /// Members of the read ring, with addresses (for `Topology`).
    pub read_members: Vec<MemberInfo>,
    /// Where each known node listens.
    pub addrs: HashMap<NodeId, SocketAddr>,
    /// Each known node's datacenter.
    pub dcs: HashMap<NodeId, String>,
}

impl View {
    fn build(state: &RingState, endpoints: &HashMap<NodeId, EndpointState>) -> View {
        let usable = |members: &[MemberInfo]| -> Option<Ring> {
            if members.is_empty() {
                return None;
            }
            ring_of(members, &state.strategy)
                .map_err(|e| warn!(error = %e, epoch = state.epoch, "ring state not usable"))
                .ok()
        };
        let current = usable(&state.members);
        let (read, also, read_members) = match &state.transition {
            None => (current, None, state.members.clone()),
            Some(t) => {
                let next = usable(&t.next);
                match t.phase {
                    Phase::Streaming => (current, next, state.members.clone()),
                    Phase::ReadNew => (next, current, t.next.clone()),
                }
            }
        };
        let mut addrs = HashMap::new();
        let mut dcs = HashMap::new();
        for m in state
            .members
            .iter()
            .chain(state.transition.iter().flat_map(|t| t.next.iter()))
        {
            if let Ok(a) = m.addr.parse() {
                addrs.insert(m.member.id, a);
            }
            dcs.insert(m.member.id, m.member.datacenter.clone());
        }
        // An endpoint's own report is fresher than the address it joined with.
        for e in endpoints.values() {
            if let Ok(a) = e.addr.parse() {
                addrs.insert(e.id, a);
            }
            dcs.entry(e.id)
                .or_insert_with(|| e.member.datacenter.clone());
        }
        View {
            epoch: state.epoch,
            read,
            also,
            read_members,
            addrs,
            dcs,
        }
    }

    /// A node's datacenter ("" if unknown).
    pub fn dc_of(&self, id: NodeId) -> &str {
        self.dcs.get(&id).map(String::as_str).unwrap_or("")
    }

    /// The replicas of a key in the read ring (empty before a ring is known).
    pub fn read_replicas(&self, key: &[u8]) -> &[NodeId] {
        self.read
            .as_ref()
            .map(|r| r.replicas_for_key(key))
            .unwrap_or(&[])
    }

    /// The replica lists a write of `key` must meet its level in: the read ring's, and during a
    /// transition the other ring's too.
    pub fn write_replica_sets(&self, key: &[u8]) -> Vec<&[NodeId]> {
        self.read
            .iter()
            .chain(self.also.iter())
            .map(|r| r.replicas_for_key(key))
            .collect()
    }
}

/// A node's membership state.
pub struct Membership {
    state: Arc<Mutex<RingState>>,
    endpoints: Mutex<HashMap<NodeId, EndpointState>>,
    view: RwLock<Arc<View>>,
    me: Mutex<EndpointState>,
    seeds: Vec<SocketAddr>,
    changed: tokio::sync::Notify,
    /// Stream progress of the transition this node gains ranges in.
    pub progress: Mutex<Option<StreamProgress>>,
    streaming: AtomicBool,
    pings_in_flight: Mutex<HashSet<NodeId>>,
    hint_tasks: Mutex<HashSet<NodeId>>,
    /// The ranges the Merkle trees were last asked to cover.
    tree_ranges: Mutex<Vec<TokenRange>>,
    /// Long-lived tasks started after start-up (hint replay, streaming), ended at shutdown.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Held while this node serves a membership change, so the changes it serves apply one
    /// after another (each to the state the previous one made).
    admin: tokio::sync::Mutex<()>,
}

/// One stream: a gained range `(start, end)` from one source.
type Part = (u64, u64, NodeId);
/// Where a stream resumes: after this `(token, key)`, or from the start.
type Resume = Option<(u64, Vec<u8>)>;

/// The persisted state of one transition's streams: per (range, source), where to resume.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SavedStreams {
    /// `None`: finished (or skipped); `Some(after)`: resume after this position.
    parts: BTreeMap<Part, Option<Resume>>,
    records: u64,
    bytes: u64,
    skipped: u64,
    done: bool,
}

impl Membership {
    /// The membership a node starts with: the persisted ring state if there is one, else (no
    /// seeds) the founding ring of `members`, or (seeds) no ring until gossip brings one.
    pub fn new(
        persisted: Option<RingState>,
        founding: RingState,
        seeds: Vec<SocketAddr>,
        me: EndpointState,
    ) -> Membership {
        let state = match persisted {
            Some(p) if p.cluster == founding.cluster => p,
            _ => founding,
        };
        let mut endpoints = HashMap::new();
        endpoints.insert(me.id, me.clone());
        let view = View::build(&state, &endpoints);
        Membership {
            state: Arc::new(Mutex::new(state)),
            endpoints: Mutex::new(endpoints),
            view: RwLock::new(Arc::new(view)),
            me: Mutex::new(me),
            seeds,
            changed: tokio::sync::Notify::new(),
            progress: Mutex::new(None),
            streaming: AtomicBool::new(false),
            pings_in_flight: Mutex::default(),
            hint_tasks: Mutex::default(),
            tree_ranges: Mutex::default(),
            background: Mutex::default(),
            admin: tokio::sync::Mutex::new(()),
        }
    }

    /// The founding ring state of a cluster whose initial members are `members` (epoch 1, so
    /// that it replaces the empty epoch-0 state of a node started with seeds).
    pub fn founding(cluster: &str, strategy: Strategy, members: Vec<MemberInfo>) -> RingState {
        RingState {
            cluster: cluster.to_string(),
            epoch: if members.is_empty() { 0 } else { 1 },
            author: 0,
            strategy,
            members,
            staged: Vec::new(),
            transition: None,
        }
    }

    /// Starts a long-lived task that shutdown ends.
    pub(crate) fn spawn_background(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let mut bg = self.background.lock().unwrap_or_else(|p| p.into_inner());
        bg.retain(|h| !h.is_finished());
        bg.push(tokio::spawn(task));
    }

    /// Ends every background task (at shutdown).
    pub(crate) fn abort_background(&self) {
        for h in self
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            h.abort();
        }
    }

    /// Records the ranges the Merkle trees were built for at start-up.
    pub fn set_tree_ranges(&self, mut ranges: Vec<TokenRange>) {
        ranges.sort_unstable_by_key(|r| (r.start, r.end));
        *self.tree_ranges.lock().unwrap_or_else(|p| p.into_inner()) = ranges;
    }

    /// The metadata key the ring state is persisted under.
    pub const META_KEY: &'static str = RING_META_KEY;

    /// Decodes a persisted ring state.
    pub fn decode(bytes: &[u8]) -> Option<RingState> {
        postcard::from_bytes(bytes).ok()
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A copy of the ring state.
    pub fn state(&self) -> RingState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `(epoch, author)` of the ring state.
    pub fn ring_id(&self) -> (u64, NodeId) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (s.epoch, s.author)
    }

    fn gossip_state(&self) -> GossipState {
        let ring = self.state();
        let endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        GossipState { ring, endpoints }
    }

    fn rebuild_view(&self) {
        let view = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
            View::build(&state, &endpoints)
        };
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }
}

/// Ranges `node` gains between `current` and `next`, each with the current replicas of it:
/// every stretch of the ring between two consecutive tokens of either ring ("atom") lies
/// within one range of each ring, so its replicas in both are known; adjacent atoms with the
/// same sources are merged.
pub fn gained_ranges(current: &Ring, next: &Ring, node: NodeId) -> Vec<(TokenRange, Vec<NodeId>)> {
    let mut bounds: Vec<Token> = current
        .members()
        .iter()
        .chain(next.members())
        .flat_map(|m| m.tokens.iter().copied())
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: Vec<(TokenRange, Vec<NodeId>)> = Vec::new();
    for (i, &end) in bounds.iter().enumerate() {
        let start = if i == 0 {
            *bounds.last().unwrap_or(&end)
        } else {
            bounds[i - 1]
        };
        let now = current.replicas(end);
        if !next.replicas(end).contains(&node) || now.contains(&node) {
            continue;
        }
        let mut sources = now.to_vec();
        sources.sort_unstable();
        match out.last_mut() {
            Some((r, s)) if r.end == start && *s == sources => r.end = end,
            _ => out.push((TokenRange { start, end }, sources)),
        }
    }
    // The first and last pieces may join across the wrap.
    if out.len() > 1 {
        let (first, last) = (out[0].clone(), out[out.len() - 1].clone());
        if last.0.end == first.0.start && last.1 == first.1 && last.0.start != first.0.end {
            out[0].0.start = last.0.start;
            out.pop();
        }
    }
    out
}

/// The ring of a member list under `strategy`.
pub fn ring_of(members: &[MemberInfo], strategy: &Strategy) -> Result<Ring, ring::RingError> {
    Ring::new(
        members.iter().map(|m| m.member.clone()).collect(),
        strategy.clone(),
    )
}

/// The share of the token space a range covers (0..1].
fn share_of(r: &TokenRange) -> f64 {
    if r.start == r.end {
        1.0
    } else {
        r.end.wrapping_sub(r.start) as f64 / 18_446_744_073_709_551_616.0
    }
}

/// The member list after applying `changes` to `members`.
pub fn apply_changes(
    members: &[MemberInfo],
    changes: &[Change],
) -> Result<Vec<MemberInfo>, String> {
    let mut next: Vec<MemberInfo> = members.to_vec();
    for c in changes {
        match c {
            Change::Join { member } => {
                if next.iter().any(|m| m.member.id == member.member.id) {
                    return Err(format!("node {} is already a member", member.member.id));
                }
                next.push(member.clone());
            }
            Change::Leave { node } => {
                let before = next.len();
                next.retain(|m| m.member.id != *node);
                if next.len() == before {
                    return Err(format!("node {node} is not a member"));
                }
            }
            Change::Replace { dead, with } => {
                let Some(at) = next.iter().position(|m| m.member.id == *dead) else {
                    return Err(format!("node {dead} is not a member"));
                };
                if next.iter().any(|m| m.member.id == with.member.id) {
                    return Err(format!("node {} is already a member", with.member.id));
                }
                next[at] = with.clone();
            }
        }
    }
    next.sort_by_key(|m| m.member.id);
    Ok(next)
}

/// A bytes-per-second budget (token bucket with one second of burst).
struct Throttle {
    rate: f64,
    budget: f64,
    last: Instant,
}

impl Throttle {
    fn new(rate: u64) -> Self {
        Throttle {
            rate: rate as f64,
            budget: rate as f64,
            last: Instant::now(),
        }
    }

    async fn take(&mut self, bytes: u64) {
        let now = Instant::now();
        self.budget =
            (self.budget + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        self.budget -= bytes as f64;
        if self.budget < 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(-self.budget / self.rate)).await;
        }
    }
}

fn bad(message: impl Into<String>) -> Response {
    Response::Error(ErrorReply::new(ErrorCode::InvalidRequest, message))
}

impl Node {
    /// The current membership view.
    pub fn view(&self) -> Arc<View> {
        self.members.view()
    }

    /// Installs `new` if it is newer than the current state: persists it, rebuilds the view,
    /// starts tracking new peers, and rebuilds the Merkle trees when this node's read ranges
    /// changed. Returns whether it was installed.
    pub(crate) fn adopt(self: &Arc<Self>, new: RingState) -> bool {
        {
            let mut st = self.members.state.lock().unwrap_or_else(|p| p.into_inner());
            if !new.newer_than(&st) {
                return false;
            }
            debug!(
                epoch = new.epoch,
                author = new.author,
                "adopting ring state"
            );
            *st = new;
        }
        self.after_ring_change();
        true
    }

    fn after_ring_change(self: &Arc<Self>) {
        self.members.rebuild_view();
        let state = self.members.state();
        let ids = state.all_ids();
        for &id in &ids {
            self.detector.add_peer(id);
        }
        if !ids.is_empty() {
            self.detector.retain_peers(&ids);
        }
        {
            let mut me = self.members.me.lock().unwrap_or_else(|p| p.into_inner());
            me.ring_epoch = state.epoch;
            me.version += 1;
            self.members
                .endpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(me.id, me.clone());
        }
        // Persist the newest state, off the runtime; the closure reads the state when it runs,
        // so a later change is never overwritten by an earlier one.
        let shared = self.members.state.clone();
        let engine = self.store.engine().clone();
        tokio::task::spawn_blocking(move || {
            let s = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
            match postcard::to_allocvec(&s) {
                Ok(bytes) => {
                    if let Err(e) = engine.put_meta(RING_META_KEY, &bytes) {
                        warn!(error = %e, "could not persist the ring state");
                    }
                }
                Err(e) => warn!(error = %e, "could not encode the ring state"),
            }
        });
        // Merkle trees follow the ranges this node serves reads for.
        let mut wanted = self.my_read_ranges();
        wanted.sort_unstable_by_key(|r| (r.start, r.end));
        let mut asked = self
            .members
            .tree_ranges
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *asked != wanted {
            *asked = wanted.clone();
            self.store.rebuild_trees(wanted);
        }
        drop(asked);
        self.members.changed.notify_waiters();
    }

    /// The token ranges this node replicates in the read ring.
    pub fn my_read_ranges(&self) -> Vec<TokenRange> {
        self.view()
            .read
            .as_ref()
            .map(|r| r.ranges_of(self.id).into_iter().map(|(r, _)| r).collect())
            .unwrap_or_default()
    }

    /// Merges a peer's gossip: a newer ring state, newer endpoint states.
    pub(crate) fn merge_gossip(self: &Arc<Self>, g: GossipState) {
        let mut addrs_changed = false;
        {
            let mut eps = self
                .members
                .endpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for e in g.endpoints {
                if e.id == self.id {
                    continue;
                }
                let newer = match eps.get(&e.id) {
                    Some(old) => e.newer_than(old),
                    None => eps.len() < MAX_ENDPOINTS,
                };
                if newer {
                    if eps.get(&e.id).is_none_or(|old| old.addr != e.addr) {
                        addrs_changed = true;
                    }
                    eps.insert(e.id, e);
                }
            }
        }
        if !self.adopt(g.ring) && addrs_changed {
            self.members.rebuild_view();
        }
    }

    /// Answers a gossip push with this node's state, after merging the sender's.
    pub(crate) fn serve_gossip(self: &Arc<Self>, g: GossipState) -> Response {
        if g.ring.cluster != self.cfg.cluster_name {
            return bad(format!(
                "gossip from cluster {:?}, this is {:?}",
                g.ring.cluster, self.cfg.cluster_name
            ));
        }
        self.merge_gossip(g);
        Response::Gossip(Box::new(self.members.gossip_state()))
    }

    /// Push-pull with the node at `addr`: returns its state (already merged).
    async fn exchange(self: &Arc<Self>, addr: SocketAddr) -> Result<GossipState, String> {
        let req = Request::Gossip(Box::new(self.members.gossip_state()));
        match self.pool.call(addr, req, self.request_timeout()).await {
            Ok(Response::Gossip(g)) => {
                self.merge_gossip((*g).clone());
                Ok(*g)
            }
            Ok(Response::Error(e)) => Err(e.to_string()),
            Ok(other) => Err(format!("unexpected gossip reply {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Every node id this node knows an address of, itself excluded.
    fn known_peers(&self) -> Vec<(NodeId, SocketAddr)> {
        let mut v: Vec<(NodeId, SocketAddr)> = self
            .view()
            .addrs
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, a)| (*id, *a))
            .collect();
        v.sort_unstable();
        v
    }

    /// Heartbeats (every `heartbeat-ms`, to every node of the current and next rings) and
    /// gossip (every second, with one random known node, or the seeds while no ring is known).
    pub(crate) async fn heartbeat_loop(self: Arc<Self>) {
        let every = Duration::from_millis(self.cfg.timeouts.heartbeat_ms);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_gossip = Instant::now() - GOSSIP_EVERY;
        // Announce this process (its generation and address) to every node it knows.
        for (_, addr) in self.known_peers() {
            let node = self.clone();
            tokio::spawn(async move {
                let _ = node.exchange(addr).await;
            });
        }
        loop {
            tick.tick().await;
            let ring_ids = self.members.state().all_ids();
            let view = self.view();
            for id in ring_ids.into_iter().filter(|id| *id != self.id) {
                let Some(&addr) = view.addrs.get(&id) else {
                    continue;
                };
                self.ensure_hint_task(id);
                let fresh = self
                    .members
                    .pings_in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id);
                if fresh {
                    tokio::spawn(self.clone().ping(id, addr));
                }
            }
            if last_gossip.elapsed() >= GOSSIP_EVERY {
                last_gossip = Instant::now();
                let mut targets: Vec<SocketAddr> =
                    self.known_peers().into_iter().map(|(_, a)| a).collect();
                if view.read.is_none() || targets.is_empty() {
                    targets.extend(self.members.seeds.iter().copied());
                }
                if !targets.is_empty() {
                    let pick = (rand_u64() % targets.len() as u64) as usize;
                    let addr = targets[pick];
                    let node = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = node.exchange(addr).await {
                            debug!(%addr, error = %e, "gossip exchange failed");
                        }
                    });
                }
            }
        }
    }

    async fn ping(self: Arc<Self>, peer: NodeId, addr: SocketAddr) {
        let timeout = Duration::from_millis(self.cfg.timeouts.down_after_ms);
        let ping = Request::Ping {
            from: self.id,
            hlc: self.clock.peek(),
            generation: self.generation,
            ring: self.members.ring_id(),
        };
        if let Ok(Response::Pong { from, hlc, ring }) = self.pool.call(addr, ping, timeout).await {
            if from == peer {
                self.detector.heartbeat(peer);
                let _ = self.clock.observe(hlc);
                if ring != self.members.ring_id() {
                    if let Err(e) = self.exchange(addr).await {
                        debug!(peer, error = %e, "gossip after heartbeat failed");
                    }
                }
            }
        }
        self.members
            .pings_in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&peer);
    }

    /// Starts the hint replay task of `peer` once.
    pub(crate) fn ensure_hint_task(self: &Arc<Self>, peer: NodeId) {
        let fresh = self
            .members
            .hint_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer);
        if fresh {
            self.members
                .spawn_background(self.clone().replay_hints_to(peer));
        }
    }

    /// Makes a change to the ring state as a new epoch authored by this node, installs it and
    /// pushes it to every known node. `f` may refuse (the state is then unchanged).
    pub(crate) fn propose(
        self: &Arc<Self>,
        f: impl FnOnce(&mut RingState) -> Result<(), String>,
    ) -> Result<RingState, String> {
        let new = {
            let mut st = self.members.state.lock().unwrap_or_else(|p| p.into_inner());
            let mut new = st.clone();
            f(&mut new)?;
            new.epoch = st.epoch + 1;
            new.author = self.id;
            *st = new.clone();
            new
        };
        info!(epoch = new.epoch, "ring state changed here");
        self.after_ring_change();
        self.push_to_all();
        Ok(new)
    }

    fn push_to_all(self: &Arc<Self>) {
        for (_, addr) in self.known_peers() {
            let node = self.clone();
            tokio::spawn(async move {
                let _ = node.exchange(addr).await;
            });
        }
    }

    /// Whether every node of the current and next rings that is not known down runs ring epoch
    /// `epoch` or later (pushing this node's state to each, which also brings them up to date).
    /// A node never heard from yet must answer too: this node may just have learned the ring.
    /// With `lenient`, nodes this node cannot see up are skipped whether heard from or not (a
    /// member dead since before this node started has never been heard from). Nodes a
    /// replacement replaces are always skipped.
    async fn barrier(self: &Arc<Self>, epoch: u64, lenient: bool) -> bool {
        let st = self.members.state();
        let dead: Vec<NodeId> = st
            .transition
            .iter()
            .flat_map(|t| t.changes.iter())
            .filter_map(|c| match c {
                Change::Replace { dead, .. } => Some(*dead),
                _ => None,
            })
            .collect();
        let view = self.view();
        let mut asks = Vec::new();
        for id in st.all_ids().into_iter().filter(|id| *id != self.id) {
            let skip = if lenient {
                !self.detector.is_up(id)
            } else {
                self.detector.known_down(id)
            };
            if skip || dead.contains(&id) {
                continue;
            }
            let Some(&addr) = view.addrs.get(&id) else {
                return false;
            };
            let node = self.clone();
            asks.push(async move { node.exchange(addr).await.map(|g| g.ring.epoch) });
        }
        futures::future::join_all(asks)
            .await
            .into_iter()
            .all(|r| matches!(r, Ok(e) if e >= epoch))
    }

    /// Drives transitions forever: streams what this node gains, and (on the lowest-id live
    /// member of the next ring) moves the transition through its phases.
    pub(crate) async fn membership_driver(self: Arc<Self>) {
        loop {
            let wake = self.members.changed.notified();
            let _ = tokio::time::timeout(DRIVE_EVERY, wake).await;
            let st = self.members.state();
            let Some(t) = st.transition.clone() else {
                continue;
            };
            if t.phase == Phase::Streaming
                && t.pending.contains(&self.id)
                && !self.members.streaming.swap(true, Ordering::AcqRel)
            {
                let node = self.clone();
                self.members.spawn_background(async move {
                    let res = node.stream_transition(&st).await;
                    node.members.streaming.store(false, Ordering::Release);
                    match res {
                        Ok(()) => {
                            let id = st.transition.as_ref().map_or(0, |t| t.id);
                            let _ = node.propose(|s| match &mut s.transition {
                                Some(t) if t.id == id && t.pending.contains(&node.id) => {
                                    t.pending.retain(|n| *n != node.id);
                                    Ok(())
                                }
                                _ => Err("no longer pending".into()),
                            });
                        }
                        Err(e) => warn!(error = %e, "streaming stopped; will retry"),
                    }
                });
                continue;
            }
            let claimant = t
                .next
                .iter()
                .map(|m| m.member.id)
                .filter(|id| self.detector.is_up(*id))
                .min();
            if claimant != Some(self.id) {
                continue;
            }
            match t.phase {
                Phase::Streaming if t.pending.is_empty() => {
                    let _ = self.propose(|s| match &mut s.transition {
                        Some(x) if x.id == t.id && x.phase == Phase::Streaming => {
                            x.phase = Phase::ReadNew;
                            Ok(())
                        }
                        _ => Err("moved on".into()),
                    });
                }
                Phase::ReadNew if self.barrier(st.epoch, true).await => {
                    let _ = self.propose(|s| match s.transition.take() {
                        Some(x) if x.id == t.id && x.phase == Phase::ReadNew => {
                            s.members = x.next;
                            info!(transition = x.id, "topology change complete");
                            Ok(())
                        }
                        other => {
                            s.transition = other;
                            Err("moved on".into())
                        }
                    });
                }
                _ => {}
            }
        }
    }

    /// Streams every range this node gains in the transition of `st` from the current
    /// replicas, resuming from saved cursors. Returns once every part is done (or skipped).
    async fn stream_transition(self: &Arc<Self>, st: &RingState) -> Result<(), String> {
        let t = st.transition.as_ref().ok_or("no transition")?;
        let current = ring_of(&st.members, &st.strategy).map_err(|e| e.to_string())?;
        let next = ring_of(&t.next, &st.strategy).map_err(|e| e.to_string())?;
        // Every coordinator must write to both rings before a copy is taken. Nodes never heard
        // from must answer too, for a while (this node may have just started).
        let since = Instant::now();
        while !self
            .barrier(st.epoch, since.elapsed() > Duration::from_secs(10))
            .await
        {
            if self.members.state().transition.as_ref().map(|x| x.id) != Some(t.id) {
                return Err("transition ended".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let dead: HashSet<NodeId> = t
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Replace { dead, .. } => Some(*dead),
                _ => None,
            })
            .collect();
        let key = stream_meta_key(t.id);
        let engine = self.store.engine().clone();
        let k2 = key.clone();
        let mut saved: SavedStreams = tokio::task::spawn_blocking(move || engine.get_meta(&k2))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            .and_then(|b| postcard::from_bytes(&b).ok())
            .unwrap_or_default();
        for (range, sources) in gained_ranges(&current, &next, self.id) {
            for s in sources.into_iter().filter(|s| !dead.contains(s)) {
                saved
                    .parts
                    .entry((range.start, range.end, s))
                    .or_insert(Some(None));
            }
        }
        let total = saved.parts.len() as u64;
        let report = |saved: &SavedStreams| StreamProgress {
            transition: t.id,
            parts_total: total,
            parts_done: saved.parts.values().filter(|p| p.is_none()).count() as u64,
            parts_skipped: saved.skipped,
            records: saved.records,
            bytes: saved.bytes,
            done: saved.done,
        };
        *self
            .members
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(report(&saved));
        info!(transition = t.id, parts = total, "streaming gained ranges");
        let cfg = self.cfg.streaming.clone();
        let mut throttle = Throttle::new(cfg.max_bytes_per_sec);
        let mut last_save = Instant::now();
        let mut skipped_sources: HashSet<NodeId> = HashSet::new();
        let parts: Vec<Part> = saved.parts.keys().copied().collect();
        for part in parts {
            let (start, end, source) = part;
            let range = TokenRange { start, end };
            let mut waited_since: Option<Instant> = None;
            while let Some(Some(after)) = saved.parts.get(&part).cloned() {
                if skipped_sources.contains(&source) {
                    saved.parts.insert(part, None);
                    saved.skipped += 1;
                    break;
                }
                if !self.detector.is_up(source) {
                    let since = *waited_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_millis(cfg.source_wait_ms) {
                        warn!(source, "stream source stayed down; skipping its ranges");
                        skipped_sources.insert(source);
                    } else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
                waited_since = None;
                let req = Request::StreamRange {
                    range,
                    after: after.clone(),
                    limit: cfg.page_records,
                };
                let deadline = Instant::now() + self.request_timeout() * 5;
                let (records, done) = match self.call_peer(source, req, deadline).await {
                    Ok(Response::StreamPage { records, done }) => (records, done),
                    Ok(other) => {
                        debug!(source, "stream page refused: {other:?}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    Err(e) => {
                        debug!(source, error = %e, "stream page failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                let bytes: u64 = records
                    .iter()
                    .map(|r| (r.key.len() + r.record.value.as_ref().map_or(0, Vec::len)) as u64)
                    .sum();
                let last = records
                    .last()
                    .map(|r| (ring::token_of(&r.key), r.key.clone()));
                let n = records.len() as u64;
                if let Some(max) = records.iter().map(|r| r.record.version.hlc).max() {
                    let _ = self.clock.observe(max);
                }
                let pending: Vec<_> = records
                    .into_iter()
                    .map(|r| self.store.apply(r.key, r.record))
                    .collect();
                for res in futures::future::join_all(pending).await {
                    res.map_err(|e| e.to_string())?;
                }
                saved.records += n;
                saved.bytes += bytes;
                let next_pos = if done || last.is_none() {
                    None
                } else {
                    Some(last)
                };
                saved.parts.insert(part, next_pos);
                *self
                    .members
                    .progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(report(&saved));
                if last_save.elapsed() >= SAVE_PROGRESS_EVERY {
                    last_save = Instant::now();
                    self.save_streams(&key, &saved).await?;
                }
                throttle.take(bytes).await;
            }
        }
        saved.done = true;
        self.save_streams(&key, &saved).await?;
        *self
            .members
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(report(&saved));
        info!(
            transition = t.id,
            records = saved.records,
            bytes = saved.bytes,
            skipped = saved.skipped,
            "streaming done"
        );
        Ok(())
    }

    /// Makes the streamed records durable, then the cursors (so a cursor never runs ahead of
    /// the data it vouches for).
    async fn save_streams(&self, key: &str, saved: &SavedStreams) -> Result<(), String> {
        let bytes = postcard::to_allocvec(saved).map_err(|e| e.to_string())?;
        let engine = self.store.engine().clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            engine.flush()?;
            engine.put_meta(&key, &bytes)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }

    /// Serves one page of a streamed range.
    pub(crate) async fn serve_stream_range(
        &self,
        range: TokenRange,
        after: Option<(u64, Vec<u8>)>,
        limit: u32,
    ) -> Response {
        let engine = self.store.engine().clone();
        let limit = (limit as usize).clamp(1, 10_000);
        let page = tokio::task::spawn_blocking(move || {
            let cursor = after.map(|(token, key)| storage::ScanCursor { token, key });
            engine.scan(range, cursor.as_ref(), limit)
        })
        .await;
        let page = match page {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                return Response::Error(ErrorReply::new(ErrorCode::Internal, e.to_string()))
            }
            Err(e) => return Response::Error(ErrorReply::new(ErrorCode::Internal, e.to_string())),
        };
        let full = page.len() >= limit;
        let mut records = Vec::with_capacity(page.len());
        let mut size = 0usize;
        let mut cut = false;
        for (key, record) in page {
            let s = key.len() + record.value.as_ref().map_or(0, Vec::len) + 32;
            if !records.is_empty() && size + s > proto::limits::MAX_BATCH_BYTES {
                cut = true;
                break;
            }
            size += s;
            records.push(KeyRecord { key, record });
        }
        Response::StreamPage {
            records,
            done: !full && !cut,
        }
    }

    /// What the staged changes (or the transition in progress) move, per gaining node.
    fn movements(&self, st: &RingState) -> Vec<Movement> {
        let (from, to) = match &st.transition {
            Some(t) => (st.members.clone(), t.next.clone()),
            None if st.staged.is_empty() => return Vec::new(),
            None => match apply_changes(&st.members, &st.staged) {
                Ok(next) => (st.members.clone(), next),
                Err(_) => return Vec::new(),
            },
        };
        let (Ok(current), Ok(next)) = (ring_of(&from, &st.strategy), ring_of(&to, &st.strategy))
        else {
            return Vec::new();
        };
        // Records per unit of token space, from this node's count and the share it holds.
        let mine: f64 = current
            .ranges_of(self.id)
            .iter()
            .map(|(r, _)| share_of(r))
            .sum();
        let density = if mine > 0.0 {
            self.store.engine().approximate_len() as f64 / mine
        } else {
            0.0
        };
        next.members()
            .iter()
            .map(|m| m.id)
            .filter_map(|id| {
                let ranges = gained_ranges(&current, &next, id);
                if ranges.is_empty() {
                    return None;
                }
                let share: f64 = ranges.iter().map(|(r, _)| share_of(r)).sum();
                Some(Movement {
                    node: id,
                    ranges,
                    share,
                    estimated_records: (share * density) as u64,
                })
            })
            .collect()
    }

    fn membership_view(&self) -> MembershipView {
        let ring = self.members.state();
        let mut endpoints: Vec<(EndpointState, bool)> = self
            .members
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|e| (e.clone(), self.detector.is_up(e.id)))
            .collect();
        endpoints.sort_by_key(|(e, _)| e.id);
        let movements = self.movements(&ring);
        MembershipView {
            ring,
            endpoints,
            movements,
        }
    }

    /// The endpoint state of the node listening at `addr`, asked directly.
    async fn endpoint_at(self: &Arc<Self>, addr: &str) -> Result<EndpointState, String> {
        let sock: SocketAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an address (host:port)"))?;
        let g = self
            .exchange(sock)
            .await
            .map_err(|e| format!("cannot reach the node at {addr}: {e}"))?;
        let mut found: Vec<EndpointState> = g
            .endpoints
            .into_iter()
            .filter(|e| e.addr.parse::<SocketAddr>().ok() == Some(sock))
            .collect();
        found.sort_by_key(|e| std::cmp::Reverse((e.generation, e.version)));
        found
            .into_iter()
            .next()
            .ok_or_else(|| format!("the node at {addr} did not report itself"))
    }

    /// Before a commit: waits until this node's failure detector sees every staged newcomer up,
    /// and so does every other member it sees up (asked for their status). From the commit on,
    /// writes need the newcomers in the next ring, at ALL for example, and a coordinator that had
    /// not heard from one yet answered `Unavailable` (seen: 3 of 8,000 ALL writes in a jepsen
    /// membership run when only this node's view was awaited). Bounded by [`NEWCOMER_WAIT`]; a
    /// newcomer still not up then refuses the commit.
    async fn wait_newcomers_up(&self) -> Result<(), String> {
        let until = Instant::now() + NEWCOMER_WAIT;
        loop {
            let newcomers = self.members.state().staged_newcomers();
            let mut down: Vec<NodeId> = newcomers
                .iter()
                .copied()
                .filter(|id| !self.detector.is_up(*id))
                .collect();
            if down.is_empty() {
                down = self.newcomers_down_elsewhere(&newcomers, until).await;
            }
            if down.is_empty() {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "node(s) {down:?} staged to join are not up as node {} or another live member sees them after {} s; not committing (check that they run and are reachable)",
                    self.id,
                    NEWCOMER_WAIT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The newcomers some other member (one this node sees up) does not see up yet, or whose
    /// status it did not give. A member this node sees down is not asked: it takes no writes.
    async fn newcomers_down_elsewhere(&self, newcomers: &[NodeId], until: Instant) -> Vec<NodeId> {
        let members: Vec<NodeId> = self
            .members
            .state()
            .member_ids()
            .filter(|id| *id != self.id && !newcomers.contains(id) && self.detector.is_up(*id))
            .collect();
        let deadline = until.min(Instant::now() + Duration::from_secs(1));
        let answers = futures::future::join_all(
            members
                .iter()
                .map(|&m| self.call_peer(m, Request::Status, deadline)),
        )
        .await;
        let mut down = Vec::new();
        for answer in answers {
            let seen_up = |id: NodeId| match &answer {
                Ok(Response::Status(st)) => st.peers.iter().any(|p| p.id == id && p.up),
                _ => false,
            };
            for &n in newcomers {
                if !seen_up(n) && !down.contains(&n) {
                    down.push(n);
                }
            }
        }
        down
    }

    /// Serves an admin membership operation.
    /// The node that serves membership changes: the lowest-id member of the current ring this
    /// node sees up (itself included), as Riak's claimant. Changes sent to any node are
    /// forwarded there, so two administrators' changes apply one after the other instead of
    /// two proposals of the same epoch of which one would be lost.
    fn admin_node(&self) -> NodeId {
        self.members
            .state()
            .member_ids()
            .filter(|id| self.detector.is_up(*id))
            .min()
            .unwrap_or(self.id)
    }

    /// Exchanges gossip with every other member of the current ring and succeeds when a majority
    /// of its members (this node included, if it is one) answered. A change is served only
    /// then: during a partition the side without a majority cannot change the ring, so the
    /// two sides cannot each make a change of their own that one of them would lose when the
    /// partition heals (each side would otherwise pick its own admin node).
    async fn reach_a_majority(self: &Arc<Self>) -> Result<(), String> {
        let members: Vec<NodeId> = self.members.state().member_ids().collect();
        if members.is_empty() {
            return Ok(());
        }
        let view = self.view();
        let asks = members
            .iter()
            .filter(|id| **id != self.id)
            .filter_map(|id| view.addrs.get(id).copied())
            .map(|addr| {
                let node = self.clone();
                // Once more after a failure: the pool may have held a connection to a process
                // that has since restarted, which the first call finds closed.
                async move {
                    node.exchange(addr).await.is_ok() || node.exchange(addr).await.is_ok()
                }
            });
        let answered = futures::future::join_all(asks)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
            + usize::from(members.contains(&self.id));
        if answered * 2 > members.len() {
            Ok(())
        } else {
            Err(format!(
                "only {answered} of the ring's {} members answered; a membership change needs a majority of them (is the cluster partitioned?)",
                members.len()
            ))
        }
    }

    /// Serves a membership operation sent by a client: `Show` here; a change at the admin node
    /// (see [`Node::admin_node`]), forwarded when that is another node. A forward that fails is
    /// reported, not served here: it may have been applied there (a timeout), and serving it
    /// here too would race the admin node.
    pub(crate) async fn membership_from_client(
        self: &Arc<Self>,
        op: MembershipOp,
        deadline: Instant,
    ) -> Response {
        let admin = self.admin_node();
        if matches!(op, MembershipOp::Show) || admin == self.id {
            return self.membership_op(op).await;
        }
        match self
            .call_peer(admin, Request::Membership(op.clone()), deadline)
            .await
        {
            Ok(resp) => resp,
            Err(e) => Response::Error(ErrorReply::new(
                ErrorCode::Unavailable,
                format!(
                    "the admin node {admin} did not answer ({e}); the change may or may not have been made there: `ringkv cluster plan` shows, then try again"
                ),
            )),
        }
    }

    /// Serves a membership operation here, one change at a time.
    pub(crate) async fn membership_op(self: &Arc<Self>, op: MembershipOp) -> Response {
        let _one_at_a_time = if matches!(op, MembershipOp::Show) {
            None
        } else {
            let guard = self.members.admin.lock().await;
            if let Err(e) = self.reach_a_majority().await {
                return Response::Error(ErrorReply::new(ErrorCode::Unavailable, e));
            }
            Some(guard)
        };
        let result: Result<(), String> = match op {
            MembershipOp::Show => Ok(()),
            MembershipOp::Clear => self
                .propose(|s| {
                    s.staged.clear();
                    Ok(())
                })
                .map(|_| ()),
            MembershipOp::Join { addr } => match self.endpoint_at(&addr).await {
                Err(e) => Err(e),
                Ok(e) => {
                    let member = MemberInfo {
                        member: e.member.clone(),
                        addr: e.addr.clone(),
                    };
                    self.propose(|s| {
                        if s.member(e.id).is_some() {
                            return Err(format!("node {} is already a member", e.id));
                        }
                        if s.staged.iter().any(|c| staged_node(c) == Some(e.id)) {
                            return Err(format!("node {} already has a staged change", e.id));
                        }
                        s.staged.push(Change::Join { member });
                        Ok(())
                    })
                    .map(|_| ())
                }
            },
            MembershipOp::Leave { node } => self
                .propose(|s| {
                    if !s.members.iter().any(|m| m.member.id == node) {
                        return Err(format!("node {node} is not a member"));
                    }
                    if s.staged.iter().any(|c| touches(c, node)) {
                        return Err(format!("node {node} already has a staged change"));
                    }
                    s.staged.push(Change::Leave { node });
                    Ok(())
                })
                .map(|_| ()),
            MembershipOp::Replace { dead, addr } => {
                if self.detector.is_up(dead) {
                    Err(format!(
                        "node {dead} is up; replace only a dead node (use leave for a live one)"
                    ))
                } else {
                    match self.endpoint_at(&addr).await {
                        Err(e) => Err(e),
                        Ok(e) => self
                            .propose(|s| {
                                let Some(old) = s.members.iter().find(|m| m.member.id == dead)
                                else {
                                    return Err(format!("node {dead} is not a member"));
                                };
                                if s.member(e.id).is_some() {
                                    return Err(format!("node {} is already a member", e.id));
                                }
                                if s.staged
                                    .iter()
                                    .any(|c| touches(c, dead) || touches(c, e.id))
                                {
                                    return Err("a change is already staged for these nodes".into());
                                }
                                let mut member = e.member.clone();
                                member.tokens = old.member.tokens.clone();
                                s.staged.push(Change::Replace {
                                    dead,
                                    with: MemberInfo {
                                        member,
                                        addr: e.addr.clone(),
                                    },
                                });
                                Ok(())
                            })
                            .map(|_| ()),
                    }
                }
            }
            MembershipOp::Commit => match self.wait_newcomers_up().await {
                Err(e) => Err(e),
                Ok(()) => self
                    .propose(|s| {
                        if let Some(t) = &s.transition {
                            return Err(format!(
                            "transition {} is still in progress ({:?}); commit again when it ends",
                            t.id, t.phase
                        ));
                        }
                        if s.staged.is_empty() {
                            return Err("nothing is staged".into());
                        }
                        let next = apply_changes(&s.members, &s.staged)?;
                        let valid = |m: &[MemberInfo]| {
                            ring_of(m, &s.strategy)
                                .map_err(|e| format!("the resulting ring is not valid: {e}"))
                        };
                        let current = valid(&s.members)?;
                        let next_ring = valid(&next)?;
                        let pending: Vec<NodeId> = next_ring
                            .members()
                            .iter()
                            .map(|m| m.id)
                            .filter(|id| !gained_ranges(&current, &next_ring, *id).is_empty())
                            .collect();
                        s.transition = Some(Transition {
                            id: s.epoch + 1,
                            changes: std::mem::take(&mut s.staged),
                            next,
                            phase: Phase::Streaming,
                            pending,
                        });
                        Ok(())
                    })
                    .map(|_| ()),
            },
        };
        match result {
            Ok(()) => Response::Membership(Box::new(self.membership_view())),
            Err(e) => bad(e),
        }
    }
}

fn staged_node(c: &Change) -> Option<NodeId> {
    match c {
        Change::Join { member } => Some(member.member.id),
        Change::Leave { node } => Some(*node),
        Change::Replace { with, .. } => Some(with.member.id),
    }
}

fn touches(c: &Change, id: NodeId) -> bool {
    match c {
        Change::Join { member } => member.member.id == id,
        Change::Leave { node } => *node == id,
        Change::Replace { dead, with } => *dead == id || with.member.id == id,
    }
}

/// A random `u64` (from the OS-seeded hasher; enough to pick a gossip target).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::{tokens_for, Member};

    fn ring(ids: &[NodeId]) -> Ring {
        Ring::new(
            ids.iter()
                .map(|&id| Member {
                    id,
                    datacenter: "dc1".into(),
                    rack: "r".into(),
                    tokens: tokens_for(id, 16),
                })
                .collect(),
            Strategy::Simple { rf: 3 },
        )
        .unwrap()
    }

    /// Every token the node replicates in `next` but not in `current` lies in exactly one gained
    /// range, whose sources are the token's current replicas; no other token does.
    fn check(current: &Ring, next: &Ring, node: NodeId) {
        let gained = gained_ranges(current, next, node);
        let probe = |t: Token| {
            let hits: Vec<_> = gained.iter().filter(|(r, _)| r.contains(t)).collect();
            let should = next.replicas(t).contains(&node) && !current.replicas(t).contains(&node);
            assert_eq!(hits.len(), usize::from(should), "token {t}");
            if let Some((_, sources)) = hits.first() {
                let mut want = current.replicas(t).to_vec();
                want.sort_unstable();
                assert_eq!(sources, &want);
            }
        };
        for m in current.members().iter().chain(next.members()) {
            for &t in &m.tokens {
                for d in [0u64, 1, 2, u64::MAX] {
                    probe(t.wrapping_add(d));
                }
            }
        }
        for i in 0..2000u64 {
            probe(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
    }

    #[test]
    fn gained_ranges_cover_exactly_what_a_join_a_leave_and_a_replace_move() {
        let three = ring(&[1, 2, 3]);
        let four = ring(&[1, 2, 3, 4]);
        let five = ring(&[1, 2, 3, 4, 5]);
        for n in 1..=4 {
            check(&three, &four, n);
        }
        for n in 1..=5 {
            check(&five, &three, n.min(3));
            check(&four, &five, n);
        }
        assert!(!gained_ranges(&three, &four, 4).is_empty());
        // A node gains nothing in a ring it is not in.
        assert!(gained_ranges(&four, &three, 4).is_empty());
        // Replace: node 9 with node 3's tokens gains exactly node 3's ranges.
        let replaced = Ring::new(
            [1, 2, 9]
                .iter()
                .map(|&id| Member {
                    id,
                    datacenter: "dc1".into(),
                    rack: "r".into(),
                    tokens: tokens_for(if id == 9 { 3 } else { id }, 16),
                })
                .collect(),
            Strategy::Simple { rf: 3 },
        )
        .unwrap();
        check(&three, &replaced, 9);
        let share: f64 = gained_ranges(&three, &replaced, 9)
            .iter()
            .map(|(r, _)| share_of(r))
            .sum();
        assert!(
            (share - 1.0).abs() < 1e-9,
            "RF 3 of 3: node 9 gains everything ({share})"
        );
    }

    #[test]
    fn changes_apply_and_refuse_nonsense() {
        let m = |id: NodeId| MemberInfo {
            member: Member {
                id,
                datacenter: "dc1".into(),
                rack: "r".into(),
                tokens: tokens_for(id, 4),
            },
            addr: format!("127.0.0.1:{}", 7000 + id),
        };
        let three = vec![m(1), m(2), m(3)];
        let next = apply_changes(
            &three,
            &[Change::Join { member: m(4) }, Change::Leave { node: 1 }],
        )
        .unwrap();
        assert_eq!(
            next.iter().map(|x| x.member.id).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert!(apply_changes(&three, &[Change::Join { member: m(2) }]).is_err());
        assert!(apply_changes(&three, &[Change::Leave { node: 9 }]).is_err());
        let r = apply_changes(
            &three,
            &[Change::Replace {
                dead: 3,
                with: m(7),
            }],
        )
        .unwrap();
        assert_eq!(
            r.iter().map(|x| x.member.id).collect::<Vec<_>>(),
            vec![1, 2, 7]
        );
    }

    #[test]
    fn ring_states_order_by_epoch_then_author_within_one_cluster() {
        let s = |epoch, author, cluster: &str| RingState {
            cluster: cluster.into(),
            epoch,
            author,
            strategy: Strategy::Simple { rf: 1 },
            members: Vec::new(),
            staged: Vec::new(),
            transition: None,
        };
        assert!(s(2, 1, "a").newer_than(&s(1, 9, "a")));
        assert!(s(2, 3, "a").newer_than(&s(2, 1, "a")));
        assert!(!s(2, 1, "a").newer_than(&s(2, 1, "a")));
        assert!(!s(9, 1, "b").newer_than(&s(1, 1, "a")));
    }
}
