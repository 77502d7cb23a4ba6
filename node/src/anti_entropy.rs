//! Merkle-tree anti-entropy. Every node keeps, per token range it replicates, a hash tree whose
//! leaves are updated on every write (see `local_store`). A round compares, for each range, this
//! node's tree with each other replica's: roots first, then only the children of differing nodes,
//! down to the differing leaves; for those leaves the two sides exchange key digests with versions
//! and send each other the records that are missing or older. Tombstones travel like values.
//! Bytes exchanged grow with the number of differing keys, not with the number of keys stored.

use crate::node::Node;
use proto::message::{Digest, KeyRecord, LeafDigest, RepairReport};
use proto::{ErrorCode, ErrorReply, Record, Request, Response, Version};
use ring::{NodeId, TokenRange};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::merkle::{key_digest, RangeTree, FANOUT};
use storage::Engine;
use tracing::{debug, info};

/// Tree nodes asked for in one `TreeHashes` request.
const MAX_NODES_PER_REQUEST: usize = 1024;
/// Leaves exchanged in one `SyncLeaves` request.
const LEAVES_PER_SYNC: usize = 64;
/// Records in one `LeafDiff` answer are cut at this many bytes (the rest is asked again).
const MAX_DIFF_BYTES: usize = proto::limits::MAX_BATCH_BYTES;
/// Key digests sent in one `SyncLeaves` request (28 bytes each, so about 560 KB).
const MAX_DIGESTS_PER_SYNC: usize = 20_000;
/// Scan page size when reading a leaf's keys.
const SCAN_PAGE: usize = 1024;
/// A `SyncLeaves` request is repeated at most this often for one batch of leaves.
const MAX_SYNC_ROUNDS: usize = 64;
/// Longest a requested repair waits for this node to hear from each peer once: right after a
/// start its failure detector has heard from nobody, and a round then would skip every peer.
const FIRST_CONTACT_WAIT: Duration = Duration::from_secs(5);

fn size_of<T: serde::Serialize>(msg: &T) -> u64 {
    postcard::to_allocvec(msg)
        .map(|v| v.len() as u64)
        .unwrap_or(0)
}

/// Every record of one leaf of a range, read from storage, except tombstones past the grace
/// period (`purge_before`, an HLC): those are due for purge on every replica, and exchanging them
/// would let replicas that purge at different moments hand them back to each other forever.
fn leaf_records(
    engine: &dyn Engine,
    leaf: TokenRange,
    purge_before: u64,
) -> Result<Vec<(Vec<u8>, Record)>, String> {
    let mut all = all_leaf_records(engine, leaf)?;
    all.retain(|(_, r)| !(r.is_tombstone() && r.version.hlc < purge_before));
    Ok(all)
}

