//! Coalescing of a coordinator's replica writes: one [`Request::ReplicaWrites`] per peer for
//! every client write that was waiting to go to that peer, instead of one request each.
//!
//! Each peer has a bounded queue and one task that drains it. The task sends what is queued
//! as one batch, up to [`MAX_BATCHES_IN_FLIGHT`] batches at a time; while that many are in
//! flight, writes wait in the queue and go out together when one returns. Nothing waits on a
//! timer: under light load every write leaves at once, alone; under heavy load the batches grow
//! with the round trip. A batch costs the coordinator one request (one frame, one pending reply,
//! one timer) and the replica one task and one reply, whatever it holds, where single writes
//! cost that per write.
//!
//! The outcome of each write goes to its coordinator's ack channel, as the per-write path sends
//! it: a write that failed (or was not answered in time) gets a hint here first, as any failed
//! replica write does.

use crate::coordinator::WriteAck;
use crate::node::Node;
use proto::message::{OpId, ReplicaWriteItem, ReplicaWriteOutcome};
use proto::{Record, Request, Response};
use ring::NodeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;
use tokio::sync::{mpsc, Semaphore};

/// Writes waiting for one peer, at most. A coordinator that finds the queue full sends the
/// write on its own instead (the pool's in-flight bound then applies).
pub const QUEUE_WRITES: usize = 4096;
/// Writes in one batch, at most.
pub const MAX_BATCH_WRITES: usize = 256;
/// Batches to one peer in flight at once, at most.
pub const MAX_BATCHES_IN_FLIGHT: usize = 2;

/// One client write on its way to one replica.
pub(crate) struct PeerWrite {
    /// The key.
    pub(crate) key: Arc<Vec<u8>>,
    /// The record to store.
    pub(crate) record: Record,
    /// The client's op id.
    pub(crate) op: Option<OpId>,
    /// The write's `op_fingerprint` (0 without `op`).
    pub(crate) fingerprint: u64,
    /// When the coordinator stops waiting for it.
    pub(crate) deadline: Instant,
    /// Where the outcome goes (the coordinator's collection of acks).
    pub(crate) acks: mpsc::Sender<(NodeId, WriteAck)>,
}

impl PeerWrite {
    /// Bytes this write adds to a batch's frame (key, value, version, op and lengths).
    fn encoded_size(&self) -> usize {
        self.key.len() + self.record.value.as_ref().map_or(0, Vec::len) + 48
    }
}

/// The per-peer queues of a node.
#[derive(Default)]
pub struct ReplicaBatcher {
    queues: Mutex<HashMap<NodeId, mpsc::Sender<PeerWrite>>>,
    /// Batches sent, and writes sent in them (for `/metrics`).
    pub batches: std::sync::atomic::AtomicU64,
    pub batched_writes: std::sync::atomic::AtomicU64,
}

impl ReplicaBatcher {
    /// Queues `write` for `peer`, starting the peer's task on first use. Gives the write back
    /// when the queue is full (or its task is gone), for the caller to send on its own.
    pub(crate) fn queue(
        &self,
        node: &Arc<Node>,
        peer: NodeId,
        write: PeerWrite,
    ) -> Result<(), PeerWrite> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let tx = queues.entry(peer).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE_WRITES);
            tokio::spawn(drain(Arc::downgrade(node), peer, rx));
            tx
        });
        match tx.try_send(write) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(w)) => Err(w),
            Err(mpsc::error::TrySendError::Closed(w)) => {
                queues.remove(&peer);
                Err(w)
            }
        }
    }
}

/// The task of one peer's queue: takes what is queued (up to a batch's bounds) whenever fewer
/// than [`MAX_BATCHES_IN_FLIGHT`] batches are out, and sends it. Ends with the node.
async fn drain(node: Weak<Node>, peer: NodeId, mut rx: mpsc::Receiver<PeerWrite>) {
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    let mut carried: Option<PeerWrite> = None;
    loop {
        let first = match carried.take() {
            Some(w) => w,
            None => match rx.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.encoded_size();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_WRITES {
            let Ok(w) = rx.try_recv() else { break };
            let size = w.encoded_size();
            if bytes + size > proto::limits::MAX_BATCH_BYTES {
                carried = Some(w);
                break;
            }
            bytes += size;
            batch.push(w);
        }
        let Some(node) = node.upgrade() else { return };
        tokio::spawn(async move {
            send(&node, peer, batch).await;
            drop(permit);
        });
    }
}

/// Sends one batch and hands each write's outcome to its coordinator.
async fn send(node: &Arc<Node>, peer: NodeId, batch: Vec<PeerWrite>) {
    use std::sync::atomic::Ordering::Relaxed;
    let now = Instant::now();
    // Writes whose coordinator stopped waiting are not sent (they get a hint, as a write that
    // timed out does).
    let (live, late): (Vec<PeerWrite>, Vec<PeerWrite>) =
        batch.into_iter().partition(|w| w.deadline > now);
    fail_all(node, peer, late, "deadline passed").await;
    let Some(deadline) = live.iter().map(|w| w.deadline).max() else {
        return;
    };
    node.replica_batches.batches.fetch_add(1, Relaxed);
    node.replica_batches
        .batched_writes
        .fetch_add(live.len() as u64, Relaxed);
    let writes = live
        .iter()
        .map(|w| ReplicaWriteItem {
            key: w.key.to_vec(),
            record: w.record.clone(),
            op: w.op,
            fingerprint: w.fingerprint,
        })
        .collect();
    let outcomes = match node
        .call_peer(peer, Request::ReplicaWrites { writes }, deadline)
        .await
    {
        Ok(Response::ReplicaWriteAcks { outcomes }) if outcomes.len() == live.len() => outcomes,
        Ok(Response::Error(e)) => return fail_all(node, peer, live, &e.to_string()).await,
        Ok(other) => {
            let why = format!("unexpected reply {other:?}");
            return fail_all(node, peer, live, &why).await;
        }
        Err(e) => return fail_all(node, peer, live, &e).await,
    };
    let mut failed = Vec::new();
    for (w, outcome) in live.into_iter().zip(outcomes) {
        match outcome {
            ReplicaWriteOutcome::Acked { .. } => {
                let _ = w.acks.try_send((peer, WriteAck::Acked));
            }
            ReplicaWriteOutcome::Failed(e) => failed.push((w, e.to_string())),
        }
    }
    futures::future::join_all(failed.into_iter().map(|(w, e)| fail(node, peer, w, e))).await;
}

async fn fail_all(node: &Arc<Node>, peer: NodeId, writes: Vec<PeerWrite>, why: &str) {
    futures::future::join_all(
        writes
            .into_iter()
            .map(|w| fail(node, peer, w, why.to_string())),
    )
    .await;
}

/// A write the replica did not take: hinted if a hint can be stored, else failed.
async fn fail(node: &Arc<Node>, peer: NodeId, w: PeerWrite, why: String) {
    let ack = if node
        .store_hint(peer, w.key.to_vec(), w.record.clone())
        .await
    {
        WriteAck::Hinted(why)
    } else {
        WriteAck::Failed(why)
    };
    let _ = w.acks.try_send((peer, ack));
}
