//! A 3-node, RF 3 cluster of real `ringkv-node` processes started through the launcher, with a
//! connected client: the harness of the tests that drive a cluster as a user's program would
//! (self-healing, consistency guarantees).

#![allow(dead_code)] // Each test file uses its own subset of these helpers.

use client::cluster_dir::{ClusterDir, CreateOptions};
use client::launcher::{ClusterGuard, LocalCluster};
use client::Client;
use proto::Consistency;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Clusters of concurrently running tests would starve each other's heartbeats on 2 cores.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running cluster (stopped on drop) and a client of it.
pub struct Harness {
    pub cluster: ClusterGuard,
    pub client: Arc<Client>,
    _tmp: tempfile::TempDir,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

/// Starts 3 nodes, RF 3, with `extra` appended to every node's configuration.
pub async fn start(extra: &str) -> Harness {
    let serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let bin = super::node_bin();
    assert!(
        bin.is_file(),
        "missing {}: run `cargo build --release --workspace --bins` first",
        bin.display()
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = ClusterDir::new(tmp.path().join("cluster")).expect("cluster dir");
    let opts = CreateOptions {
        nodes: 3,
        rf: 3,
        vnodes: 16,
        base_port: 0,
        ..CreateOptions::default()
    };
    let cluster = LocalCluster::create(dir, &opts)
        .expect("create")
        .with_node_bin(bin);
    for id in cluster.node_ids() {
        let path = cluster.dir().node_config(id);
        let mut text = std::fs::read_to_string(&path).expect("node.toml");
        text.push_str(extra);
        std::fs::write(&path, text).expect("patch node.toml");
    }
    let cluster = cluster.into_guard();
    cluster.start_all().expect("start");
    cluster
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("ready");
    let client = Arc::new(cluster.client().await.expect("client"));
    Harness {
        cluster,
        client,
        _tmp: tmp,
        _serial: serial,
    }
}

impl Harness {
    /// Writes `keys` with bounded concurrency; every write must succeed.
    pub async fn write_all(&self, keys: impl Iterator<Item = String>, level: Consistency) {
        let keys: Vec<String> = keys.collect();
        let mut tasks = Vec::new();
        for chunk in keys.chunks(keys.len().div_ceil(32).max(1)) {
            let (client, chunk) = (self.client.clone(), chunk.to_vec());
            tasks.push(tokio::spawn(async move {
                for k in chunk {
                    client
                        .put(k.as_bytes(), format!("value-{k}").as_bytes(), level)
                        .await
                        .unwrap_or_else(|e| panic!("put {k}: {e}"));
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer task");
        }
    }

    pub async fn hints_for(&self, target: u32) -> u64 {
        let mut total = 0;
        for id in self.cluster.node_ids() {
            if let Ok(s) = self.client.status(id).await {
                total += s
                    .hints_pending
                    .iter()
                    .filter(|(t, _)| *t == target)
                    .map(|(_, n)| n)
                    .sum::<u64>();
            }
        }
        total
    }

    /// Waits until every live node sees `id` as `up` (bounded).
    pub async fn wait_seen(&self, id: u32, up: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let mut all = true;
            for other in self.cluster.node_ids().into_iter().filter(|o| *o != id) {
                match self.client.status(other).await {
                    Ok(s) => all &= s.peers.iter().any(|p| p.id == id && p.up == up),
                    Err(_) => all = false,
                }
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "node {id} not seen {} in time",
            if up { "up" } else { "down" }
        );
    }

    pub async fn restart(&self, id: u32) {
        self.cluster.start_node(id).expect("start node");
        self.cluster
            .wait_nodes_ready(&[id], Duration::from_secs(30))
            .await
            .expect("node ready");
        self.wait_seen(id, true).await;
        // ...and until it sees the others up: a repair or a coordinator on it goes by its own
        // failure detector, which has not heard from anyone right after the start.
        let others: Vec<u32> = self
            .cluster
            .node_ids()
            .into_iter()
            .filter(|o| *o != id)
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sees_all = match self.client.status(id).await {
                Ok(s) => others
                    .iter()
                    .all(|o| s.peers.iter().any(|p| p.id == *o && p.up)),
                Err(_) => false,
            };
            if sees_all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} does not see its peers up in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
