//! A running node: its identity, ring, clock, local store, connection pool and failure detector,
//! the request handler that routes each request to the coordinator or replica code, and start-up
//! and graceful shutdown.

use crate::config::NodeConfig;
use crate::failure_detector::FailureDetector;
use crate::local_store::LocalStore;
use crate::membership::Membership;
use futures::future::BoxFuture;
use proto::membership::EndpointState;
use proto::message::{MemberInfo, NodeStatus, RepairReport, Topology};
use proto::tls::TlsMaterial;
use proto::transport::{serve, server_endpoint, Caller, Pool, ServerLimits, Service};
use proto::version::hlc_from_millis;
use proto::{ErrorCode, ErrorReply, HybridClock, Request, Response};
use ring::NodeId;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::Engine;
use tokio::sync::watch;
use tracing::{info, warn};

/// Metadata key under which nodes before the reservation file kept the clock's reservation
/// (as a synced RocksDB write, which held up the record writes behind it). Still read at start,
/// so a node upgraded in place starts above it; no longer written.
const LEGACY_CLOCK_META_KEY: &str = "hlc-high-water";
/// The clock persists a reservation this far ahead of what it has issued, renewed every
/// [`CLOCK_RENEW_MS`], so a restarted node starts above everything it ever issued. It must stay
/// well under peers' `max-clock-ahead-ms` (5 s by default): a node restarted at once issues
/// timestamps up to this far ahead of real time, and peers refuse those beyond their limit.
const CLOCK_RESERVE_MS: u64 = 2_000;
/// How often the clock reservation is renewed.
const CLOCK_RENEW_MS: u64 = 500;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Certificates could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] proto::tls::TlsError),
    /// The endpoint could not be created.
    #[error(transparent)]
    Transport(#[from] proto::transport::TransportError),
    /// Storage failed at start-up.
    #[error("storage: {0}")]
    Storage(String),
    /// Threads could not be started.
    #[error("cannot start threads: {0}")]
    Io(#[from] std::io::Error),
}

/// Counters of the node's self-healing work.
#[derive(Default)]
pub struct Stats {
    /// Stale replicas sent the newest version by read repair.
    pub read_repairs: AtomicU64,
    /// Spare replicas asked because a read (or a LINEARIZABLE write's version query) was still
    /// short of its level after [`crate::coordinator::SPECULATE_AFTER`].
    pub speculative_reads: AtomicU64,
}

/// Anti-entropy counters.
#[derive(Default)]
pub struct AntiEntropyStats {
    /// Keys pulled or pushed by anti-entropy since start.
    pub keys_repaired: AtomicU64,
    /// When the last round ended, and what it did.
    pub last: std::sync::Mutex<Option<(Instant, RepairReport)>>,
}

/// Everything a node shares between its tasks.
pub struct Node {
    /// This node's id.
    pub id: NodeId,
    /// This node's datacenter.
    pub datacenter: String,
    /// The configuration it runs with.
    pub cfg: NodeConfig,
    /// The ring state, endpoints and this node's view of them (replica placement, addresses).
    pub members: Membership,
    /// Issues versions.
    pub clock: HybridClock,
    /// Local storage.
    pub store: LocalStore,
    /// Connections to peers.
    pub pool: Pool,
    /// Who is up.
    pub detector: FailureDetector,
    /// Client requests coordinated.
    pub coordinated: AtomicU64,
    /// When this process started (ms since the epoch): its generation, sent in heartbeats so
    /// peers notice a restart.
    pub generation: u64,
    /// Counters exposed in status and metrics.
    pub stats: Stats,
    /// Hinted-handoff counters.
    pub hint_stats: crate::hinted_handoff::HintStats,
    /// Merkle trees of the ranges this node replicates, updated by every local write.
    pub trees: Arc<std::sync::Mutex<storage::merkle::TreeSet>>,
    /// Held while an anti-entropy round runs, so rounds never overlap.
    pub ae_running: tokio::sync::Mutex<()>,
    /// Anti-entropy counters.
    pub ae_stats: AntiEntropyStats,
    /// Client write ops this node versioned or stored, with their versions (safe retries).
    pub ops: std::sync::Mutex<crate::op_memory::OpMemory>,
    /// The queues of replica writes to each peer, sent in batches.
    pub replica_batches: crate::replica_batcher::ReplicaBatcher,
    in_flight: AtomicU64,
    started: Instant,
}

impl Node {
    /// The request timeout ceiling from the configuration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.timeouts.request_ms)
    }

    async fn handle(self: Arc<Self>, req: Request, deadline: Instant) -> Response {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let _guard = InFlight(&self.in_flight);
        // A repair round may take long; everything else is bounded by the request timeout.
        let deadline = if matches!(req, Request::Repair { .. }) {
            deadline
        } else {
            deadline.min(Instant::now() + self.request_timeout())
        };
        match req {
            Request::Put {
                key,
                value,
                consistency,
                opts,
            } => {
                self.coordinated.fetch_add(1, Ordering::Relaxed);
                self.coordinate_write(key, Some(value), consistency, opts, deadline)
                    .await
            }
            Request::Delete {
                key,
                consistency,
                opts,
            } => {
                self.coordinated.fetch_add(1, Ordering::Relaxed);
                self.coordinate_write(key, None, consistency, opts, deadline)
                    .await
            }
            Request::Get {
                key,
                consistency,
                opts,
            } => {
                self.coordinated.fetch_add(1, Ordering::Relaxed);
                self.coordinate_read(key, consistency, opts, deadline).await
            }
            Request::Topology => {
                let view = self.view();
                let st = self.members.state();
                let members: Vec<MemberInfo> = view
                    .read_members
                    .iter()
                    .map(|m| MemberInfo {
                        member: m.member.clone(),
                        addr: view
                            .addrs
                            .get(&m.member.id)
                            .map_or_else(|| m.addr.clone(), |a| a.to_string()),
                    })
                    .collect();
                if members.is_empty() {
                    return Response::Error(ErrorReply::new(
                        ErrorCode::Unavailable,
                        "this node has not learned a cluster ring yet",
                    ));
                }
                let live = members
                    .iter()
                    .map(|m| m.member.id)
                    .filter(|id| self.detector.is_up(*id))
                    .collect();
                Response::Topology(Box::new(Topology {
                    cluster: st.cluster,
                    members,
                    strategy: st.strategy,
                    live,
                    epoch: st.epoch,
                }))
            }
            Request::Status => Response::Status(Box::new(self.status())),
            Request::Ping {
                from,
                hlc,
                generation,
                ring: _,
            } => {
                if let Err(e) = self.clock.observe(hlc) {
                    warn!(peer = from, error = %e, "heartbeat clock refused");
                }
                self.detector.record_ok(from);
                if let Some(&addr) = self.view().addrs.get(&from) {
                    // The peer is alive: connect to it at once, not after a back-off.
                    self.pool.forgive(addr);
                    if self.detector.new_generation(from, generation) {
                        // It restarted: our connection to it is to the old process; start afresh.
                        info!(peer = from, "peer restarted; reconnecting");
                        self.pool.reset(addr).await;
                    }
                }
                Response::Pong {
                    from: self.id,
                    hlc: self.clock.peek(),
                    ring: self.members.ring_id(),
                }
            }
            Request::Gossip(g) => self.serve_gossip(*g),
            Request::StreamRange {
                range,
                after,
                limit,
            } => self.serve_stream_range(range, after, limit).await,
            Request::Membership(op) => self.membership_op(op).await,
            Request::ReplicaWrite { key, record, op } => {
                if let Err(e) = self.clock.observe(record.version.hlc) {
                    return Response::Error(ErrorReply::new(ErrorCode::ClockSkew, e.to_string()));
                }
                match self.apply_local(key, record, op).await {
                    Ok((applied, duplicate)) => Response::ReplicaAck { applied, duplicate },
                    Err(e) => Response::Error(ErrorReply::new(ErrorCode::Internal, e)),
                }
            }
            Request::ReplicaVersion { key } => match self.store.get(key).await {
                Ok(record) => Response::ReplicaVersion {
                    version: record.map(|r| r.version),
                },
                Err(e) => Response::Error(ErrorReply::new(ErrorCode::Internal, e.to_string())),
            },
            Request::OpLookup { op, fingerprint } => {
                match self.ops.lock().unwrap_or_else(|p| p.into_inner()).get(op) {
                    Some((version, f)) if f == fingerprint => Response::OpVersion {
                        version: Some(version),
                        conflict: false,
                    },
                    Some(_) => Response::OpVersion {
                        version: None,
                        conflict: true,
                    },
                    None => Response::OpVersion {
                        version: None,
                        conflict: false,
                    },
                }
            }
            Request::ReplicaRead { key } | Request::Inspect { key } => self.replica_read(key).await,
            Request::ReplicaWriteBatch { writes } => self.replica_write_batch(writes).await,
            Request::ReplicaWrites { writes } => self.replica_writes(writes).await,
            Request::TreeHashes {
                range,
                level,
                nodes,
            } => self.serve_tree_hashes(range, level, &nodes),
            Request::SyncLeaves { range, leaves } => self.serve_sync_leaves(range, leaves).await,
            Request::Repair { wait: true } => {
                self.await_first_contact().await;
                Response::RepairReport(self.anti_entropy_round(|_| true).await)
            }
            Request::Repair { wait: false } => {
                let node = self.clone();
                tokio::spawn(async move {
                    node.await_first_contact().await;
                    node.anti_entropy_round(|_| true).await
                });
                Response::RepairReport(RepairReport::default())
            }
        }
    }

    /// Stores one record here if it is newer (last-write-wins, as every write), and remembers
    /// the write op `op` with the record's version once the record is stored, so a retry of the
    /// op can find its first version (`OpLookup`). Returns (stored, the other version this node
    /// already remembered the same op with, if any).
    ///
    /// A record of a known op under another version is still applied by version, never refused:
    /// a replica that refused it would still count as an acknowledgement and could leave the
    /// newer version on a minority. Coordinators avoid stamping a second version instead.
    pub(crate) async fn apply_local(
        &self,
        key: Vec<u8>,
        record: proto::Record,
        op: Option<proto::message::OpId>,
    ) -> Result<(bool, Option<proto::Version>), String> {
        let remember = op.map(|op| {
            let fingerprint = proto::message::op_fingerprint(&key, record.value.as_deref());
            (op, record.version, fingerprint)
        });
        let stored = self
            .store
            .apply(key, record)
            .await
            .map(|a| a.stored())
            .map_err(|e| e.to_string())?;
        let earlier = remember
            .and_then(|(op, version, fingerprint)| self.remember_op(op, version, fingerprint));
        Ok((stored, earlier))
    }

    /// Remembers the client write `op` as stored with `version`; returns the other version it
    /// was already remembered with for the same write, if any.
    fn remember_op(
        &self,
        op: proto::message::OpId,
        version: proto::Version,
        fingerprint: u64,
    ) -> Option<proto::Version> {
        let (first, first_fingerprint) =
            self.ops
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(op, version, fingerprint);
        (first != version && first_fingerprint == fingerprint).then_some(first)
    }

    async fn replica_write_batch(&self, writes: Vec<proto::message::KeyRecord>) -> Response {
        if let Some(max) = writes.iter().map(|w| w.record.version.hlc).max() {
            if let Err(e) = self.clock.observe(max) {
                return Response::Error(ErrorReply::new(ErrorCode::ClockSkew, e.to_string()));
            }
        }
        let writes = writes
            .into_iter()
            .map(|w| storage::Write {
                key: w.key,
                record: w.record,
            })
            .collect();
        match self.store.apply_many(writes).await {
            Ok(applied) => Response::ReplicaAcks {
                applied: applied.iter().map(|a| a.stored()).collect(),
            },
            Err(e) => Response::Error(ErrorReply::new(ErrorCode::Internal, e.to_string())),
        }
    }

    /// A coordinator's batch of client writes, each handled as a [`Request::ReplicaWrite`]: one
    /// stamped too far ahead is refused alone; the others are applied in one batch of the writer
    /// thread, and their ops remembered (under the fingerprint the coordinator computed).
    async fn replica_writes(&self, items: Vec<proto::message::ReplicaWriteItem>) -> Response {
        use proto::message::ReplicaWriteOutcome;
        let mut outcomes: Vec<Option<ReplicaWriteOutcome>> = Vec::with_capacity(items.len());
        let mut writes = Vec::with_capacity(items.len());
        let mut ops = Vec::with_capacity(items.len());
        for item in items {
            match self.clock.observe(item.record.version.hlc) {
                Ok(_) => {
                    outcomes.push(None);
                    ops.push(
                        item.op
                            .map(|op| (op, item.record.version, item.fingerprint)),
                    );
                    writes.push(storage::Write {
                        key: item.key,
                        record: item.record,
                    });
                }
                Err(e) => {
                    let err = ErrorReply::new(ErrorCode::ClockSkew, e.to_string());
                    outcomes.push(Some(ReplicaWriteOutcome::Failed(err)));
                }
            }
        }
        let mut results = match self.store.apply_many(writes).await {
            Ok(applied) => applied
                .into_iter()
                .zip(ops)
                .map(|(applied, op)| ReplicaWriteOutcome::Acked {
                    applied: applied.stored(),
                    duplicate: op.and_then(|(op, v, f)| self.remember_op(op, v, f)),
                })
                .collect::<Vec<_>>()
                .into_iter(),
            Err(e) => {
                let err = ErrorReply::new(ErrorCode::Internal, e.to_string());
                vec![ReplicaWriteOutcome::Failed(err); ops.len()].into_iter()
            }
        };
        let outcomes = outcomes
            .into_iter()
            .map(|o| o.or_else(|| results.next()))
            .collect::<Option<Vec<_>>>();
        match outcomes {
            Some(outcomes) => Response::ReplicaWriteAcks { outcomes },
            None => Response::Error(ErrorReply::new(
                ErrorCode::Internal,
                "storage answered fewer writes than it was given",
            )),
        }
    }

    async fn replica_read(&self, key: Vec<u8>) -> Response {
        match self.store.get(key).await {
            Ok(record) => Response::ReplicaRecord { record },
            Err(e) => Response::Error(ErrorReply::new(ErrorCode::Internal, e.to_string())),
        }
    }

    /// This node's status report.
    pub fn status(&self) -> NodeStatus {
        let last = self
            .ae_stats
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        NodeStatus {
            id: self.id,
            datacenter: self.datacenter.clone(),
            uptime_s: self.started.elapsed().as_secs(),
            peers: self.detector.snapshot(),
            coordinated: self.coordinated.load(Ordering::Relaxed),
            records: self.store.engine().approximate_len(),
            hints_pending: self.hints_pending(),
            hints_replayed: self.hint_stats.replayed.load(Ordering::Relaxed),
            hints_dropped: self.hint_stats.dropped.load(Ordering::Relaxed),
            read_repairs: self.stats.read_repairs.load(Ordering::Relaxed),
            last_repair: last.map(|(at, r)| (at.elapsed().as_secs(), r)),
            keys_repaired: self.ae_stats.keys_repaired.load(Ordering::Relaxed),
            ring_epoch: self.members.ring_id().0,
            member: self.members.state().member(self.id).is_some(),
            streaming: self
                .members
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// `periodic` durability: fsyncs the write-ahead log every `periodic-ms`, off the runtime.
    async fn periodic_fsync(self: Arc<Self>) {
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.cfg.durability.periodic_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let engine = self.store.engine().clone();
            if matches!(
                tokio::task::spawn_blocking(move || engine.flush()).await,
                Ok(Ok(()))
            ) {
                self.store.stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
            } else {
                warn!("periodic fsync of the write-ahead log failed");
            }
        }
    }

    /// Persists a clock reservation ahead of anything issued so far.
    fn reserve_clock(&self) -> Result<(), storage::StorageError> {
        let reserve = hlc_from_millis(
            (self.clock.peek() >> proto::version::HLC_LOGICAL_BITS)
                .max(proto::version::wall_millis())
                + CLOCK_RESERVE_MS,
        );
        self.store.engine().put_clock_reservation(reserve)
    }
}

/// Decrements the in-flight count when a request ends, however it ends.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct NodeService(Arc<Node>);

impl Service for NodeService {
    fn handle(
        &self,
        caller: Caller,
        request: Request,
        deadline: Instant,
    ) -> BoxFuture<'static, Response> {
        // The transport already refused replica requests from non-node certificates.
        match request {
            // An administrator's change goes to the admin node; one a node forwarded is served
            // where it arrives (so a forward never travels twice).
            Request::Membership(op) if caller.role != proto::tls::Role::Node => {
                let node = self.0.clone();
                Box::pin(async move { node.membership_from_client(op, deadline).await })
            }
            request => Box::pin(self.0.clone().handle(request, deadline)),
        }
    }
}

