//! The client library: connects to a cluster through any seed node, learns its topology, and
//! sends each request straight to a replica of the key (token-aware routing), which coordinates
//! it at the requested consistency level.
//!
//! Which replica: writes that start in the same short window
//! ([`ClientConfig::coordinator_window`]) prefer the same node among their key's replicas, and
//! the preferred node moves to the next member every window. Concurrent writes then meet on
//! one coordinator, which sends their replica writes to each peer as one batch, instead of
//! each replica coordinating a share of them and batching only that share. Reads go to the
//! key's first replica: a read's coordinator reads its own copy on its runtime thread, and one
//! node taking every read of a window became the bottleneck under load.
//!
//! The topology is learned again from a live member (in the background, never delaying a
//! request) when a coordinator cannot be reached, at most once per
//! [`TOPOLOGY_RETRY_INTERVAL`], and otherwise every [`TOPOLOGY_REFRESH_INTERVAL`]: nodes that
//! left the ring stop being tried, nodes that joined start being used.
//!
//! Beyond the level, a client gives three promises of its own:
//! - **Session guarantees** (on unless [`ClientConfig::session_keys`] is 0): reads return nothing
//!   older than what this client already wrote or read of the key (see [`crate::session`]).
//! - **Safe retries**: every write carries a random op id; a write that ended ambiguously (a
//!   timeout, a connection lost before the answer) is sent again with the same id up to
//!   [`ClientConfig::write_retries`] times, and the cluster applies the op once, with the
//!   version of its first attempt.
//! - **Receipts** (with [`ClientConfig::receipts`]): every answer says which replicas
//!   acknowledged, which were hinted, which were stale and repaired.

use crate::error::ClientError;
use crate::session::{Floor, Session, DEFAULT_SESSION_KEYS};
use proto::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use proto::message::{NodeStatus, OpId, ReadOpts, Receipt, RepairReport, Topology, WriteOpts};
use proto::tls::TlsMaterial;
use proto::transport::{client_endpoint, Pool, TransportError};
use proto::{Consistency, Request, Response, Version};
use rand::seq::SliceRandom;
use ring::{NodeId, Ring};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Least time between two topology refreshes set off by unreachable coordinators.
pub const TOPOLOGY_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Time after which the topology is refreshed anyway (the ring may have grown).
pub const TOPOLOGY_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Budget of one topology request during a refresh.
const TOPOLOGY_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Members asked, one after another, in one refresh.
const TOPOLOGY_REFRESH_TRIES: usize = 3;

/// How to reach a cluster.
#[derive(Clone)]
pub struct ClientConfig {
    /// Nodes to ask for the topology; any one answering is enough.
    pub seeds: Vec<SocketAddr>,
    /// Client certificate, key and the cluster CA.
    pub tls: TlsMaterial,
    /// How long one request may take, end to end.
    pub timeout: Duration,
    /// The client's datacenter: coordinators there are preferred (LOCAL_* levels count replicas in
    /// the coordinator's datacenter). `None`: no preference.
    pub datacenter: Option<String>,
    /// Keys the session remembers for read-your-writes and monotonic reads; 0 turns session
    /// guarantees off.
    pub session_keys: usize,
    /// How many times a write that ended ambiguously is sent again (same op id, so it applies
    /// once). Each attempt has the full `timeout`; retries wait 100 ms, 200 ms, ... (at most
    /// 1 s) before going out.
    pub write_retries: u32,
    /// Ask for a [`Receipt`] with every answer.
    pub receipts: bool,
    /// Writes (puts and deletes) that start in the same window of this length prefer the same
    /// coordinator among their key's replicas (those in the client's datacenter, when it has
    /// one), and the preferred node moves to the next member of the ring each window, so every
    /// member gets its turn. Concurrent writes then share a coordinator, which coalesces their
    /// replica writes into one batch per peer. Reads, and every request when this is
    /// `Duration::ZERO`, go to the key's first replica.
    pub coordinator_window: Duration,
}

impl ClientConfig {
    /// A configuration with the defaults: no datacenter preference, session guarantees on
    /// ([`DEFAULT_SESSION_KEYS`] keys), 2 write retries, no receipts, coordinator windows of
    /// [`DEFAULT_COORDINATOR_WINDOW`].
    pub fn new(seeds: Vec<SocketAddr>, tls: TlsMaterial, timeout: Duration) -> ClientConfig {
        ClientConfig {
            seeds,
            tls,
            timeout,
            datacenter: None,
            session_keys: DEFAULT_SESSION_KEYS,
            write_retries: DEFAULT_WRITE_RETRIES,
            receipts: false,
            coordinator_window: DEFAULT_COORDINATOR_WINDOW,
        }
    }
}

