//! Prometheus metrics over HTTP: `GET /metrics` on the configured address answers the node's
//! counters in the Prometheus text format. A deliberately tiny HTTP/1.0 responder: one request
//! per connection, the request head bounded in size and time.

use crate::node::Node;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::warn;

/// Largest request head read.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// The metrics text of `node`.
pub fn render(node: &Node) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(
            out,
            "# HELP ringkv_{name} {help}\n# TYPE ringkv_{name} {kind}"
        );
        for (labels, v) in samples {
            let _ = writeln!(out, "ringkv_{name}{labels} {v}");
        }
    };
    let one = |v: u64| vec![(String::new(), v)];
    let st = node.status();
    metric(
        "coordinated_requests_total",
        "counter",
        "Client requests coordinated by this node.",
        &one(st.coordinated),
    );
    let stats = &node.store.stats;
    metric(
        "storage_batches_total",
        "counter",
        "Write batches applied to storage (one WriteBatch each).",
        &one(stats.batches.load(Ordering::Relaxed)),
    );
    metric(
        "storage_writes_total",
        "counter",
        "Writes applied to storage, over all batches.",
        &one(stats.writes.load(Ordering::Relaxed)),
    );
    metric(
        "wal_syncs_total",
        "counter",
        "Times the write-ahead log was synced: every batch in sync mode, every tick in periodic mode.",
        &one(stats.wal_syncs.load(Ordering::Relaxed)),
    );
    metric(
        "records",
        "gauge",
        "Approximate records stored, tombstones included.",
        &one(st.records),
    );
    let peers: Vec<(String, u64)> = st
        .peers
        .iter()
        .map(|p| (format!("{{peer=\"{}\"}}", p.id), u64::from(p.up)))
        .collect();
    metric(
        "peer_up",
        "gauge",
        "1 when the failure detector considers the peer up.",
        &peers,
    );
    let hints: Vec<(String, u64)> = st
        .hints_pending
        .iter()
        .map(|(t, n)| (format!("{{target=\"{t}\"}}",), *n))
        .collect();
    metric(
        "hints_pending",
        "gauge",
        "Hints stored here, per target node.",
        &hints,
    );
    metric(
        "hints_stored_total",
        "counter",
        "Hints written.",
        &one(node.hint_stats.stored.load(Ordering::Relaxed)),
    );
    metric(
        "hints_replayed_total",
        "counter",
        "Hints delivered and acknowledged.",
        &one(st.hints_replayed),
    );
    metric(
        "hints_dropped_total",
        "counter",
        "Hints dropped (expired or over the bound).",
        &one(st.hints_dropped),
    );
    metric(
        "read_repairs_total",
        "counter",
        "Stale replicas repaired by reads.",
        &one(st.read_repairs),
    );
    metric(
        "speculative_reads_total",
        "counter",
        &format!(
            "Spare replicas asked because a read was short of its level after {} ms.",
            crate::coordinator::SPECULATE_AFTER.as_millis()
        ),
        &one(node.stats.speculative_reads.load(Ordering::Relaxed)),
    );
    metric(
        "replica_write_batches_total",
        "counter",
        "Batches of replica writes this node sent as coordinator.",
        &one(node.replica_batches.batches.load(Ordering::Relaxed)),
    );
    metric(
        "replica_writes_batched_total",
        "counter",
        "Replica writes this node sent in those batches.",
        &one(node.replica_batches.batched_writes.load(Ordering::Relaxed)),
    );
    metric(
        "anti_entropy_keys_repaired_total",
        "counter",
        "Keys repaired by anti-entropy.",
        &one(st.keys_repaired),
    );
    if let Some((ago, r)) = &st.last_repair {
        metric(
            "anti_entropy_last_round_age_seconds",
            "gauge",
            "Seconds since the last anti-entropy round.",
            &one(*ago),
        );
        metric(
            "anti_entropy_last_round_millis",
            "gauge",
            "Duration of the last anti-entropy round.",
            &one(r.millis),
        );
        metric(
            "anti_entropy_last_round_bytes",
            "gauge",
            "Bytes exchanged by the last anti-entropy round.",
            &one(r.bytes_exchanged),
        );
    }
    out
}

/// Serves `GET /metrics` on `addr` until the task is aborted.
pub async fn serve(node: Arc<Node>, addr: SocketAddr) {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%addr, error = %e, "metrics endpoint not started");
            return;
        }
    };
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            let read = tokio::time::timeout(Duration::from_secs(2), async {
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD_BYTES {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            let (status, body) = if read.is_ok() && head.starts_with(b"GET /metrics") {
                ("200 OK", render(&node))
            } else {
                ("404 Not Found", "only GET /metrics is served\n".to_string())
            };
            let resp = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
