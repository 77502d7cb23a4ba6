//! Request coordination: any node takes a client's put, delete or get, finds the key's replicas
//! on the ring, checks the consistency level can be met by replicas known up (else
//! `Unavailable`, nothing sent), sends to them in parallel and answers as soon as the level is
//! met (else `Timeout`, saying how many answered). Writes to other replicas leave in per-peer
//! batches (`replica_batcher`), so a slow replica still receives the write after the client has
//! its answer; the coordinator's own copy of a write is stored on the request's task and handed
//! to a task of its own only if the request ends first. A read's replica requests (and a
//! LINEARIZABLE write's version queries) run on the request's task too, and those still out
//! when it answers are dropped.

use crate::levels::{LevelError, Requirement};
use crate::node::Node;
use crate::replica_batcher::PeerWrite;
use proto::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use proto::message::{ReadOpts, Receipt, WriteOpts};
use proto::{Consistency, ErrorCode, ErrorReply, Record, Request, Response, Version};
use ring::NodeId;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::debug;

/// A read still short of its level this long after it started also asks one spare replica, as
/// Cassandra's speculative retry does: a replica that is slow, paused or just restarted (and not
/// yet known down) no longer holds the read up until its deadline. Reads answered sooner ask no
/// one more (on a healthy cluster nearly all are: a closed-loop QUORUM read's p99 measured
/// 2.9 ms).
pub const SPECULATE_AFTER: Duration = Duration::from_millis(50);

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(ErrorReply::new(code, message))
}

/// The replica failures behind an error, as a parenthesised suffix (empty when none).
fn failure_detail(failures: &[String]) -> String {
    if failures.is_empty() {
        String::new()
    } else {
        format!(" ({})", failures.join("; "))
    }
}

fn counted(code: ErrorCode, message: String, acks: usize, required: usize) -> Response {
    Response::Error(counted_reply(code, message, acks, required))
}

fn counted_reply(code: ErrorCode, message: String, acks: usize, required: usize) -> ErrorReply {
    ErrorReply {
        code,
        message,
        acks: acks as u32,
        required: required as u32,
        receipt: None,
    }
}