/// Length of the windows in which writes prefer the same coordinator, by default.
pub const DEFAULT_COORDINATOR_WINDOW: Duration = Duration::from_millis(5);

/// Times an ambiguous write is retried by default.
pub const DEFAULT_WRITE_RETRIES: u32 = 2;

/// Wait before the first retry of an ambiguous write; doubled for each further one.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts of one write.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// A successful write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The version the write was stamped with.
    pub version: Version,
    /// Replicas that acknowledged before the reply.
    pub acks: u32,
    /// The node that coordinated it.
    pub coordinator: NodeId,
    /// Attempts it took (1 unless an ambiguous failure was retried with the same op id).
    pub attempts: u32,
    /// Where the write went, when [`ClientConfig::receipts`] is on.
    pub receipt: Option<Receipt>,
}

/// A successful read of a present key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The newest value among the replicas that answered.
    pub value: Vec<u8>,
    /// Its version.
    pub version: Version,
    /// The node that coordinated it.
    pub coordinator: NodeId,
    /// Which replicas answered, were stale, were repaired, when [`ClientConfig::receipts`] is on.
    pub receipt: Option<Receipt>,
}

/// A connected client. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Client {
    pool: Arc<Pool>,
    /// What requests are routed by; replaced whole by a refresh.
    routing: Arc<RwLock<Arc<Routing>>>,
    /// When the client connected: the origin of `refreshed_ms` and of the coordinator windows.
    connected: Instant,
    /// A random start in the rotation of preferred coordinators, so that clients started at
    /// the same moment do not prefer the same node at the same time.
    window_phase: u64,
    /// Milliseconds after `connected` at which the last topology refresh started (an atomic:
    /// it is read on every request).
    refreshed_ms: AtomicU64,
    /// Whether a refresh is running (one at a time).
    refreshing: Arc<AtomicBool>,
    cfg: ClientConfig,
    session: Option<Mutex<Session>>,
}

/// Clears the "refresh running" flag when the refresh task ends (or is dropped).
struct RefreshRunning(Arc<AtomicBool>);

impl Drop for RefreshRunning {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A topology a node sent, with its ring and lookups.
struct Routing {
    topology: Topology,
    ring: Ring,
    addrs: HashMap<NodeId, SocketAddr>,
    datacenters: HashMap<NodeId, String>,
    /// Each member's place in the coordinator windows' rotation (the ring's member order).
    turns: HashMap<NodeId, usize>,
}

impl Routing {
    fn new(topology: Topology) -> Result<Routing, ClientError> {
        let ring = Ring::new(
            topology.members.iter().map(|m| m.member.clone()).collect(),
            topology.strategy.clone(),
        )
        .map_err(|e| ClientError::Server(format!("node sent an unusable topology: {e}")))?;
        let mut addrs = HashMap::new();
        let mut datacenters = HashMap::new();
        for m in &topology.members {
            let addr = m.addr.parse().map_err(|_| {
                ClientError::Server(format!("node sent a bad address {:?}", m.addr))
            })?;
            addrs.insert(m.member.id, addr);
            datacenters.insert(m.member.id, m.member.datacenter.clone());
        }
        let turns = rotation(ring.members().iter().map(|m| m.id));
        Ok(Routing {
            topology,
            ring,
            addrs,
            datacenters,
            turns,
        })
    }

    /// Marks the members the answering node saw down as failed, so they are tried last.
    fn mark_down(&self, pool: &Pool) {
        for m in &self.topology.members {
            if !self.topology.live.contains(&m.member.id) {
                if let Some(addr) = self.addrs.get(&m.member.id) {
                    pool.mark_failed(*addr);
                }
            }
        }
    }
}

impl Client {
    /// Connects: asks the seeds, in order, for the cluster topology.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, ClientError> {
        let endpoint = client_endpoint(&cfg.tls).map_err(|e| ClientError::Config(e.to_string()))?;
        let pool = Pool::new(endpoint, cfg.timeout.min(Duration::from_secs(1)));
        let mut last_err = ClientError::Config("no seed addresses given".into());
        for seed in &cfg.seeds {
            match pool.call(*seed, Request::Topology, cfg.timeout).await {
                Ok(Response::Topology(t)) => return Client::from_topology(pool, *t, cfg),
                Ok(other) => last_err = unexpected(other),
                Err(e) => last_err = transport_error(e),
            }
        }
        Err(last_err)
    }