/// A started node.
pub struct RunningNode {
    /// Shared state.
    pub node: Arc<Node>,
    /// The bound address.
    pub addr: SocketAddr,
    endpoint: quinn::Endpoint,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    writer: std::thread::JoinHandle<()>,
}

/// The persisted clock reservation: the larger of the engine's
/// ([`Engine::put_clock_reservation`]) and the legacy metadata key's.
fn load_clock_floor(engine: &dyn Engine) -> Result<u64, StartError> {
    let storage = |e: storage::StorageError| StartError::Storage(e.to_string());
    let legacy = engine
        .get_meta(LEGACY_CLOCK_META_KEY)
        .map_err(storage)?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    Ok(engine.clock_reservation().map_err(storage)?.max(legacy))
}

/// How long a node with the persisted clock floor `floor` must wait, at wall-clock time `wall_ms`,
/// before it starts: until the floor is at most [`CLOCK_RESERVE_MS`] ahead of the wall clock.
/// The clock starts at the floor, so without the wait every restart within a reservation of
/// the previous start moved the clock another [`CLOCK_RESERVE_MS`] ahead of real time: a node
/// restarted seven times in a row issued timestamps 7.3 s ahead, and its peers refused them
/// (`max-clock-ahead-ms`, 5 s). With it, a node starts at most one reservation ahead, so the
/// floor it persists at start is at most two ahead and the wait is at most one reservation.
/// `None` when the floor is further ahead than that (the machine's clock was set back): waiting
/// for it could take arbitrarily long, so the node starts at once, as before.
fn clock_floor_wait(floor: u64, wall_ms: u64) -> Option<Duration> {
    let floor_ms = floor >> proto::version::HLC_LOGICAL_BITS;
    let wait = floor_ms.saturating_sub(wall_ms + CLOCK_RESERVE_MS);
    (wait <= CLOCK_RESERVE_MS).then_some(Duration::from_millis(wait))
}

