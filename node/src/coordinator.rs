//! Request coordination: any node takes a client's put, delete or get, finds the key's replicas
//! on the ring, checks the consistency level can be met by replicas known up (else
//! `Unavailable`, nothing sent), sends to them in parallel and answers as soon as the level is
//! met (else `Timeout`, saying how many answered). Each replica request runs in its own task, so a
//! slow replica still receives the write after the client has its answer.

use crate::levels::{LevelError, Requirement};
use crate::node::Node;
use proto::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use proto::{Consistency, ErrorCode, ErrorReply, Record, Request, Response, Version};
use ring::NodeId;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(ErrorReply::new(code, message))
}

fn counted(code: ErrorCode, message: String, acks: usize, required: usize) -> Response {
    Response::Error(ErrorReply {
        code,
        message,
        acks: acks as u32,
        required: required as u32,
    })
}

fn check_sizes(key: &[u8], value: Option<&[u8]>) -> Result<(), Response> {
    if key.is_empty() {
        return Err(error(ErrorCode::InvalidRequest, "empty key"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(error(
            ErrorCode::InvalidRequest,
            format!(
                "key of {} bytes exceeds the {MAX_KEY_BYTES}-byte limit",
                key.len()
            ),
        ));
    }
    if let Some(v) = value {
        if v.len() > MAX_VALUE_BYTES {
            return Err(error(
                ErrorCode::InvalidRequest,
                format!(
                    "value of {} bytes exceeds the {MAX_VALUE_BYTES}-byte limit",
                    v.len()
                ),
            ));
        }
    }
    Ok(())
}

/// What one replica said.
type ReplicaResult<T> = (NodeId, Result<T, String>);

/// How one replica write ended.
enum WriteAck {
    /// The replica stored it (or already had something newer).
    Acked,
    /// The replica failed; a hint for it is stored here.
    Hinted(String),
    /// The replica failed and no hint could be stored.
    Failed(String),
}

impl Node {
    /// The key's replicas, the level's requirement, and the replicas known up — or the error
    /// reply when the level cannot be met.
    fn plan(
        &self,
        key: &[u8],
        level: Consistency,
        for_read: bool,
    ) -> Result<(Requirement, Vec<NodeId>), Response> {
        let replicas = self.ring.replicas_for_key(key);
        let req = Requirement::new(
            level,
            replicas,
            |n| self.dc_of(n),
            &self.datacenter,
            for_read,
        )
        .map_err(|e| match e {
            LevelError::AnyForRead => error(ErrorCode::InvalidRequest, e.to_string()),
            LevelError::TooFewReplicas { .. } => error(ErrorCode::Unavailable, e.to_string()),
        })?;
        let alive: Vec<NodeId> = replicas
            .iter()
            .copied()
            .filter(|r| self.detector.is_up(*r))
            .collect();
        // ANY is met by a hint on this node when hints are on, whatever is up.
        let hint_suffices = level == Consistency::Any && self.cfg.hints.enabled;
        if let (false, Some((up, needed))) = (hint_suffices, req.shortfall(&alive)) {
            return Err(counted(
                ErrorCode::Unavailable,
                format!("{level} needs {needed} replicas of this key but only {up} are up; nothing was written"),
                up,
                needed,
            ));
        }
        Ok((req, alive))
    }

    /// Coordinates a put (`value` is `Some`) or a delete (`None`).
    pub async fn coordinate_write(
        self: &Arc<Self>,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        level: Consistency,
        deadline: Instant,
    ) -> Response {
        if let Err(resp) = check_sizes(&key, value.as_deref()) {
            return resp;
        }
        let (req, alive) = match self.plan(&key, level, false) {
            Ok(p) => p,
            Err(resp) => return resp,
        };
        let version = Version {
            hlc: self.clock.now(),
            node: self.id,
        };
        let record = Record { version, value };
        let key = Arc::new(key);
        // Replicas known down get a hint now; the others are sent the write, and get a hint if
        // they fail or do not answer in time.
        // Hints for replicas known down are written off the request path, in one task; only ANY
        // with no live replica waits for them, since a hint is then the write's only copy.
        let down: Vec<NodeId> = self
            .ring
            .replicas_for_key(&key)
            .iter()
            .copied()
            .filter(|r| !alive.contains(r))
            .collect();
        let hinting = (!down.is_empty()).then(|| {
            let (node, key, record) = (self.clone(), key.clone(), record.clone());
            tokio::spawn(async move {
                let mut hinted = 0usize;
                for replica in down {
                    if node.store_hint(replica, key.to_vec(), record.clone()).await {
                        hinted += 1;
                    }
                }
                hinted
            })
        });
        let (tx, mut rx) = mpsc::channel::<(NodeId, WriteAck)>(alive.len().max(1));
        for &replica in &alive {
            let (node, key, record, tx) = (self.clone(), key.clone(), record.clone(), tx.clone());
            tokio::spawn(async move {
                let res = node
                    .write_to(replica, key.to_vec(), record.clone(), deadline)
                    .await;
                let res = match res {
                    Ok(_) => WriteAck::Acked,
                    Err(e) if node.store_hint(replica, key.to_vec(), record).await => {
                        WriteAck::Hinted(e)
                    }
                    Err(e) => WriteAck::Failed(e),
                };
                let _ = tx.send((replica, res)).await;
            });
        }
        drop(tx);
        if level == Consistency::Any && alive.is_empty() {
            let hinted = match hinting {
                Some(task) => task.await.unwrap_or(0),
                None => 0,
            };
            if hinted > 0 {
                return Response::Written { version, acks: 0 };
            }
        }
        let mut acked = Vec::with_capacity(alive.len());
        let mut failures = Vec::new();
        let deadline_tokio = tokio::time::Instant::from_std(deadline);
        while let Ok(Some((replica, res))) =
            tokio::time::timeout_at(deadline_tokio, rx.recv()).await
        {
            match res {
                WriteAck::Acked => {
                    acked.push(replica);
                    // When this node is a live replica, its own copy is also awaited (it is the
                    // fastest, with no network): a read at any level through the same
                    // coordinator, which reads itself first, then sees the write.
                    let local_done = !alive.contains(&self.id) || acked.contains(&self.id);
                    if req.met_by(&acked) && local_done {
                        return Response::Written {
                            version,
                            acks: acked.len() as u32,
                        };
                    }
                }
                // ANY counts a durable hint as the write being stored; no other level does.
                WriteAck::Hinted(_) if level == Consistency::Any => {
                    return Response::Written {
                        version,
                        acks: acked.len() as u32,
                    };
                }
                WriteAck::Hinted(e) => failures.push(format!("node {replica}: {e} (hinted)")),
                WriteAck::Failed(e) => failures.push(format!("node {replica}: {e}")),
            }
        }
        let detail = if failures.is_empty() {
            String::new()
        } else {
            format!(" ({})", failures.join("; "))
        };
        counted(
            ErrorCode::Timeout,
            format!(
                "{level} write: {} of {} required replica acks in time{detail}; the write may or may not be visible",
                acked.len(),
                req.total_needed()
            ),
            acked.len(),
            req.total_needed(),
        )
    }

    /// Sends one record to one replica (this node writes locally).
    pub async fn write_to(
        &self,
        replica: NodeId,
        key: Vec<u8>,
        record: Record,
        deadline: Instant,
    ) -> Result<bool, String> {
        if replica == self.id {
            return self
                .store
                .apply(key, record)
                .await
                .map(|a| a.stored())
                .map_err(|e| e.to_string());
        }
        match self
            .call_peer(replica, Request::ReplicaWrite { key, record }, deadline)
            .await?
        {
            Response::ReplicaAck { applied } => Ok(applied),
            Response::Error(e) => Err(e.to_string()),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    /// Reads one key from one replica (this node reads locally).
    pub async fn read_from(
        &self,
        replica: NodeId,
        key: Vec<u8>,
        deadline: Instant,
    ) -> Result<Option<Record>, String> {
        if replica == self.id {
            return self.store.get(key).await.map_err(|e| e.to_string());
        }
        match self
            .call_peer(replica, Request::ReplicaRead { key }, deadline)
            .await?
        {
            Response::ReplicaRecord { record } => {
                if let Some(r) = &record {
                    // Absorb the version so later writes here order after what was read.
                    let _ = self.clock.observe(r.version.hlc);
                }
                Ok(record)
            }
            Response::Error(e) => Err(e.to_string()),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    pub(crate) async fn call_peer(
        &self,
        peer: NodeId,
        req: Request,
        deadline: Instant,
    ) -> Result<Response, String> {
        let addr = *self
            .addrs
            .get(&peer)
            .ok_or_else(|| format!("unknown node {peer}"))?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("deadline passed".into());
        }
        let resp = self
            .pool
            .call(addr, req, left)
            .await
            .map_err(|e| e.to_string())?;
        self.detector.record_ok(peer);
        Ok(resp)
    }

    /// Replicas to read from, best first: this node, then its datacenter, then the rest, each in
    /// ring order.
    fn read_preference(&self, alive: &[NodeId]) -> Vec<NodeId> {
        let mut order: Vec<NodeId> = alive.iter().copied().filter(|r| *r == self.id).collect();
        order.extend(
            alive
                .iter()
                .copied()
                .filter(|r| *r != self.id && self.dc_of(*r) == self.datacenter),
        );
        order.extend(
            alive
                .iter()
                .copied()
                .filter(|r| self.dc_of(*r) != self.datacenter),
        );
        order
    }

    /// Coordinates a get: asks the fewest replicas that can meet the level, asks a spare replica
    /// for each one that fails, and answers with the newest version among the replies.
    pub async fn coordinate_read(
        self: &Arc<Self>,
        key: Vec<u8>,
        level: Consistency,
        deadline: Instant,
    ) -> Response {
        if let Err(resp) = check_sizes(&key, None) {
            return resp;
        }
        let (req, alive) = match self.plan(&key, level, true) {
            Ok(p) => p,
            Err(resp) => return resp,
        };
        let preference = self.read_preference(&alive);
        let first = req.choose(&preference);
        let mut spares = preference.into_iter().filter(|r| !first.contains(r));
        let (tx, mut rx) = mpsc::channel::<ReplicaResult<Option<Record>>>(alive.len().max(1));
        let key = Arc::new(key);
        let spawn_read = |replica: NodeId| {
            let (node, key, tx) = (self.clone(), key.clone(), tx.clone());
            tokio::spawn(async move {
                let res = node.read_from(replica, key.to_vec(), deadline).await;
                let _ = tx.send((replica, res)).await;
            });
        };
        let mut outstanding = first.len();
        first.iter().for_each(|r| spawn_read(*r));
        let mut answered: Vec<NodeId> = Vec::new();
        let mut seen: Vec<(NodeId, Option<Version>)> = Vec::new();
        let mut newest: Option<Record> = None;
        let mut failures = Vec::new();
        let deadline_tokio = tokio::time::Instant::from_std(deadline);
        while outstanding > 0 {
            let Ok(Some((replica, res))) = tokio::time::timeout_at(deadline_tokio, rx.recv()).await
            else {
                break;
            };
            outstanding -= 1;
            match res {
                Ok(record) => {
                    answered.push(replica);
                    seen.push((replica, record.as_ref().map(|r| r.version)));
                    if record
                        .as_ref()
                        .is_some_and(|r| r.supersedes(newest.as_ref()))
                    {
                        newest = record;
                    }
                    if req.met_by(&answered) {
                        return self.finish_read(&key, level, newest, &seen, deadline).await;
                    }
                }
                Err(e) => {
                    failures.push(format!("node {replica}: {e}"));
                    if let Some(spare) = spares.next() {
                        spawn_read(spare);
                        outstanding += 1;
                    }
                }
            }
        }
        let detail = if failures.is_empty() {
            String::new()
        } else {
            format!(" ({})", failures.join("; "))
        };
        counted(
            ErrorCode::Timeout,
            format!(
                "{level} read: {} of {} required replicas answered in time{detail}",
                answered.len(),
                req.total_needed()
            ),
            answered.len(),
            req.total_needed(),
        )
    }
}

impl Node {
    /// Answers a read whose level is met, after read repair: every replica that answered with an
    /// older version (or none) is sent the newest record. At levels above ONE the repair finishes
    /// before the answer, so once a quorum read returns a value every later quorum read sees it
    /// (monotonic quorum reads); at ONE and LOCAL_ONE it runs in the background.
    async fn finish_read(
        self: &Arc<Self>,
        key: &Arc<Vec<u8>>,
        level: Consistency,
        newest: Option<Record>,
        seen: &[(NodeId, Option<Version>)],
        deadline: Instant,
    ) -> Response {
        let replies = seen.len() as u32;
        let Some(newest) = newest else {
            return Response::Value {
                value: None,
                version: None,
                replies,
            };
        };
        // A tombstone past the grace period is being purged everywhere: spreading it again would
        // undo the purge on replicas that already dropped it.
        let purgeable = newest.is_tombstone() && newest.version.hlc < self.purge_cutoff();
        let stale: Vec<NodeId> = seen
            .iter()
            .filter(|(_, v)| *v != Some(newest.version) && !purgeable)
            .map(|(n, _)| *n)
            .collect();
        if !stale.is_empty() {
            self.stats
                .read_repairs
                .fetch_add(stale.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let repairs: Vec<_> = stale
                .iter()
                .map(|&replica| {
                    let (node, key, record) = (self.clone(), key.clone(), newest.clone());
                    tokio::spawn(async move {
                        node.write_to(replica, key.to_vec(), record, deadline).await
                    })
                })
                .collect();
            if !matches!(level, Consistency::One | Consistency::LocalOne) {
                for (replica, repair) in stale.iter().zip(repairs) {
                    if !matches!(repair.await, Ok(Ok(_))) {
                        return counted(
                            ErrorCode::Timeout,
                            format!("{level} read: read repair of node {replica} did not complete in time"),
                            seen.len(),
                            seen.len(),
                        );
                    }
                }
            }
        }
        match newest {
            Record {
                version,
                value: Some(value),
            } => Response::Value {
                value: Some(value),
                version: Some(version),
                replies,
            },
            Record { .. } => Response::Value {
                value: None,
                version: None,
                replies,
            },
        }
    }
}
