//! Hinted handoff. When a replica is down, or does not acknowledge a write in time, the
//! coordinator keeps the write as a durable hint in its own storage. A replay task per target
//! watches the failure detector and, once the target is up, sends its hints oldest first in
//! bounded batches, throttled to a rate so client requests keep their latency; a hint is deleted
//! only after the target acknowledged it. Hints older than the window are dropped (anti-entropy
//! repairs what they covered), and each target's hints are bounded.

use crate::node::Node;
use proto::message::KeyRecord;
use proto::version::wall_millis;
use proto::{Record, Request, Response};
use ring::NodeId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Counters of hinted handoff.
#[derive(Default)]
pub struct HintStats {
    /// Hints written.
    pub stored: AtomicU64,
    /// Hints delivered and acknowledged.
    pub replayed: AtomicU64,
    /// Hints dropped: expired, or refused because the target's bound was reached.
    pub dropped: AtomicU64,
}

impl Node {
    /// Stores a hint for `target`. Returns whether it was stored (false when hints are disabled or
    /// the target's bound is reached, in which case anti-entropy is left to repair the replica).
    pub async fn store_hint(
        self: &Arc<Self>,
        target: NodeId,
        key: Vec<u8>,
        record: Record,
    ) -> bool {
        let cfg = &self.cfg.hints;
        if !cfg.enabled {
            return false;
        }
        let engine = self.store.engine().clone();
        let max = cfg.max_per_target;
        let res = tokio::task::spawn_blocking(move || {
            let pending = engine
                .hint_targets()?
                .into_iter()
                .find(|(t, _)| *t == target)
                .map_or(0, |(_, n)| n);
            if pending >= max {
                return Ok(false);
            }
            engine
                .put_hint(target, &key, &record, wall_millis())
                .map(|_| true)
        })
        .await;
        match res {
            Ok(Ok(true)) => {
                self.hint_stats.stored.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(Ok(false)) => {
                self.hint_stats.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Ok(Err(e)) => {
                warn!(target, error = %e, "could not store hint");
                false
            }
            Err(_) => false,
        }
    }

    /// Hints pending per target.
    pub fn hints_pending(&self) -> Vec<(NodeId, u64)> {
        self.store.engine().hint_targets().unwrap_or_default()
    }

    /// Replays hints to `target` forever: whenever it is up and hints are pending, one pass
    /// delivers all of them.
    pub async fn replay_hints_to(self: Arc<Self>, target: NodeId) {
        let check_every = Duration::from_millis(self.cfg.hints.check_interval_ms);
        loop {
            tokio::time::sleep(check_every).await;
            let pending = self
                .hints_pending()
                .into_iter()
                .any(|(t, n)| t == target && n > 0);
            if pending && self.detector.is_up(target) {
                match self.replay_pass(target).await {
                    Ok(n) if n > 0 => debug!(target, replayed = n, "hint replay pass done"),
                    Ok(_) => {}
                    Err(e) => debug!(target, error = %e, "hint replay pass stopped"),
                }
            }
        }
    }

    /// One pass: drops expired hints, then sends every remaining hint for `target`, batch by
    /// batch, at most `replay-rate` hints per second. Returns how many were delivered.
    pub async fn replay_pass(self: &Arc<Self>, target: NodeId) -> Result<u64, String> {
        let cfg = self.cfg.hints.clone();
        let addr = *self.view().addrs.get(&target).ok_or("unknown target")?;
        let engine = self.store.engine().clone();
        let cutoff = wall_millis().saturating_sub(cfg.window_ms);
        let e2 = engine.clone();
        let expired = tokio::task::spawn_blocking(move || e2.drop_hints_older_than(target, cutoff))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if expired > 0 {
            warn!(
                target,
                expired, "dropped hints older than the window; anti-entropy will repair"
            );
            self.hint_stats
                .dropped
                .fetch_add(expired, Ordering::Relaxed);
        }
        let mut delivered = 0u64;
        let started = Instant::now();
        loop {
            let e2 = engine.clone();
            let batch = cfg.replay_batch;
            let hints = tokio::task::spawn_blocking(move || e2.hints(target, None, batch))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            if hints.is_empty() {
                return Ok(delivered);
            }
            // Keep the batch under the message size: the hints left out come first next time.
            let mut bytes = 0;
            let fits = hints
                .iter()
                .take_while(|(_, h)| {
                    bytes += h.key.len() + h.record.value.as_ref().map_or(0, Vec::len) + 32;
                    bytes <= proto::limits::MAX_BATCH_BYTES
                })
                .count()
                .max(1);
            let (ids, writes): (Vec<_>, Vec<_>) = hints
                .into_iter()
                .take(fits)
                .map(|(id, h)| {
                    (
                        id,
                        KeyRecord {
                            key: h.key,
                            record: h.record,
                        },
                    )
                })
                .unzip();
            let n = writes.len() as u64;
            let timeout = Duration::from_millis(self.cfg.timeouts.request_ms);
            match self
                .pool
                .call(addr, Request::ReplicaWriteBatch { writes }, timeout)
                .await
            {
                Ok(Response::ReplicaAcks { applied }) if applied.len() as u64 == n => {}
                Ok(other) => return Err(format!("target answered {other:?}")),
                Err(e) => return Err(e.to_string()),
            }
            self.detector.record_ok(target);
            let e2 = engine.clone();
            tokio::task::spawn_blocking(move || e2.delete_hints(&ids))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            delivered += n;
            self.hint_stats.replayed.fetch_add(n, Ordering::Relaxed);
            // Throttle: never faster than the configured rate, averaged over the pass.
            let due = Duration::from_secs_f64(delivered as f64 / cfg.replay_rate.max(1) as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}