/// Waits as [`clock_floor_wait`] says, logging why.
async fn wait_for_clock_floor(floor: u64, wall_ms: u64) {
    match clock_floor_wait(floor, wall_ms) {
        Some(wait) if wait.is_zero() => {}
        Some(wait) => {
            info!(
                wait_ms = wait.as_millis() as u64,
                "restarted within a clock reservation: waiting for the wall clock"
            );
            tokio::time::sleep(wait).await;
        }
        None => warn!(
            floor_ms = floor >> proto::version::HLC_LOGICAL_BITS,
            wall_ms,
            "the persisted clock is far ahead of this machine's clock (was the clock set back?); \
             versions issued now are ahead of real time"
        ),
    }
}

/// Starts a node on `engine` with `cfg`: binds the endpoint, starts the writer thread, the
/// heartbeats and the server loop.
pub async fn start(cfg: NodeConfig, engine: Arc<dyn Engine>) -> Result<RunningNode, StartError> {
    cfg.validate()?;
    let tls = TlsMaterial::load(&cfg.tls.ca, &cfg.tls.cert, &cfg.tls.key)?;
    let listen = cfg
        .listen_addr()
        .ok_or_else(|| crate::config::ConfigError::Invalid("no listen address".into()))?;
    let floor = load_clock_floor(engine.as_ref())?;
    // Before the endpoint is bound: peers see a node that is not up yet, not one that does
    // not answer.
    wait_for_clock_floor(floor, proto::version::wall_millis()).await;
    let endpoint = server_endpoint(listen, &tls)?;
    let addr = endpoint.local_addr()?;
    let me = cfg
        .me()
        .cloned()
        .ok_or_else(|| crate::config::ConfigError::Invalid("node not in members".into()))?;
    let persisted = engine
        .get_meta(Membership::META_KEY)
        .map_err(|e| StartError::Storage(e.to_string()))?
        .and_then(|b| Membership::decode(&b));
    let founding_members: Vec<MemberInfo> = if cfg.seeds.is_empty() {
        cfg.members
            .iter()
            .map(|m| MemberInfo {
                member: m.member(),
                addr: m.address.to_string(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let generation = proto::version::wall_millis();
    let endpoint_state = EndpointState {
        id: cfg.node_id,
        addr: me.address.to_string(),
        member: me.member(),
        generation,
        version: 0,
        ring_epoch: 0,
    };
    let members = Membership::new(
        persisted,
        Membership::founding(
            &cfg.cluster_name,
            cfg.replication.strategy(),
            founding_members,
        ),
        cfg.seeds.clone(),
        endpoint_state,
    );
    // Trees are rebuilt from storage at start-up: one scan of the ranges this node replicates.
    let ranges: Vec<ring::TokenRange> = members
        .view()
        .read
        .as_ref()
        .map(|r| {
            r.ranges_of(cfg.node_id)
                .into_iter()
                .map(|(r, _)| r)
                .collect()
        })
        .unwrap_or_default();
    members.set_tree_ranges(ranges.clone());
    let e2 = engine.clone();
    let trees = tokio::task::spawn_blocking(move || {
        storage::merkle::TreeSet::rebuild(e2.as_ref(), ranges, 4096)
    })
    .await
    .map_err(|e| StartError::Storage(e.to_string()))?
    .map_err(|e| StartError::Storage(e.to_string()))?;
    let trees = Arc::new(std::sync::Mutex::new(trees));
    let synced = cfg.durability.mode == crate::config::DurabilityMode::Sync;
    let (store, writer) = LocalStore::start(engine, cfg.limits.write_queue, trees.clone(), synced)?;
    let known = members.state().all_ids();
    let node = Arc::new(Node {
        id: cfg.node_id,
        datacenter: me.datacenter.clone(),
        members,
        clock: HybridClock::new(floor, cfg.timeouts.max_clock_ahead_ms),
        store,
        pool: Pool::new(
            endpoint.clone(),
            Duration::from_millis(cfg.timeouts.connect_ms),
        ),
        detector: FailureDetector::new(
            cfg.node_id,
            known,
            crate::failure_detector::PhiConfig {
                threshold: cfg.timeouts.phi_threshold,
                heartbeat: Duration::from_millis(cfg.timeouts.heartbeat_ms),
                min_std_dev: Duration::from_millis((cfg.timeouts.heartbeat_ms / 4).max(1)),
                acceptable_pause: Duration::from_millis(cfg.timeouts.acceptable_pause_ms),
                down_after: Duration::from_millis(cfg.timeouts.down_after_ms),
            },
        ),
        coordinated: AtomicU64::new(0),
        generation,
        stats: Stats::default(),
        hint_stats: Default::default(),
        trees,
        ae_running: tokio::sync::Mutex::new(()),
        ae_stats: AntiEntropyStats::default(),
        replica_batches: Default::default(),
        ops: std::sync::Mutex::new(crate::op_memory::OpMemory::new(
            crate::op_memory::DEFAULT_OPS_PER_GENERATION,
        )),
        in_flight: AtomicU64::new(0),
        started: Instant::now(),
        cfg,
    });
    node.reserve_clock()
        .map_err(|e| StartError::Storage(e.to_string()))?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let limits = ServerLimits {
        max_client_requests: node.cfg.limits.max_client_requests,
        max_internal_requests: node.cfg.limits.max_internal_requests,
    };
    let mut tasks = vec![tokio::spawn(serve(
        endpoint.clone(),
        Arc::new(NodeService(node.clone())),
        limits,
        shutdown_rx,
    ))];
    for peer in node.detector.peers() {
        node.ensure_hint_task(peer);
    }
    tasks.push(tokio::spawn(node.clone().heartbeat_loop()));
    tasks.push(tokio::spawn(node.clone().membership_driver()));
    tasks.push(tokio::spawn(node.clone().anti_entropy_loop()));
    if node.cfg.durability.mode == crate::config::DurabilityMode::Periodic {
        tasks.push(tokio::spawn(node.clone().periodic_fsync()));
    }
    if let Some(metrics) = node.cfg.metrics_listen {
        tasks.push(tokio::spawn(crate::metrics::serve(node.clone(), metrics)));
    }
    let n = node.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(CLOCK_RENEW_MS));
        loop {
            tick.tick().await;
            let n2 = n.clone();
            let res = tokio::task::spawn_blocking(move || n2.reserve_clock()).await;
            if !matches!(res, Ok(Ok(()))) {
                warn!("could not persist the clock reservation");
            }
        }
    }));
    info!(node = node.id, %addr, "node started");
    Ok(RunningNode {
        node,
        addr,
        endpoint,
        shutdown,
        tasks,
        writer,
    })
}

