//! The client library: connects to a cluster through any seed node, learns its topology, and
//! sends each request straight to a replica of the key (token-aware routing), which coordinates
//! it at the requested consistency level.

use crate::error::ClientError;
use proto::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use proto::message::{NodeStatus, RepairReport, Topology};
use proto::tls::TlsMaterial;
use proto::transport::{client_endpoint, Pool, TransportError};
use proto::{Consistency, Request, Response, Version};
use ring::{NodeId, Ring};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

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
}

/// A successful write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The version the write was stamped with.
    pub version: Version,
    /// Replicas that acknowledged before the reply.
    pub acks: u32,
    /// The node that coordinated it.
    pub coordinator: NodeId,
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
}

/// A connected client. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Client {
    pool: Pool,
    topology: Topology,
    ring: Ring,
    addrs: HashMap<NodeId, SocketAddr>,
    datacenters: HashMap<NodeId, String>,
    cfg: ClientConfig,
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
        for m in &topology.members {
            if !topology.live.contains(&m.member.id) {
                if let Some(addr) = addrs.get(&m.member.id) {
                    pool.mark_failed(*addr);
                }
            }
        }
        Ok(Client {
            pool,
            topology,
            ring,
            addrs,
            datacenters,
            cfg,
        })
    }

    /// The topology learned at connect time.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Writes `value` under `key`.
    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        consistency: Consistency,
    ) -> Result<WriteOutcome, ClientError> {
        check_key(key)?;
        check_value(value)?;
        let req = Request::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            consistency,
        };
        self.write(key, req).await
    }

    /// Deletes `key` (writes a tombstone).
    pub async fn delete(
        &self,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<WriteOutcome, ClientError> {
        check_key(key)?;
        self.write(
            key,
            Request::Delete {
                key: key.to_vec(),
                consistency,
            },
        )
        .await
    }

    async fn write(&self, key: &[u8], req: Request) -> Result<WriteOutcome, ClientError> {
        let (coordinator, resp) = self.send(key, req).await?;
        match resp {
            Response::Written { version, acks } => Ok(WriteOutcome {
                version,
                acks,
                coordinator,
            }),
            Response::Error(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    /// Reads `key`. A missing or deleted key is [`ClientError::NotFound`].
    pub async fn get(
        &self,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<ReadOutcome, ClientError> {
        check_key(key)?;
        let (coordinator, resp) = self
            .send(
                key,
                Request::Get {
                    key: key.to_vec(),
                    consistency,
                },
            )
            .await?;
        match resp {
            Response::Value {
                value: Some(value),
                version: Some(version),
                ..
            } => Ok(ReadOutcome {
                value,
                version,
                coordinator,
            }),
            Response::Value { .. } => Err(ClientError::NotFound),
            Response::Error(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
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
        let addr = *self
            .addrs
            .get(&node)
            .ok_or_else(|| ClientError::Config(format!("no node {node}")))?;
        let req = Request::Get {
            key: key.to_vec(),
            consistency,
        };
        match self.call(addr, req, self.cfg.timeout).await {
            Ok(Response::Value {
                value: Some(value),
                version: Some(version),
                ..
            }) => Ok(ReadOutcome {
                value,
                version,
                coordinator: node,
            }),
            Ok(Response::Value { .. }) => Err(ClientError::NotFound),
            Ok(other) => Err(unexpected(other)),
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
    /// other replicas, then every other node.
    fn coordinators(&self, key: &[u8]) -> Vec<NodeId> {
        let replicas = self.ring.replicas_for_key(key);
        let local = |id: &NodeId| match &self.cfg.datacenter {
            Some(dc) => self.datacenters.get(id) == Some(dc),
            None => true,
        };
        let members = self.ring.members().iter().map(|m| m.id);
        let mut candidates: Vec<NodeId> = replicas.iter().copied().filter(local).collect();
        if self.cfg.datacenter.is_some() {
            // Never leave the client's datacenter for LOCAL_* semantics' sake, except as a last resort.
            candidates.extend(members.clone().filter(local));
        }
        candidates.extend(replicas.iter().copied());
        candidates.extend(members);
        // Keep each node's first (best) position.
        let mut order: Vec<NodeId> = Vec::with_capacity(candidates.len());
        for id in candidates {
            if !order.contains(&id) {
                order.push(id);
            }
        }
        // Nodes that recently failed to connect (or were reported down) go last, in order.
        order.sort_by_key(|id| {
            self.addrs
                .get(id)
                .is_some_and(|a| self.pool.is_backing_off(*a))
        });
        order
    }

    /// Sends a request to the first coordinator that can be reached. Moves on to the next only
    /// when the request was certainly not delivered (the connection could not be made).
    async fn send(&self, key: &[u8], req: Request) -> Result<(NodeId, Response), ClientError> {
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        let mut last = ClientError::Connect("no nodes in topology".into());
        for node in self
            .coordinators(key)
            .into_iter()
            .take(MAX_COORDINATOR_TRIES)
        {
            let Some(&addr) = self.addrs.get(&node) else {
                continue;
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let channel = match self.pool.channel(addr).await {
                Ok(ch) => ch,
                Err(e) => {
                    last = transport_error(e);
                    continue;
                }
            };
            let res = if is_read_only(&req) {
                drop(channel);
                self.call(addr, req, left).await
            } else {
                let res = channel.call(req, left).await;
                self.reset_on_timeout(addr, res).await
            };
            return match res {
                Ok(resp) => Ok((node, resp)),
                Err(e) => Err(transport_error(e)),
            };
        }
        Err(last)
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
        },
        TransportError::Closed(addr) => ClientError::Timeout {
            message: format!("connection to coordinator {addr} closed before the reply; a write may or may not have been applied"),
            acks: 0,
            required: 0,
        },
        TransportError::Connect { addr, reason } if reason.contains("certificate") || reason.contains("crypto") => {
            ClientError::Unauthorized(format!("{addr}: {reason}"))
        }
        TransportError::Connect { addr, reason } => ClientError::Connect(format!("{addr}: {reason}")),
        TransportError::Codec(e) => ClientError::InvalidRequest(e.to_string()),
        TransportError::Bind { .. } | TransportError::Tls(_) => ClientError::Config(e.to_string()),
    }
}