    fn from_topology(
        pool: Pool,
        topology: Topology,
        cfg: ClientConfig,
    ) -> Result<Client, ClientError> {
        let routing = Routing::new(topology)?;
        routing.mark_down(&pool);
        let session = (cfg.session_keys > 0).then(|| Mutex::new(Session::new(cfg.session_keys)));
        Ok(Client {
            pool: Arc::new(pool),
            routing: Arc::new(RwLock::new(Arc::new(routing))),
            connected: Instant::now(),
            window_phase: rand::random(),
            refreshed_ms: AtomicU64::new(0),
            refreshing: Arc::new(AtomicBool::new(false)),
            cfg,
            session,
        })
    }

    /// The topology the client routes by now (learned at connect time, refreshed since).
    pub fn topology(&self) -> Topology {
        self.routing().topology.clone()
    }

    fn routing(&self) -> Arc<Routing> {
        Arc::clone(&self.routing.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Starts a topology refresh in the background when `unreachable` (a coordinator could not
    /// be reached) and the last one is [`TOPOLOGY_RETRY_INTERVAL`] old, or when it is
    /// [`TOPOLOGY_REFRESH_INTERVAL`] old. Outside a Tokio runtime it does nothing.
    fn maybe_refresh(&self, unreachable: bool) {
        let due = if unreachable {
            TOPOLOGY_RETRY_INTERVAL
        } else {
            TOPOLOGY_REFRESH_INTERVAL
        };
        let now_ms = self.connected.elapsed().as_millis() as u64;
        let age_ms = now_ms.saturating_sub(self.refreshed_ms.load(Ordering::Relaxed));
        if age_ms < due.as_millis() as u64 {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.refreshed_ms.store(now_ms, Ordering::Relaxed);
        let pool = Arc::clone(&self.pool);
        let routing = Arc::clone(&self.routing);
        let running = RefreshRunning(Arc::clone(&self.refreshing));
        let current = self.routing();
        handle.spawn(async move {
            let _running = running;
            // Members not avoided first, in random order (an answer from one node that is cut
            // off from the others must not decide for good); a few asked, one after another.
            let mut asked: Vec<SocketAddr> = current.addrs.values().copied().collect();
            asked.shuffle(&mut rand::thread_rng());
            asked.sort_by_key(|a| pool.is_backing_off(*a));
            for addr in asked.into_iter().take(TOPOLOGY_REFRESH_TRIES) {
                let Ok(Response::Topology(t)) = pool
                    .call(addr, Request::Topology, TOPOLOGY_REQUEST_TIMEOUT)
                    .await
                else {
                    continue;
                };
                if t.cluster != current.topology.cluster {
                    continue;
                }
                // The answering node's `live` list is not applied: it is one node's view, and
                // a node cut off from the rest would make the client avoid every other one.
                if let Ok(next) = Routing::new(*t) {
                    let mut r = routing.write().unwrap_or_else(|p| p.into_inner());
                    // Never an older ring than the one in use (a lagging node's answer).
                    if next.topology.epoch >= r.topology.epoch {
                        *r = Arc::new(next);
                    }
                    return;
                }
            }
        });
    }

    /// Writes `value` under `key`.
    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        consistency: Consistency,
    ) -> Result<WriteOutcome, ClientError> {
        self.checked_put(key, value, consistency, None).await
    }

    /// Writes `value` under `key` with `node` as the coordinator, instead of a replica chosen by
    /// token-aware routing (tests, and fault tests that spread a key over coordinators).
    pub async fn put_via(
        &self,
        node: NodeId,
        key: &[u8],
        value: &[u8],
        consistency: Consistency,
    ) -> Result<WriteOutcome, ClientError> {
        self.checked_put(key, value, consistency, Some(node)).await
    }

    async fn checked_put(
        &self,
        key: &[u8],
        value: &[u8],
        consistency: Consistency,
        via: Option<NodeId>,
    ) -> Result<WriteOutcome, ClientError> {
        check_key(key)?;
        check_value(value)?;
        self.write(key, Some(value), consistency, via).await
    }

    /// Deletes `key` (writes a tombstone).
    pub async fn delete(
        &self,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<WriteOutcome, ClientError> {
        check_key(key)?;
        self.write(key, None, consistency, None).await
    }

    /// A put (`value` is `Some`) or delete, retried with the same op id while it ends ambiguously.
    async fn write(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        consistency: Consistency,
        via: Option<NodeId>,
    ) -> Result<WriteOutcome, ClientError> {
        let op: OpId = rand::random();
        let mut opts = WriteOpts {
            op: Some(op),
            retry: false,
            after: self.session_floor(key).map(|f| f.version),
            receipt: self.cfg.receipts,
        };
        let mut attempts = 0;
        // The first attempt that ended ambiguously: once one may have been applied, no later
        // answer can say the write was certainly not applied.
        let mut ambiguous: Option<ClientError> = None;
        loop {
            attempts += 1;
            let req = match value {
                Some(v) => Request::Put {
                    key: key.to_vec(),
                    value: v.to_vec(),
                    consistency,
                    opts,
                },
                None => Request::Delete {
                    key: key.to_vec(),
                    consistency,
                    opts,
                },
            };
            let sent = match via {
                Some(node) => self.send_via(node, req).await,
                None => self.send(key, req).await,
            };
            let res = sent.and_then(|(coordinator, resp)| match resp {
                Response::Written {
                    version,
                    acks,
                    receipt,
                } => Ok(WriteOutcome {
                    version,
                    acks,
                    coordinator,
                    attempts,
                    receipt: receipt.map(|r| *r),
                }),
                Response::Error(e) => Err(e.into()),
                other => Err(unexpected(other)),
            });
            match res {
                Ok(w) => {
                    self.session_observe(key, w.version, value.is_none());
                    return Ok(w);
                }
                Err(e @ ClientError::Timeout { .. }) if attempts <= self.cfg.write_retries => {
                    tracing::debug!(error = %e, attempts, "write ended ambiguously; retrying the same op");
                    opts.retry = true;
                    ambiguous.get_or_insert(e);
                    // Back off (100 ms, 200 ms, ... at most 1 s) so a replica that is briefly
                    // stalled can come back before the retries are spent.
                    let backoff = RETRY_BACKOFF * 2u32.saturating_pow(attempts - 1);
                    tokio::time::sleep(backoff.min(MAX_RETRY_BACKOFF)).await;
                }
                Err(e @ ClientError::Timeout { .. }) => return Err(e),
                Err(e) => {
                    return Err(match ambiguous {
                        Some(first) => still_ambiguous(first, e, attempts),
                        None => e,
                    })
                }
            }
        }
    }

    /// Reads `key`. A missing or deleted key is [`ClientError::NotFound`].
    pub async fn get(
        &self,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<ReadOutcome, ClientError> {
        check_key(key)?;
        let req = self.get_request(key, consistency);
        let sent = self.send(key, req).await;
        self.read_outcome(key, sent)
    }

    /// Reads `key` with `node` as the coordinator, instead of a replica chosen by token-aware
    /// routing (for tests and diagnostics).
    pub async fn get_via(
        &self,
        node: NodeId,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<ReadOutcome, ClientError> {
        check_key(key)?;
        let req = self.get_request(key, consistency);
        let sent = self.send_via(node, req).await;
        self.read_outcome(key, sent)
    }

    fn get_request(&self, key: &[u8], consistency: Consistency) -> Request {
        let floor = self.session_floor(key);
        Request::Get {
            key: key.to_vec(),
            consistency,
            opts: ReadOpts {
                min_version: floor.map(|f| f.version),
                min_is_tombstone: floor.is_some_and(|f| f.deleted),
                receipt: self.cfg.receipts,
            },
        }
    }

    fn read_outcome(
        &self,
        key: &[u8],
        sent: Result<(NodeId, Response), ClientError>,
    ) -> Result<ReadOutcome, ClientError> {
        let (coordinator, resp) = sent?;
        match resp {
            Response::Value {
                value,
                version,
                receipt,
                ..
            } => {
                // A tombstone's version counts too: the session must not read the key back
                // from before its delete.
                if let Some(v) = version {
                    self.session_observe(key, v, value.is_none());
                }
                match (value, version) {
                    (Some(value), Some(version)) => Ok(ReadOutcome {
                        value,
                        version,
                        coordinator,
                        receipt: receipt.map(|r| *r),
                    }),
                    _ => Err(ClientError::NotFound),
                }
            }
            Response::Error(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    /// The newest version of `key` this client's session has seen.
    pub fn session_floor(&self, key: &[u8]) -> Option<Floor> {
        self.session
            .as_ref()
            .and_then(|s| s.lock().unwrap_or_else(|p| p.into_inner()).floor(key))
    }

    fn session_observe(&self, key: &[u8], version: Version, deleted: bool) {
        if let Some(s) = &self.session {
            s.lock()
                .unwrap_or_else(|p| p.into_inner())
                .observe(key, version, deleted);
        }
    }

    /// A copy of the session's memory (`None` when session guarantees are off), to keep it
    /// beyond this client (see [`Session::save`]).
    pub fn session(&self) -> Option<Session> {
        self.session
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Continues a session kept from an earlier client (no effect when sessions are off).
    pub fn resume_session(&self, saved: Session) {
        if let Some(s) = &self.session {
            *s.lock().unwrap_or_else(|p| p.into_inner()) = saved;
        }
    }

    /// Sends one request to `node` as the coordinator.
    async fn send_via(
        &self,
        node: NodeId,
        req: Request,
    ) -> Result<(NodeId, Response), ClientError> {
        let addr = *self
            .routing()
            .addrs
            .get(&node)
            .ok_or_else(|| ClientError::Config(format!("no node {node}")))?;
        match self.call(addr, req, self.cfg.timeout).await {
            Ok(resp) => Ok((node, resp)),
            Err(e) => Err(transport_error(e)),
        }
    }

    /// One node's own record of a key (tombstones included), without coordination: what that
    /// replica alone holds. `Ok(None)`: the node has no record of the key.
    pub async fn inspect(
        &self,
        node: NodeId,
        key: &[u8],
    ) -> Result<Option<proto::Record>, ClientError> {
        check_key(key)?;
        let addr = *self
            .routing()
            .addrs
            .get(&node)
            .ok_or_else(|| ClientError::Config(format!("no node {node}")))?;
        match self
            .call(
                addr,
                Request::Inspect { key: key.to_vec() },
                self.cfg.timeout,
            )
            .await
        {
            Ok(Response::ReplicaRecord { record }) => Ok(record),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(transport_error(e)),
        }
    }

    /// Runs an anti-entropy round on `node` with every peer. With `wait`, returns what the round
    /// did (the call may take as long as `timeout`); without, returns once it started.
    pub async fn repair(
        &self,
        node: NodeId,
        wait: bool,
        timeout: Duration,
    ) -> Result<RepairReport, ClientError> {
        let addr = *self
            .routing()
            .addrs
            .get(&node)
            .ok_or_else(|| ClientError::Config(format!("no node {node}")))?;
        match self.call(addr, Request::Repair { wait }, timeout).await {
            Ok(Response::RepairReport(r)) => Ok(r),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(transport_error(e)),
        }
    }

    /// Asks one node for its status.
    pub async fn status(&self, node: NodeId) -> Result<NodeStatus, ClientError> {
        let addr = *self
            .routing()
            .addrs
            .get(&node)
            .ok_or_else(|| ClientError::Config(format!("no node {node}")))?;
        status_at(&self.pool, addr, self.cfg.timeout).await
    }

    /// One request to one node. A timeout also drops the connection, so a node that restarted
    /// (leaving a dead connection behind) is reached afresh by the next request.
    async fn call(
        &self,
        addr: SocketAddr,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let retry = is_read_only(&req).then(|| req.clone());
        let res = self.pool.call(addr, req, timeout).await;
        let res = self.reset_on_timeout(addr, res).await;
        match (res, retry) {
            // A read-only request that met a connection closed under it (a restarted node) is
            // safe to send once more, on a new connection.
            (Err(TransportError::Closed(_)), Some(req)) => self.pool.call(addr, req, timeout).await,
            (res, _) => res,
        }
    }

    async fn reset_on_timeout(
        &self,
        addr: SocketAddr,
        res: Result<Response, TransportError>,
    ) -> Result<Response, TransportError> {
        if matches!(
            res,
            Err(TransportError::Timeout(_)) | Err(TransportError::Closed(_))
        ) {
            self.pool.reset(addr).await;
        }
        res
    }

    /// Coordinators to try for a key, best first: replicas in the client's datacenter, then the
    /// other replicas, then every other node. With `windowed`, the replicas in front are
    /// ordered by the coordinator window's rotation instead of by placement.
    fn coordinators(&self, routing: &Routing, key: &[u8], windowed: bool) -> Vec<NodeId> {
        let replicas = routing.ring.replicas_for_key(key);
        let in_dc = |id: &NodeId| match &self.cfg.datacenter {
            Some(dc) => routing.datacenters.get(id) == Some(dc),
            None => true,
        };
        let mut order = candidates(
            replicas,
            routing.ring.members().iter().map(|m| m.id),
            self.cfg.datacenter.is_some(),
            in_dc,
        );
        // The key's replicas in front (in the client's datacenter, if it has one) are equally
        // good coordinators: the window's preferred node goes first.
        if let Some(slot) = windowed.then(|| self.window_slot()).flatten() {
            let lead = replicas.iter().filter(|id| in_dc(id)).count();
            prefer_slot(&mut order[..lead], &routing.turns, slot);
        }
        // Nodes that recently failed to connect, were reported down or said they were shutting
        // down go last, in order; their presence is a reason to learn the topology again.
        let avoided: Vec<bool> = order
            .iter()
            .map(|id| {
                routing
                    .addrs
                    .get(id)
                    .is_some_and(|a| self.pool.is_backing_off(*a))
            })
            .collect();
        if avoided.iter().any(|a| *a) {
            self.maybe_refresh(true);
        }
        let mut ranked: Vec<(bool, NodeId)> = avoided.into_iter().zip(order).collect();
        ranked.sort_by_key(|(avoid, _)| *avoid);
        ranked.into_iter().map(|(_, id)| id).collect()
    }

    /// The number of the coordinator window now (counted from a random phase), or `None` when
    /// windows are off.
    fn window_slot(&self) -> Option<u64> {
        let window = self.cfg.coordinator_window.as_nanos();
        if window == 0 {
            return None;
        }
        let n = self.connected.elapsed().as_nanos() / window;
        Some(self.window_phase.wrapping_add(n as u64))
    }

    /// Sends a request to the first coordinator that can be reached. Moves on to the next only
    /// when the request was certainly not delivered (the connection could not be made).
    async fn send(&self, key: &[u8], req: Request) -> Result<(NodeId, Response), ClientError> {
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        let mut last = ClientError::Connect("no nodes in topology".into());
        let routing = self.routing();
        let mut unreachable = false;
        let result = self
            .send_routed(&routing, key, req, deadline, &mut unreachable, &mut last)
            .await;
        self.maybe_refresh(unreachable);
        result.unwrap_or(Err(last))
    }

    /// [`Client::send`] over one routing; `None` when no coordinator could be reached (`last`
    /// says why). Sets `unreachable` when a coordinator refused or failed to connect.
    async fn send_routed(
        &self,
        routing: &Routing,
        key: &[u8],
        req: Request,
        deadline: tokio::time::Instant,
        unreachable: &mut bool,
        last: &mut ClientError,
    ) -> Option<Result<(NodeId, Response), ClientError>> {
        for node in self
            .coordinators(routing, key, !is_read_only(&req))
            .into_iter()
            .take(MAX_COORDINATOR_TRIES)
        {
            let Some(&addr) = routing.addrs.get(&node) else {
                continue;
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let channel = match self.pool.channel(addr).await {
                Ok(ch) => ch,
                Err(e) => {
                    *unreachable = true;
                    *last = transport_error(e);
                    continue;
                }
            };
            let res = if is_read_only(&req) {
                drop(channel);
                match self.call(addr, req.clone(), left).await {
                    // A node that is shutting down (it left the ring, or is restarting) refuses
                    // or closes connections; a read is safe to ask the next coordinator.
                    Err(e @ (TransportError::Connect { .. } | TransportError::Closed(_))) => {
                        *unreachable = true;
                        *last = transport_error(e);
                        continue;
                    }
                    res => res,
                }
            } else {
                let res = channel.call(req, left).await;
                self.reset_on_timeout(addr, res).await
            };
            return Some(match res {
                Ok(resp) => Ok((node, resp)),
                Err(e) => Err(transport_error(e)),
            });
        }
        None
    }
}

/// Every node once, best coordinator first: the key's `replicas` in the client's datacenter
/// (`in_dc`), then, with a datacenter (`has_dc`), the datacenter's other members (LOCAL_*
/// levels count the coordinator's datacenter, so the client leaves it only as a last resort),
/// then the other replicas, then every other member. Each list is built without duplicates,
/// so a long member list costs one pass and a check against the few replicas per member.
fn candidates(
    replicas: &[NodeId],
    members: impl Iterator<Item = NodeId> + Clone,
    has_dc: bool,
    in_dc: impl Fn(&NodeId) -> bool,
) -> Vec<NodeId> {
    let replica = |id: &NodeId| replicas.contains(id);
    let mut order: Vec<NodeId> = replicas.iter().copied().filter(|id| in_dc(id)).collect();
    if has_dc {
        order.extend(members.clone().filter(|id| in_dc(id) && !replica(id)));
    }
    order.extend(replicas.iter().copied().filter(|id| !in_dc(id)));
    order.extend(members.filter(|id| !(replica(id) || (has_dc && in_dc(id)))));
    order
}

/// Each member's turn in the coordinator windows' rotation: its place in `members`.
fn rotation(members: impl Iterator<Item = NodeId>) -> HashMap<NodeId, usize> {
    members.enumerate().map(|(turn, id)| (id, turn)).collect()
}

/// Orders `replicas` (equally good coordinators) by how soon each one's turn comes in the
/// rotation `turns` when it is at turn `slot % turns.len()` now: that member first, if it is
/// one of them, then the next one in turn, cyclically.
fn prefer_slot(replicas: &mut [NodeId], turns: &HashMap<NodeId, usize>, slot: u64) {
    let n = turns.len();
    if n == 0 || replicas.len() < 2 {
        return;
    }
    let now = (slot % n as u64) as usize;
    // A replica with no turn (a topology in flux) keeps its place after the others.
    replicas.sort_by_key(|id| turns.get(id).map_or(n, |t| (t + n - now) % n));
}

/// A retry's definite failure (`Unavailable`, `Connect`, ...) after an attempt that timed out:
/// the first attempt may still have been applied, so the write's outcome is a timeout.
fn still_ambiguous(first: ClientError, last: ClientError, attempts: u32) -> ClientError {
    match first {
        ClientError::Timeout {
            message,
            acks,
            required,
            receipt,
        } => ClientError::Timeout {
            message: format!(
                "{message}; attempt {attempts} of the same op then failed: {last}; the write may or may not have been applied"
            ),
            acks,
            required,
            receipt,
        },
        other => other,
    }
}

/// Requests that change nothing, so sending one twice is harmless.
fn is_read_only(req: &Request) -> bool {
    matches!(
        req,
        Request::Get { .. } | Request::Inspect { .. } | Request::Status | Request::Topology
    )
}

/// Coordinators tried for one request before giving up on reaching the cluster.
const MAX_COORDINATOR_TRIES: usize = 4;

/// Asks the node at `addr` for its status.
pub async fn status_at(
    pool: &Pool,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<NodeStatus, ClientError> {
    match pool.call(addr, Request::Status, timeout).await {
        Ok(Response::Status(s)) => Ok(*s),
        Ok(Response::Error(e)) => Err(e.into()),
        Ok(other) => Err(unexpected(other)),
        Err(e) => Err(transport_error(e)),
    }
}

/// Sends a membership operation to the node at `addr`.
pub async fn membership_at(
    pool: &Pool,
    addr: SocketAddr,
    op: proto::membership::MembershipOp,
    timeout: Duration,
) -> Result<proto::membership::MembershipView, ClientError> {
    match pool.call(addr, Request::Membership(op), timeout).await {
        Ok(Response::Membership(v)) => Ok(*v),
        Ok(Response::Error(e)) => Err(e.into()),
        Ok(other) => Err(unexpected(other)),
        Err(e) => Err(transport_error(e)),
    }
}

/// Checks a key against the limits before anything is sent: not empty, at most
/// [`MAX_KEY_BYTES`]. The CLI calls it before connecting, so a bad key fails without a cluster.
pub fn check_key(key: &[u8]) -> Result<(), ClientError> {
    if key.is_empty() {
        return Err(ClientError::InvalidRequest("empty key".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ClientError::InvalidRequest(format!(
            "key of {} bytes exceeds the {MAX_KEY_BYTES}-byte limit",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a value against [`MAX_VALUE_BYTES`] before anything is sent.
pub fn check_value(value: &[u8]) -> Result<(), ClientError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(ClientError::InvalidRequest(format!(
            "value of {} bytes exceeds the {MAX_VALUE_BYTES}-byte limit",
            value.len()
        )));
    }
    Ok(())
}

fn unexpected(resp: Response) -> ClientError {
    match resp {
        Response::Error(e) => e.into(),
        other => ClientError::Server(format!("unexpected reply: {other:?}")),
    }
}

/// Maps a transport failure to what the user can act on. A timeout or a connection lost after
/// sending leaves the outcome unknown, like a replica timeout.
pub fn transport_error(e: TransportError) -> ClientError {
    match e {
        TransportError::Timeout(addr) => ClientError::Timeout {
            message: format!("no reply from coordinator {addr} in time; a write may or may not have been applied"),
            acks: 0,
            required: 0,
            receipt: None,
        },
        TransportError::Closed(addr) => ClientError::Timeout {
            message: format!("connection to coordinator {addr} closed before the reply; a write may or may not have been applied"),
            acks: 0,
            required: 0,
            receipt: None,
        },
        TransportError::Connect { addr, reason } if reason.contains("certificate") || reason.contains("crypto") => {
            ClientError::Unauthorized(format!("{addr}: {reason}"))
        }
        TransportError::Connect { addr, reason } => ClientError::Connect(format!("{addr}: {reason}")),
        TransportError::Codec(e) => ClientError::InvalidRequest(e.to_string()),
        TransportError::Bind { .. } | TransportError::Tls(_) => ClientError::Config(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::{candidates, prefer_slot, rotation};
    use ring::NodeId;
    use std::collections::HashMap;

    fn turns(members: &[NodeId]) -> HashMap<NodeId, usize> {
        rotation(members.iter().copied())
    }

    #[test]
    fn in_one_window_every_key_of_a_full_ring_prefers_the_same_coordinator() {
        // RF 3 on 3 nodes: every node replicates every key, in one of six placement orders.
        let members = [1, 2, 3];
        let orders = [
            [1, 2, 3],
            [1, 3, 2],
            [2, 1, 3],
            [2, 3, 1],
            [3, 1, 2],
            [3, 2, 1],
        ];
        for slot in 0..6u64 {
            let preferred = members[(slot % 3) as usize];
            for order in orders {
                let mut replicas = order;
                prefer_slot(&mut replicas, &turns(&members), slot);
                assert_eq!(replicas[0], preferred, "slot {slot}, placement {order:?}");
                let mut sorted = replicas;
                sorted.sort_unstable();
                assert_eq!(sorted, [1, 2, 3], "the same replicas, reordered");
            }
        }
    }

    #[test]
    fn a_key_whose_replicas_exclude_the_preferred_node_goes_to_the_next_in_turn() {
        let members = [1, 2, 3, 4, 5];
        // Member 3's window (slot 2): 4 comes next, then 5 (not a replica), 1, 2.
        let mut replicas = [2, 1, 4];
        prefer_slot(&mut replicas, &turns(&members), 2);
        assert_eq!(replicas, [4, 1, 2]);
        // Member 2's window (slot 6 = 1 mod 5).
        let mut replicas = [4, 1, 2];
        prefer_slot(&mut replicas, &turns(&members), 6);
        assert_eq!(replicas, [2, 4, 1]);
        // Over five consecutive windows each replica leads in turn, and no other node does.
        let leaders: Vec<NodeId> = (0..5u64)
            .map(|slot| {
                let mut r = [2, 1, 4];
                prefer_slot(&mut r, &turns(&members), slot);
                r[0]
            })
            .collect();
        assert_eq!(leaders, [1, 2, 4, 4, 1]);
    }

    #[test]
    fn a_replica_unknown_to_the_member_list_goes_last() {
        let mut replicas = [9, 2, 1];
        prefer_slot(&mut replicas, &turns(&[1, 2, 3]), 1);
        assert_eq!(replicas, [2, 1, 9]);
        // Nothing to reorder.
        let mut one = [3];
        prefer_slot(&mut one, &turns(&[1, 2, 3]), 0);
        assert_eq!(one, [3]);
        let mut r = [2, 1];
        prefer_slot(&mut r, &turns(&[]), 0);
        assert_eq!(r, [2, 1]);
    }

    #[test]
    fn candidates_list_every_node_once_replicas_and_the_own_datacenter_first() {
        let members = [1, 2, 3, 4, 5, 6];
        // No datacenter: the replicas in placement order, then the other members.
        let all = candidates(&[5, 2, 3], members.iter().copied(), false, |_| true);
        assert_eq!(all, [5, 2, 3, 1, 4, 6]);
        // Datacenter of the odd nodes: its replicas, its other members, the other replicas,
        // the rest.
        let odd = |id: &NodeId| id % 2 == 1;
        let all = candidates(&[5, 2, 3], members.iter().copied(), true, odd);
        assert_eq!(all, [5, 3, 1, 2, 4, 6]);
    }
}