fn fill_write_receipt(
    mut r: Receipt,
    version: Version,
    acked: &[NodeId],
    hinted: &[NodeId],
    failed: &[NodeId],
) -> Box<Receipt> {
    r.version = Some(version);
    r.acked = acked.to_vec();
    r.hinted = hinted.to_vec();
    r.failed = failed.to_vec();
    Box::new(r)
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

/// What a coordinator waiting on replica replies gets next.
enum Next<T> {
    /// A replica's reply.
    Reply(NodeId, Result<T, String>),
    /// [`SPECULATE_AFTER`] has passed (once per wait, before the deadline): time to ask a
    /// spare replica too.
    Speculate,
    /// The deadline passed, or no reply can come any more.
    Done,
}

/// The waiting of a read (or a LINEARIZABLE write's version query) on its replicas: replies
/// until the deadline, with one [`Next::Speculate`] at [`SPECULATE_AFTER`], under one timer.
struct ReplyWait {
    deadline: tokio::time::Instant,
    speculate_at: Option<tokio::time::Instant>,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl ReplyWait {
    fn new(deadline: Instant) -> ReplyWait {
        let deadline = tokio::time::Instant::from_std(deadline);
        let speculate_at = tokio::time::Instant::now() + SPECULATE_AFTER;
        ReplyWait {
            deadline,
            speculate_at: Some(speculate_at),
            timer: Box::pin(tokio::time::sleep_until(speculate_at.min(deadline))),
        }
    }

    /// The next reply among the replica requests in `replies` (driven here, on the request's
    /// task), or what the timer says.
    async fn next<T>(
        &mut self,
        replies: &mut (impl futures::Stream<Item = ReplicaResult<T>> + Unpin),
    ) -> Next<T> {
        use futures::StreamExt;
        tokio::select! {
            biased;
            reply = replies.next() => match reply {
                Some((replica, res)) => Next::Reply(replica, res),
                None => Next::Done,
            },
            () = &mut self.timer => {
                if self.speculate_at.take().is_some() && self.timer.deadline() < self.deadline {
                    let deadline = self.deadline;
                    self.timer.as_mut().reset(deadline);
                    Next::Speculate
                } else {
                    Next::Done
                }
            }
        }
    }
}

/// How one replica write ended.
pub(crate) enum WriteAck {
    /// The replica stored it (or already had something newer).
    Acked,
    /// The replica failed; a hint for it is stored here.
    Hinted(String),
    /// The replica failed and no hint could be stored.
    Failed(String),
}

impl Node {
    /// Logs and counts (`ringkv_speculative_reads_total`) a spare replica asked at
    /// [`SPECULATE_AFTER`] for a `what` ("read" or "version query").
    fn count_speculation(&self, spare: NodeId, what: &'static str) {
        debug!(spare, what, "speculative request to a spare replica");
        self.stats
            .speculative_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The key's replicas, the level's requirement, and the replicas known up — or the error
    /// reply when the level cannot be met.
    fn plan(
        &self,
        key: &[u8],
        level: Consistency,
        for_read: bool,
    ) -> Result<(Requirement, Vec<NodeId>, Vec<NodeId>), Response> {
        let view = self.view();
        if view.read.is_none() {
            return Err(error(
                ErrorCode::Unavailable,
                "this node has not learned a cluster ring yet (started with seeds, not joined)",
            ));
        }
        // Reads use the read ring; during a topology change a write must meet its level in both
        // the current and the next ring, so that whichever ring later serves reads has it.
        let sets: Vec<&[NodeId]> = if for_read {
            vec![view.read_replicas(key)]
        } else {
            view.write_replica_sets(key)
        };
        let mut req = Requirement { groups: Vec::new() };
        let mut replicas: Vec<NodeId> = Vec::with_capacity(sets.first().map_or(0, |s| s.len()));
        for set in sets {
            let r = Requirement::new(level, set, |n| view.dc_of(n), &self.datacenter, for_read)
                .map_err(|e| match e {
                    LevelError::AnyForRead => error(ErrorCode::InvalidRequest, e.to_string()),
                    LevelError::TooFewReplicas { .. } => {
                        error(ErrorCode::Unavailable, e.to_string())
                    }
                })?;
            req.groups.extend(r.groups);
            for &n in set {
                if !replicas.contains(&n) {
                    replicas.push(n);
                }
            }
        }
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
        Ok((req, alive, replicas))
    }

    /// Coordinates a put (`value` is `Some`) or a delete (`None`).
    pub async fn coordinate_write(
        self: &Arc<Self>,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        level: Consistency,
        opts: WriteOpts,
        deadline: Instant,
    ) -> Response {
        if let Err(resp) = check_sizes(&key, value.as_deref()) {
            return resp;
        }
        let (req, alive, replicas) = match self.plan(&key, level, false) {
            Ok(p) => p,
            Err(resp) => return resp,
        };
        let key = Arc::new(key);
        let mut receipt = opts.receipt.then(Receipt::default);
        // Only a write with an op id is remembered, so only it needs its fingerprint.
        let fingerprint = opts.op.map_or(0, |_| {
            proto::message::op_fingerprint(&key, value.as_deref())
        });
        let version = match self
            .write_version(
                &key,
                fingerprint,
                level,
                &req,
                &alive,
                &opts,
                deadline,
                &mut receipt,
            )
            .await
        {
            Ok(v) => v,
            Err(resp) => return resp,
        };
        let record = Record { version, value };
        // Replicas known down get a hint now; the others are sent the write, and get a hint if
        // they fail or do not answer in time.
        // Hints for replicas known down are written off the request path, in one task; only ANY
        // with no live replica waits for them, since a hint is then the write's only copy (and a
        // receipt, which names them).
        let down: Vec<NodeId> = replicas
            .iter()
            .copied()
            .filter(|r| !alive.contains(r))
            .collect();
        let mut hinting = (!down.is_empty()).then(|| {
            let (node, key, record) = (self.clone(), key.clone(), record.clone());
            tokio::spawn(async move {
                let mut hinted = Vec::new();
                for replica in down {
                    if node.store_hint(replica, key.to_vec(), record.clone()).await {
                        hinted.push(replica);
                    }
                }
                hinted
            })
        });
        let (tx, mut rx) = mpsc::channel::<(NodeId, WriteAck)>(alive.len().max(1));
        // This node's own copy is written on this task, while it waits for the other replicas'
        // acks: no task, no channel message and no wake-up of its own. Should the wait end
        // first, it is handed to a task of its own after all (below), so it still completes.
        let mut local = alive
            .contains(&self.id)
            .then(|| Box::pin(self.clone().local_copy(key.clone(), record.clone())));
        for &replica in alive.iter().filter(|&&r| r != self.id) {
            // Another replica's write joins whatever else is queued for it (one request per
            // batch, see `replica_batcher`); only when its queue is full is it sent alone.
            let queued = self
                .replica_batches
                .queue(
                    self,
                    replica,
                    PeerWrite {
                        key: key.clone(),
                        record: record.clone(),
                        op: opts.op,
                        fingerprint,
                        deadline,
                        acks: tx.clone(),
                    },
                )
                .is_ok();
            if queued {
                continue;
            }
            let (node, key, record, tx) = (self.clone(), key.clone(), record.clone(), tx.clone());
            let op = opts.op;
            tokio::spawn(async move {
                let res = node
                    .write_to(replica, key.to_vec(), record.clone(), op, deadline)
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
        let mut hinted_down = Vec::new();
        if (level == Consistency::Any && alive.is_empty()) || receipt.is_some() {
            if let Some(task) = hinting.take() {
                let until = tokio::time::Instant::from_std(deadline);
                hinted_down = match tokio::time::timeout_at(until, task).await {
                    Ok(Ok(hinted)) => hinted,
                    _ => Vec::new(),
                };
            }
        }
        let mut acked = Vec::with_capacity(alive.len());
        let mut hinted = hinted_down.clone();
        let mut failed = Vec::new();
        let written =
            |acked: &[NodeId], hinted: &[NodeId], failed: &[NodeId], receipt: Option<Receipt>| {
                Response::Written {
                    version,
                    acks: acked.len() as u32,
                    receipt: receipt.map(|r| fill_write_receipt(r, version, acked, hinted, failed)),
                }
            };
        if level == Consistency::Any && alive.is_empty() && !hinted_down.is_empty() {
            return written(&acked, &hinted, &failed, receipt);
        }
        let mut failures = Vec::new();
        let expired = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
        tokio::pin!(expired);
        let mut others_open = true;
        // `Some` once the level is met, `None` when the deadline passes or no ack can come.
        let done = loop {
            if local.is_none() && !others_open {
                break None;
            }
            let (replica, res) = tokio::select! {
                biased;
                res = async {
                    match local.as_mut() {
                        Some(copy) => copy.await,
                        None => std::future::pending().await,
                    }
                } => {
                    local = None;
                    (self.id, res)
                }
                next = rx.recv(), if others_open => match next {
                    Some(ack) => ack,
                    None => {
                        others_open = false;
                        continue;
                    }
                },
                () = &mut expired => break None,
            };
            match res {
                WriteAck::Acked => {
                    acked.push(replica);
                    // When this node is a live replica, its own copy is also awaited (it is the
                    // fastest, with no network): a read at any level through the same
                    // coordinator, which reads itself first, then sees the write.
                    let local_done = !alive.contains(&self.id) || acked.contains(&self.id);
                    if req.met_by(&acked) && local_done {
                        break Some(());
                    }
                }
                // ANY counts a durable hint as the write being stored; no other level does.
                WriteAck::Hinted(_) if level == Consistency::Any => {
                    hinted.push(replica);
                    break Some(());
                }
                WriteAck::Hinted(e) => {
                    hinted.push(replica);
                    failures.push(format!("node {replica}: {e} (hinted)"));
                }
                WriteAck::Failed(e) => {
                    failed.push(replica);
                    failures.push(format!("node {replica}: {e}"));
                }
            }
        };
        if let Some(copy) = local.take() {
            tokio::spawn(copy);
        }
        if done.is_some() {
            return written(&acked, &hinted, &failed, receipt);
        }
        let detail = failure_detail(&failures);
        let mut reply = counted_reply(
            ErrorCode::Timeout,
            format!(
                "{level} write: {} of {} required replica acks in time{detail}; the write may or may not be visible",
                acked.len(),
                req.total_needed()
            ),
            acked.len(),
            req.total_needed(),
        );
        reply.receipt = receipt.map(|r| fill_write_receipt(r, version, &acked, &hinted, &failed));
        Response::Error(reply)
    }

    /// The version a write is stamped with.
    ///
    /// - An op this node already versioned, or (on a retry) one any live replica stored, keeps
    ///   its first version: a retry never creates a second one.
    /// - LINEARIZABLE first asks a majority for the key's highest version (phase one of the
    ///   quorum register) and stamps above it, whatever this node's clock says.
    /// - A session's floor (`opts.after`) is likewise exceeded.
    ///
    /// An op id already used for a different write (another `fingerprint`) is refused.
    #[allow(clippy::too_many_arguments)]
    async fn write_version(
        self: &Arc<Self>,
        key: &Arc<Vec<u8>>,
        fingerprint: u64,
        level: Consistency,
        req: &Requirement,
        alive: &[NodeId],
        opts: &WriteOpts,
        deadline: Instant,
        receipt: &mut Option<Receipt>,
    ) -> Result<Version, Response> {
        let reused_for_another_write = || {
            error(
                ErrorCode::InvalidRequest,
                "this op id was already used for a different write (another key or value); nothing was written",
            )
        };
        if let Some(op) = opts.op {
            let mut known = match self.ops.lock().unwrap_or_else(|p| p.into_inner()).get(op) {
                Some((v, f)) if f == fingerprint => Some(v),
                Some(_) => return Err(reused_for_another_write()),
                None => None,
            };
            if known.is_none() && opts.retry {
                known = self.lookup_op(op, fingerprint, alive, deadline).await?;
            }
            if let Some(v) = known {
                // A concurrent attempt may have recorded the op meanwhile: keep what is recorded.
                let (v, f) =
                    self.ops
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(op, v, fingerprint);
                if f != fingerprint {
                    return Err(reused_for_another_write());
                }
                if let Some(r) = receipt {
                    r.reused_op = true;
                }
                return Ok(v);
            }
        }
        let mut floor = opts.after;
        if level == Consistency::Linearizable {
            let (highest, from) = self.highest_version(key, req, alive, deadline).await?;
            floor = floor.max(highest);
            if let Some(r) = receipt {
                r.version_from = from;
            }
        }
        if let Some(f) = floor {
            // Moves this node's clock past the floor, so the stamp below exceeds it.
            if let Err(e) = self.clock.observe(f.hlc) {
                return Err(error(
                    ErrorCode::ClockSkew,
                    format!("the key's newest known version {f} is ahead of this node's clock ({e}); nothing was written"),
                ));
            }
        }
        let version = Version {
            hlc: self.clock.now(),
            node: self.id,
        };
        Ok(match opts.op {
            // Another attempt of the same op may have been versioned meanwhile: keep the first.
            Some(op) => {
                let (first, first_fingerprint) = self
                    .ops
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(op, version, fingerprint);
                if first_fingerprint != fingerprint {
                    return Err(reused_for_another_write());
                }
                if first != version {
                    if let Some(r) = receipt {
                        r.reused_op = true;
                    }
                }
                first
            }
            None => version,
        })
    }

    /// Asks every live replica but this node whether it stored `op`: the newest version any
    /// remembers. A retry must not stamp a second version because a replica that stored the op
    /// did not answer in time, so every live replica must answer: otherwise `Timeout`, nothing
    /// written (the client may retry again). One that remembers the id for a different write
    /// makes it `InvalidRequest`. Waits at most half the time left.
    async fn lookup_op(
        self: &Arc<Self>,
        op: proto::message::OpId,
        fingerprint: u64,
        alive: &[NodeId],
        deadline: Instant,
    ) -> Result<Option<Version>, Response> {
        let peers: Vec<NodeId> = alive.iter().copied().filter(|r| *r != self.id).collect();
        let now = Instant::now();
        let until = now + deadline.saturating_duration_since(now) / 2;
        let asks = peers.iter().map(|&peer| {
            let node = self.clone();
            async move {
                let ask = Request::OpLookup { op, fingerprint };
                (peer, node.call_peer(peer, ask, until).await)
            }
        });
        let mut newest = None;
        let mut silent = Vec::new();
        for (peer, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(Response::OpVersion { conflict: true, .. }) => {
                    return Err(error(
                        ErrorCode::InvalidRequest,
                        "this op id was already used for a different write (another key or value); nothing was written",
                    ))
                }
                Ok(Response::OpVersion { version, .. }) => newest = newest.max(version),
                Ok(other) => silent.push(format!("node {peer}: unexpected reply {other:?}")),
                Err(e) => silent.push(format!("node {peer}: {e}")),
            }
        }
        if !silent.is_empty() && newest.is_none() {
            let asked = peers.len();
            return Err(counted(
                ErrorCode::Timeout,
                format!(
                    "retry: {} of {asked} live replicas did not say whether they stored this op ({}); nothing was written",
                    silent.len(),
                    silent.join("; ")
                ),
                asked - silent.len(),
                asked,
            ));
        }
        Ok(newest)
    }

    /// Phase one of a LINEARIZABLE write: the highest version of `key` among a majority of its
    /// replicas, and which replicas answered. Fails (nothing written) when no majority answers.
    async fn highest_version(
        self: &Arc<Self>,
        key: &Arc<Vec<u8>>,
        req: &Requirement,
        alive: &[NodeId],
        deadline: Instant,
    ) -> Result<(Option<Version>, Vec<NodeId>), Response> {
        // As a read: the fewest replicas that make a majority, this node first (no network),
        // and a spare for each one that fails.
        let preference = self.read_preference(alive);
        let first = req.choose(&preference);
        let mut spares = preference.into_iter().filter(|r| !first.contains(r));
        // The queries run on this task; those still out when it returns are dropped.
        let mut queries = futures::stream::FuturesUnordered::new();
        let ask = |replica: NodeId| async move {
            (
                replica,
                self.version_at(replica, key.to_vec(), deadline).await,
            )
        };
        let mut outstanding = first.len();
        first.iter().for_each(|r| queries.push(ask(*r)));
        let mut answered = Vec::new();
        let mut highest = None;
        let mut failures = Vec::new();
        let mut waiting = ReplyWait::new(deadline);
        while outstanding > 0 {
            let (replica, res) = match waiting.next(&mut queries).await {
                Next::Reply(replica, res) => (replica, res),
                Next::Speculate => {
                    if let Some(spare) = spares.next() {
                        self.count_speculation(spare, "version query");
                        queries.push(ask(spare));
                        outstanding += 1;
                    }
                    continue;
                }
                Next::Done => break,
            };
            outstanding -= 1;
            match res {
                Ok(v) => {
                    answered.push(replica);
                    highest = highest.max(v);
                    if req.met_by(&answered) {
                        return Ok((highest, answered));
                    }
                }
                Err(e) => {
                    failures.push(format!("node {replica}: {e}"));
                    if let Some(spare) = spares.next() {
                        queries.push(ask(spare));
                        outstanding += 1;
                    }
                }
            }
        }
        let detail = failure_detail(&failures);
        Err(counted(
            ErrorCode::Timeout,
            format!(
                "LINEARIZABLE write: {} of {} required replicas answered the version query in time{detail}; nothing was written",
                answered.len(),
                req.total_needed()
            ),
            answered.len(),
            req.total_needed(),
        ))
    }

    /// The version of one replica's record of `key` (this node reads locally).
    async fn version_at(
        &self,
        replica: NodeId,
        key: Vec<u8>,
        deadline: Instant,
    ) -> Result<Option<Version>, String> {
        if replica == self.id {
            return self
                .store
                .get(key)
                .await
                .map(|r| r.map(|r| r.version))
                .map_err(|e| e.to_string());
        }
        match self
            .call_peer(replica, Request::ReplicaVersion { key }, deadline)
            .await?
        {
            Response::ReplicaVersion { version } => Ok(version),
            Response::Error(e) => Err(e.to_string()),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    /// Sends one record to one replica (this node writes locally). `Ok(Some(v))`: the replica
    /// remembered the op `op` under another version `v` (it still applied this record by
    /// version).
    pub async fn write_to(
        &self,
        replica: NodeId,
        key: Vec<u8>,
        record: Record,
        op: Option<proto::message::OpId>,
        deadline: Instant,
    ) -> Result<Option<Version>, String> {
        if replica == self.id {
            return self.apply_local(key, record, op).await.map(|(_, d)| d);
        }
        match self
            .call_peer(replica, Request::ReplicaWrite { key, record, op }, deadline)
            .await?
        {
            Response::ReplicaAck { duplicate, .. } => Ok(duplicate),
            Response::Error(e) => Err(e.to_string()),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    /// This node's copy of a write it coordinates: stored locally, or hinted for this node if
    /// that fails. The write's op, if it has one, is not remembered again: `write_version`
    /// remembered it in this node's op memory when it stamped the version.
    async fn local_copy(self: Arc<Self>, key: Arc<Vec<u8>>, record: Record) -> WriteAck {
        let stored = self.store.apply(key.to_vec(), record.clone()).await;
        match stored.map_err(|e| e.to_string()) {
            Ok(_) => WriteAck::Acked,
            Err(e) if self.store_hint(self.id, key.to_vec(), record).await => WriteAck::Hinted(e),
            Err(e) => WriteAck::Failed(e),
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
            .view()
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
        let view = self.view();
        let mut order: Vec<NodeId> = alive.iter().copied().filter(|r| *r == self.id).collect();
        order.extend(
            alive
                .iter()
                .copied()
                .filter(|r| *r != self.id && view.dc_of(*r) == self.datacenter),
        );
        order.extend(
            alive
                .iter()
                .copied()
                .filter(|r| view.dc_of(*r) != self.datacenter),
        );
        order
    }

    /// Coordinates a get: asks the fewest replicas that can meet the level, asks a spare replica
    /// for each one that fails and one more if the level is not met after [`SPECULATE_AFTER`],
    /// and answers with the newest version among the replies. With a
    /// session floor (`opts.min_version`), an answer older than the floor is never returned: the
    /// remaining replicas are asked too, and if none has it the read fails with `Stale`.
    pub async fn coordinate_read(
        self: &Arc<Self>,
        key: Vec<u8>,
        level: Consistency,
        opts: ReadOpts,
        deadline: Instant,
    ) -> Response {
        if let Err(resp) = check_sizes(&key, None) {
            return resp;
        }
        let (req, alive, _) = match self.plan(&key, level, true) {
            Ok(p) => p,
            Err(resp) => return resp,
        };
        let preference = self.read_preference(&alive);
        let first = req.choose(&preference);
        let mut spares = preference.into_iter().filter(|r| !first.contains(r));
        let key = Arc::new(key);
        // The replica reads run on this task (this node's own read usually finishes on its
        // first poll, from the cache); those still out when it returns are dropped.
        let mut reads = futures::stream::FuturesUnordered::new();
        let read = |replica: NodeId| {
            let key = key.clone();
            async move {
                (
                    replica,
                    self.read_from(replica, key.to_vec(), deadline).await,
                )
            }
        };
        // A tombstone the session saw may since have been purged everywhere: then "no record"
        // is as new as it (only for a tombstone: a value's floor is never met by no record).
        let purge_cutoff = self.purge_cutoff();
        let fresh_enough = |newest: &Option<Record>| match (opts.min_version, newest) {
            (None, _) => true,
            (Some(min), Some(r)) => r.version >= min,
            (Some(min), None) => opts.min_is_tombstone && min.hlc < purge_cutoff,
        };
        let mut outstanding = first.len();
        first.iter().for_each(|r| reads.push(read(*r)));
        let mut answered: Vec<NodeId> = Vec::new();
        let mut seen: Vec<(NodeId, Option<Version>)> = Vec::new();
        let mut newest: Option<Record> = None;
        let mut failed = Vec::new();
        let mut failures = Vec::new();
        let mut waiting = ReplyWait::new(deadline);
        while outstanding > 0 {
            let (replica, res) = match waiting.next(&mut reads).await {
                Next::Reply(replica, res) => (replica, res),
                Next::Speculate => {
                    if let Some(spare) = spares.next() {
                        self.count_speculation(spare, "read");
                        reads.push(read(spare));
                        outstanding += 1;
                    }
                    continue;
                }
                Next::Done => break,
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
                        if fresh_enough(&newest) {
                            let ctx = ReadContext {
                                level,
                                receipt: opts.receipt,
                                failed: &failed,
                            };
                            return self.finish_read(&key, ctx, newest, &seen, deadline).await;
                        }
                        // Older than the session has seen: ask every replica left.
                        for spare in spares.by_ref() {
                            reads.push(read(spare));
                            outstanding += 1;
                        }
                    }
                }
                Err(e) => {
                    failed.push(replica);
                    failures.push(format!("node {replica}: {e}"));
                    if let Some(spare) = spares.next() {
                        reads.push(read(spare));
                        outstanding += 1;
                    }
                }
            }
        }
        let detail = failure_detail(&failures);
        // Stale only when every replica asked answered and none is new enough; a replica that
        // failed or is still to answer might hold the version: that is a timeout.
        let mut reply = match opts.min_version {
            Some(min) if req.met_by(&answered) && outstanding == 0 && failed.is_empty() => counted_reply(
                ErrorCode::Stale,
                format!(
                    "{level} read: none of the {} replicas that answered has version {min} or newer, which this session already saw{detail}; nothing older was returned",
                    answered.len()
                ),
                answered.len(),
                req.total_needed(),
            ),
            Some(min) if req.met_by(&answered) => counted_reply(
                ErrorCode::Timeout,
                format!(
                    "{level} read: {} replicas answered, none with version {min} or newer, which this session already saw, and the others did not answer in time{detail}",
                    answered.len()
                ),
                answered.len(),
                req.total_needed(),
            ),
            _ => counted_reply(
                ErrorCode::Timeout,
                format!(
                    "{level} read: {} of {} required replicas answered in time{detail}",
                    answered.len(),
                    req.total_needed()
                ),
                answered.len(),
                req.total_needed(),
            ),
        };
        if opts.receipt {
            reply.receipt = Some(Box::new(Receipt {
                version: newest.as_ref().map(|r| r.version),
                acked: answered,
                failed,
                stale: Vec::new(),
                ..Receipt::default()
            }));
        }
        Response::Error(reply)
    }
}

/// What [`Node::finish_read`] needs to know of the read besides its replies.
struct ReadContext<'a> {
    level: Consistency,
    receipt: bool,
    failed: &'a [NodeId],
}

impl Node {
    /// Answers a read whose level is met, after read repair: every replica that answered with an
    /// older version (or none) is sent the newest record. At levels above ONE the repair finishes
    /// before the answer, so once a quorum read returns a value every later quorum read sees it
    /// (monotonic quorum reads; for LINEARIZABLE this is the quorum register's write-back phase);
    /// at ONE and LOCAL_ONE it runs in the background.
    async fn finish_read(
        self: &Arc<Self>,
        key: &Arc<Vec<u8>>,
        ctx: ReadContext<'_>,
        newest: Option<Record>,
        seen: &[(NodeId, Option<Version>)],
        deadline: Instant,
    ) -> Response {
        let level = ctx.level;
        let replies = seen.len() as u32;
        let mut receipt = ctx.receipt.then(|| Receipt {
            version: newest.as_ref().map(|r| r.version),
            acked: seen.iter().map(|(n, _)| *n).collect(),
            failed: ctx.failed.to_vec(),
            ..Receipt::default()
        });
        let Some(newest) = newest else {
            return Response::Value {
                value: None,
                version: None,
                replies,
                receipt: receipt.map(Box::new),
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
        if let Some(r) = &mut receipt {
            r.stale = stale.clone();
        }
        if !stale.is_empty() {
            self.stats
                .read_repairs
                .fetch_add(stale.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let repairs: Vec<_> = stale
                .iter()
                .map(|&replica| {
                    let (node, key, record) = (self.clone(), key.clone(), newest.clone());
                    tokio::spawn(async move {
                        node.write_to(replica, key.to_vec(), record, None, deadline)
                            .await
                    })
                })
                .collect();
            if !matches!(level, Consistency::One | Consistency::LocalOne) {
                for (replica, repair) in stale.iter().zip(repairs) {
                    if !matches!(repair.await, Ok(Ok(_))) {
                        let mut reply = counted_reply(
                            ErrorCode::Timeout,
                            format!("{level} read: read repair of node {replica} did not complete in time"),
                            seen.len(),
                            seen.len(),
                        );
                        reply.receipt = receipt.map(Box::new);
                        return Response::Error(reply);
                    }
                    if let Some(r) = &mut receipt {
                        r.repaired.push(*replica);
                    }
                }
            }
        }
        Response::Value {
            version: Some(newest.version),
            value: newest.value,
            replies,
            receipt: receipt.map(Box::new),
        }
    }
}