impl RunningNode {
    /// Stops accepting requests, lets those in flight finish (up to the configured grace), stops
    /// the writer thread (which flushes storage) and persists the clock.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let grace = Duration::from_millis(self.node.cfg.timeouts.shutdown_grace_ms);
        let drained = tokio::time::timeout(grace, async {
            while self.node.in_flight.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if drained.is_err() {
            warn!("shutdown grace expired with requests in flight");
        }
        self.endpoint
            .close(0u32.into(), proto::transport::SHUTDOWN_REASON);
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        self.node.members.abort_background();
        if let Err(e) = self.node.reserve_clock() {
            warn!(error = %e, "could not persist the clock at shutdown");
        }
        // Connection tasks end once the endpoint is closed; wait for them so the socket is
        // released and the last handle to the store goes away.
        // Peers drop their connections within a few round trips; do not hold shutdown for
        // stragglers.
        let _ = tokio::time::timeout(Duration::from_millis(500), self.endpoint.wait_idle()).await;
        let node = self.node;
        let released = tokio::time::timeout(grace, async {
            while Arc::strong_count(&node) > 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        if released.is_err() {
            warn!("requests still hold the node after the grace period");
        }
        // Dropping the last handle to the store closes the writer's queue; it then flushes and
        // exits.
        drop(node);
        drop(self.endpoint);
        let writer = self.writer;
        let joined =
            tokio::time::timeout(grace, tokio::task::spawn_blocking(move || writer.join())).await;
        if joined.is_err() {
            warn!("storage writer did not stop in time");
        }
        info!("node stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_floor_is_the_larger_of_the_reservation_and_the_legacy_key() {
        let engine = storage::MemEngine::new();
        assert_eq!(load_clock_floor(&engine).unwrap(), 0);
        // A node upgraded in place: only the legacy key holds its reservation.
        engine
            .put_meta(LEGACY_CLOCK_META_KEY, &5_000u64.to_be_bytes())
            .unwrap();
        assert_eq!(load_clock_floor(&engine).unwrap(), 5_000);
        engine.put_clock_reservation(4_000).unwrap();
        assert_eq!(load_clock_floor(&engine).unwrap(), 5_000);
        engine.put_clock_reservation(6_000).unwrap();
        assert_eq!(load_clock_floor(&engine).unwrap(), 6_000);
    }

    #[test]
    fn a_node_waits_only_for_a_floor_more_than_one_reservation_ahead() {
        let wall = 1_800_000_000_000;
        let floor = |ahead_ms: u64| hlc_from_millis(wall + ahead_ms);
        // A floor in the past, or within one reservation: no wait.
        assert_eq!(clock_floor_wait(0, wall), Some(Duration::ZERO));
        assert_eq!(clock_floor_wait(floor(0), wall), Some(Duration::ZERO));
        assert_eq!(
            clock_floor_wait(floor(CLOCK_RESERVE_MS), wall),
            Some(Duration::ZERO)
        );
        // Up to two reservations ahead (a restart right after a restart): wait down to one.
        assert_eq!(
            clock_floor_wait(floor(CLOCK_RESERVE_MS + 700), wall),
            Some(Duration::from_millis(700))
        );
        assert_eq!(
            clock_floor_wait(floor(2 * CLOCK_RESERVE_MS), wall),
            Some(Duration::from_millis(CLOCK_RESERVE_MS))
        );
        // Further ahead only if the machine's clock went back: start at once.
        assert_eq!(
            clock_floor_wait(floor(2 * CLOCK_RESERVE_MS + 1), wall),
            None
        );
    }
}