fn all_leaf_records(
    engine: &dyn Engine,
    leaf: TokenRange,
) -> Result<Vec<(Vec<u8>, Record)>, String> {
    let mut out = Vec::new();
    let mut cursor: Option<storage::ScanCursor> = None;
    loop {
        let page = engine
            .scan(leaf, cursor.as_ref(), SCAN_PAGE)
            .map_err(|e| e.to_string())?;
        let done = page.len() < SCAN_PAGE;
        if let Some((k, _)) = page.last() {
            cursor = Some(storage::ScanCursor::after(k));
        }
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

impl Node {
    /// The tree of `range`, cloned out of the lock (leaves only: at most 64 Ki digests).
    fn tree_of(&self, range: &TokenRange) -> Option<RangeTree> {
        self.trees
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tree(range)
            .cloned()
    }

    /// Serves `TreeHashes`: the root (no nodes asked) or the children of the asked nodes.
    pub fn serve_tree_hashes(&self, range: TokenRange, level: u8, nodes: &[u32]) -> Response {
        let Some(tree) = self.tree_of(&range) else {
            return Response::Error(ErrorReply::new(
                ErrorCode::InvalidRequest,
                "this node does not replicate that range",
            ));
        };
        if nodes.is_empty() {
            return Response::Hashes {
                hashes: vec![tree.root()],
            };
        }
        if nodes.len() > MAX_NODES_PER_REQUEST || level >= tree.levels() {
            return Response::Error(ErrorReply::new(
                ErrorCode::InvalidRequest,
                "tree request out of bounds",
            ));
        }
        let mut hashes = Vec::with_capacity(nodes.len() * FANOUT as usize);
        for &n in nodes {
            let children = tree.children(level, n);
            if children.len() != FANOUT as usize {
                return Response::Error(ErrorReply::new(
                    ErrorCode::InvalidRequest,
                    "tree node out of range",
                ));
            }
            hashes.extend(children);
        }
        Response::Hashes { hashes }
    }

    /// Serves `SyncLeaves`: compares the sender's digests with local records of the same leaves.
    pub async fn serve_sync_leaves(
        self: &Arc<Self>,
        range: TokenRange,
        leaves: Vec<LeafDigest>,
    ) -> Response {
        let Some(tree) = self.tree_of(&range) else {
            return Response::Error(ErrorReply::new(
                ErrorCode::InvalidRequest,
                "this node does not replicate that range",
            ));
        };
        if leaves.len() > LEAVES_PER_SYNC || leaves.iter().any(|l| l.leaf >= tree.leaf_count()) {
            return Response::Error(ErrorReply::new(
                ErrorCode::InvalidRequest,
                "leaf request out of bounds",
            ));
        }
        let engine = self.store.engine().clone();
        let purge_before = self.purge_cutoff();
        let res = tokio::task::spawn_blocking(move || {
            let mut records = Vec::new();
            let mut wanted = Vec::new();
            let mut bytes = 0usize;
            let mut complete = true;
            for leaf in leaves {
                let theirs: HashMap<Digest, Version> = leaf.entries.into_iter().collect();
                let mine = match tree.leaf_range(leaf.leaf) {
                    Some(r) => leaf_records(engine.as_ref(), r, purge_before)?,
                    None => Vec::new(),
                };
                let mut mine_digests = HashMap::with_capacity(mine.len());
                for (key, record) in mine {
                    let d = key_digest(&key);
                    mine_digests.insert(d, record.version);
                    let newer_here = theirs.get(&d).is_none_or(|v| record.version > *v);
                    if newer_here {
                        if bytes + key.len() + record.value.as_ref().map_or(0, Vec::len)
                            > MAX_DIFF_BYTES
                            && !records.is_empty()
                        {
                            complete = false;
                            continue;
                        }
                        bytes += key.len() + record.value.as_ref().map_or(0, Vec::len) + 32;
                        records.push(KeyRecord { key, record });
                    }
                }
                wanted.extend(
                    theirs
                        .into_iter()
                        .filter(|(d, v)| mine_digests.get(d).is_none_or(|m| v > m))
                        .map(|(d, _)| d),
                );
            }
            Ok::<_, String>(Response::LeafDiff {
                records,
                wanted,
                complete,
            })
        })
        .await;
        match res {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Response::Error(ErrorReply::new(ErrorCode::Internal, e)),
            Err(e) => Response::Error(ErrorReply::new(ErrorCode::Internal, e.to_string())),
        }
    }

    /// Waits until every peer has been heard from at least once, or [`FIRST_CONTACT_WAIT`]
    /// has passed (a peer that is really down is then skipped, and counted as a failure, by
    /// the round). Without it, `ringkv repair` sent to a node in its first moments reported
    /// a failure for every pair.
    pub async fn await_first_contact(&self) {
        let deadline = Instant::now() + FIRST_CONTACT_WAIT;
        while Instant::now() < deadline
            && self
                .detector
                .peers()
                .into_iter()
                .any(|p| !self.detector.heard_from(p))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One anti-entropy round: every range this node replicates, with every other replica that
    /// `with_peer` accepts and the failure detector sees up. Rounds do not overlap.
    pub async fn anti_entropy_round(
        self: &Arc<Self>,
        with_peer: impl Fn(NodeId) -> bool,
    ) -> RepairReport {
        let _running = self.ae_running.lock().await;
        let started = Instant::now();
        let mut report = RepairReport::default();
        let view = self.view();
        // Trees and ranges are those of the read ring; while a topology change moves data, or
        // the trees are being rebuilt for new ranges, replicas cannot compare like for like.
        let ranges = match (&view.read, &view.also) {
            (Some(ring), None) if !self.store.rebuilding_trees() => ring.ranges_of(self.id),
            _ => {
                debug!("anti-entropy skipped: topology change or tree rebuild in progress");
                Vec::new()
            }
        };
        for (range, replicas) in ranges {
            for peer in replicas
                .into_iter()
                .filter(|p| *p != self.id && with_peer(*p))
            {
                if !self.detector.is_up(peer) {
                    report.failures += 1;
                    continue;
                }
                report.pairs_compared += 1;
                if let Err(e) = self.sync_range(range, peer, &mut report).await {
                    debug!(peer, error = %e, "anti-entropy with peer failed");
                    report.failures += 1;
                }
            }
        }
        report.millis = started.elapsed().as_millis() as u64;
        self.ae_stats
            .keys_repaired
            .fetch_add(report.keys_pulled + report.keys_pushed, Ordering::Relaxed);
        *self.ae_stats.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), report.clone()));
        if report.keys_pulled + report.keys_pushed > 0 {
            info!(
                pulled = report.keys_pulled,
                pushed = report.keys_pushed,
                bytes = report.bytes_exchanged,
                ms = report.millis,
                "anti-entropy round repaired keys"
            );
        }
        report
    }

    async fn ae_call(
        &self,
        peer: NodeId,
        req: Request,
        report: &mut RepairReport,
    ) -> Result<Response, String> {
        report.bytes_exchanged += size_of(&req);
        let deadline = Instant::now() + self.request_timeout();
        let resp = self.call_peer(peer, req, deadline).await?;
        report.bytes_exchanged += size_of(&resp);
        match resp {
            Response::Error(e) => Err(e.to_string()),
            other => Ok(other),
        }
    }

    async fn sync_range(
        self: &Arc<Self>,
        range: TokenRange,
        peer: NodeId,
        report: &mut RepairReport,
    ) -> Result<(), String> {
        let tree = self.tree_of(&range).ok_or("no local tree for range")?;
        let theirs = match self
            .ae_call(
                peer,
                Request::TreeHashes {
                    range,
                    level: 0,
                    nodes: vec![],
                },
                report,
            )
            .await?
        {
            Response::Hashes { hashes } if hashes.len() == 1 => hashes[0],
            other => return Err(format!("unexpected reply {other:?}")),
        };
        if theirs == tree.root() {
            return Ok(());
        }
        report.pairs_differing += 1;
        // Descend: at each level, ask for the children of the nodes that differ.
        let mut differing: Vec<u32> = vec![0];
        for level in (0..tree.levels()).rev() {
            let mut next = Vec::new();
            for chunk in differing.chunks(MAX_NODES_PER_REQUEST) {
                let req = Request::TreeHashes {
                    range,
                    level,
                    nodes: chunk.to_vec(),
                };
                let hashes = match self.ae_call(peer, req, report).await? {
                    Response::Hashes { hashes }
                        if hashes.len() == chunk.len() * FANOUT as usize =>
                    {
                        hashes
                    }
                    other => return Err(format!("unexpected reply {other:?}")),
                };
                for (i, &node) in chunk.iter().enumerate() {
                    let mine = tree.children(level, node);
                    for (j, h) in mine.iter().enumerate() {
                        if *h != hashes[i * FANOUT as usize + j] {
                            next.push(node * FANOUT + j as u32);
                        }
                    }
                }
            }
            differing = next;
        }
        for leaves in differing.chunks(LEAVES_PER_SYNC) {
            report.leaves_exchanged += leaves.len() as u64;
            self.sync_leaves(&tree, peer, leaves, report).await?;
        }
        Ok(())
    }

    /// Exchanges the keys of differing `leaves` with `peer`, in groups small enough for one
    /// message each (a leaf with more keys than a message holds goes alone).
    async fn sync_leaves(
        self: &Arc<Self>,
        tree: &RangeTree,
        peer: NodeId,
        leaves: &[u32],
        report: &mut RepairReport,
    ) -> Result<(), String> {
        let counts = self.leaf_records_of(tree, leaves).await?;
        let mut group: Vec<u32> = Vec::new();
        let mut entries = 0;
        for (leaf, recs) in counts {
            if !group.is_empty() && entries + recs.len() > MAX_DIGESTS_PER_SYNC {
                self.sync_leaf_group(tree, peer, &group, report).await?;
                group.clear();
                entries = 0;
            }
            entries += recs.len();
            group.push(leaf);
        }
        if !group.is_empty() {
            self.sync_leaf_group(tree, peer, &group, report).await?;
        }
        Ok(())
    }

    /// The local records of some leaves, read off the runtime.
    async fn leaf_records_of(
        &self,
        tree: &RangeTree,
        leaves: &[u32],
    ) -> Result<Vec<(u32, Vec<(Vec<u8>, Record)>)>, String> {
        let engine = self.store.engine().clone();
        let purge_before = self.purge_cutoff();
        let ranges: Vec<(u32, Option<TokenRange>)> =
            leaves.iter().map(|&l| (l, tree.leaf_range(l))).collect();
        tokio::task::spawn_blocking(move || {
            ranges
                .into_iter()
                .map(|(leaf, r)| match r {
                    Some(r) => {
                        leaf_records(engine.as_ref(), r, purge_before).map(|recs| (leaf, recs))
                    }
                    None => Ok((leaf, Vec::new())),
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn sync_leaf_group(
        self: &Arc<Self>,
        tree: &RangeTree,
        peer: NodeId,
        leaves: &[u32],
        report: &mut RepairReport,
    ) -> Result<(), String> {
        for _ in 0..MAX_SYNC_ROUNDS {
            let mine = self.leaf_records_of(tree, leaves).await?;
            let digests = mine
                .iter()
                .map(|(leaf, recs)| LeafDigest {
                    leaf: *leaf,
                    entries: recs
                        .iter()
                        .map(|(k, r)| (key_digest(k), r.version))
                        .collect(),
                })
                .collect();
            let req = Request::SyncLeaves {
                range: tree.range(),
                leaves: digests,
            };
            let (records, wanted, complete) = match self.ae_call(peer, req, report).await? {
                Response::LeafDiff {
                    records,
                    wanted,
                    complete,
                } => (records, wanted, complete),
                other => return Err(format!("unexpected reply {other:?}")),
            };
            for kr in records {
                if self
                    .store
                    .apply(kr.key, kr.record)
                    .await
                    .map_err(|e| e.to_string())?
                    .stored()
                {
                    report.keys_pulled += 1;
                }
            }
            if !wanted.is_empty() {
                let want: std::collections::HashSet<Digest> = wanted.into_iter().collect();
                let push: Vec<KeyRecord> = mine
                    .into_iter()
                    .flat_map(|(_, recs)| recs)
                    .filter(|(k, _)| want.contains(&key_digest(k)))
                    .map(|(key, record)| KeyRecord { key, record })
                    .collect();
                for batch in proto::message::batches(push, 256, proto::limits::MAX_BATCH_BYTES) {
                    let n = batch.len();
                    match self
                        .ae_call(peer, Request::ReplicaWriteBatch { writes: batch }, report)
                        .await?
                    {
                        Response::ReplicaAcks { applied } if applied.len() == n => {
                            report.keys_pushed += applied.iter().filter(|a| **a).count() as u64;
                        }
                        other => return Err(format!("unexpected reply {other:?}")),
                    }
                }
            }
            if complete {
                return Ok(());
            }
        }
        Err("leaf exchange did not converge".into())
    }

    /// Runs anti-entropy rounds forever at the configured interval, each with the peers of
    /// higher id (the pair's other side covers the rest), plus tombstone purge.
    pub async fn anti_entropy_loop(self: Arc<Self>) {
        let every = Duration::from_millis(self.cfg.anti_entropy.interval_ms);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let me = self.id;
            self.anti_entropy_round(|p| p > me).await;
            self.purge_tombstones().await;
        }
    }

    /// Tombstones with an HLC below this are past the grace period.
    pub(crate) fn purge_cutoff(&self) -> u64 {
        let grace = self.cfg.anti_entropy.tombstone_grace_ms;
        proto::version::hlc_from_millis(proto::version::wall_millis().saturating_sub(grace))
    }

    /// Deletes tombstones older than the grace period and takes them out of the trees.
    pub async fn purge_tombstones(self: &Arc<Self>) {
        let cutoff = self.purge_cutoff();
        if self.view().also.is_some() || self.store.rebuilding_trees() {
            return;
        }
        let ranges: Vec<TokenRange> = self.my_read_ranges();
        let engine = self.store.engine().clone();
        let rebuilds = self.store.rebuilds_started();
        let purged = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            for r in ranges {
                loop {
                    match engine.purge_tombstones(r, cutoff, 4096) {
                        Ok(p) if p.is_empty() => break,
                        Ok(p) => all.extend(p),
                        Err(_) => break,
                    }
                }
            }
            all
        })
        .await
        .unwrap_or_default();
        if purged.is_empty() {
            return;
        }
        let mut trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        if self.store.rebuilding_trees() || self.store.rebuilds_started() != rebuilds {
            // A rebuild started during the purge: it may have taken over or scanned some of
            // the purged tombstones, and taking them out here would miss its trees (or take
            // out an entry twice). Rebuild from storage, which no longer holds them.
            drop(trees);
            let ranges = self.my_read_ranges();
            tracing::warn!(
                purged = purged.len(),
                "tree rebuild started during a tombstone purge; rebuilding from storage"
            );
            self.store.rebuild_trees_from_storage(ranges);
            return;
        }
        for (key, version) in &purged {
            trees.update(key, Some(*version), None);
        }
        info!(
            purged = purged.len(),
            "purged tombstones past the grace period"
        );
    }
}
