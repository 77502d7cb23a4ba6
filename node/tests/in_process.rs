//! Nodes started in-process on the memory backend, talking over real QUIC on loopback: the
//! coordinator's levels, Unavailable and Timeout, and clock persistence across restarts.

use node::config::{Limits, MemberConfig, NodeConfig, Replication, Timeouts, TlsFiles};
use node::node::{start, RunningNode};
use proto::tls::{generate_ca, issue, write_pem, Role, TlsMaterial};
use proto::transport::{client_endpoint, Pool};
use proto::{Consistency, ErrorCode, Request, Response};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use storage::{Engine, MemEngine};

struct Cluster {
    _dir: tempfile::TempDir,
    configs: Vec<NodeConfig>,
    nodes: Vec<Option<RunningNode>>,
    engines: Vec<Arc<MemEngine>>,
    pool: Pool,
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("free port")
}

fn write_tls(dir: &Path, name: &str, m: &TlsMaterial) -> TlsFiles {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    write_pem(&cert, &m.cert_pem, false).expect("cert");
    write_pem(&key, &m.key_pem, true).expect("key");
    TlsFiles { ca: dir.join("ca.pem"), cert, key }
}

impl Cluster {
    /// `dcs[i]` is node i+1's datacenter; `replication` as configured.
    async fn start(dcs: &[&str], replication: Replication) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = generate_ca("test").expect("ca");
        write_pem(&dir.path().join("ca.pem"), &ca.cert_pem, false).expect("ca");
        let members: Vec<MemberConfig> = dcs
            .iter()
            .enumerate()
            .map(|(i, dc)| MemberConfig {
                id: i as u32 + 1,
                address: SocketAddr::from(([127, 0, 0, 1], free_port())),
                datacenter: dc.to_string(),
                rack: format!("rack{}", i % 3 + 1),
                vnodes: 16,
                tokens: vec![],
            })
            .collect();
        let mut configs = Vec::new();
        for m in &members {
            let tls = issue(&ca, "test", Role::Node, &format!("node-{}", m.id)).expect("node cert");
            configs.push(NodeConfig {
                cluster_name: "test".into(),
                node_id: m.id,
                listen: None,
                data_dir: dir.path().join(format!("data-{}", m.id)),
                tls: write_tls(dir.path(), &format!("node-{}", m.id), &tls),
                replication: replication.clone(),
                timeouts: Timeouts { request_ms: 1000, heartbeat_ms: 50, down_after_ms: 300, ..Timeouts::default() },
                limits: Limits::default(),
                members: members.clone(),
            });
        }
        let client = issue(&ca, "test", Role::Client, "client").expect("client cert");
        let pool = Pool::new(client_endpoint(&client).expect("endpoint"), Duration::from_secs(1));
        let engines: Vec<Arc<MemEngine>> = configs.iter().map(|_| Arc::new(MemEngine::new())).collect();
        let mut c = Cluster { _dir: dir, configs, nodes: Vec::new(), engines, pool };
        for i in 0..c.configs.len() {
            let n = c.boot(i).await;
            c.nodes.push(Some(n));
        }
        c.wait_all_up().await;
        c
    }

    async fn boot(&self, i: usize) -> RunningNode {
        let engine: Arc<dyn Engine> = self.engines[i].clone();
        start(self.configs[i].clone(), engine).await.expect("node starts")
    }

    async fn wait_all_up(&self) {
        for _ in 0..100 {
            let mut all = true;
            for (i, n) in self.nodes.iter().enumerate() {
                if n.is_none() {
                    continue;
                }
                match self.call(i, Request::Status).await {
                    Response::Status(s) => {
                        let live = |id: u32| self.nodes[id as usize - 1].is_some();
                        all &= s.peers.iter().all(|p| p.up == live(p.id));
                    }
                    _ => all = false,
                }
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cluster did not converge on liveness");
    }

    async fn call(&self, i: usize, req: Request) -> Response {
        self.pool.call(self.configs[i].members[i].address, req, Duration::from_secs(3)).await.expect("transport")
    }

    async fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown().await;
        }
        self.wait_all_up().await;
    }

    async fn restart(&mut self, i: usize) {
        let n = self.boot(i).await;
        self.nodes[i] = Some(n);
        self.wait_all_up().await;
    }
}

fn put(key: &str, value: &str, c: Consistency) -> Request {
    Request::Put { key: key.into(), value: value.into(), consistency: c }
}

fn get(key: &str, c: Consistency) -> Request {
    Request::Get { key: key.into(), consistency: c }
}

fn code(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error(e) => Some(e.code),
        _ => None,
    }
}

fn value(r: &Response) -> Option<&[u8]> {
    match r {
        Response::Value { value: Some(v), .. } => Some(v),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_level_writes_and_reads_and_failures_are_reported() {
    let mut c = Cluster::start(&["dc1", "dc1", "dc1"], Replication::Simple { rf: 3 }).await;
    for level in Consistency::ALL_LEVELS {
        let key = format!("key-{level}");
        let w = c.call(1, put(&key, "v", level)).await;
        assert!(matches!(w, Response::Written { .. }), "{level}: {w:?}");
        if level.valid_for_reads() {
            let r = c.call(2, get(&key, level)).await;
            assert_eq!(value(&r), Some(&b"v"[..]), "{level}: {r:?}");
        }
    }
    assert_eq!(code(&c.call(0, get("k", Consistency::Any)).await), Some(ErrorCode::InvalidRequest));
    // A delete reads as not found.
    c.call(0, Request::Delete { key: "key-ONE".into(), consistency: Consistency::All }).await;
    assert!(matches!(c.call(0, get("key-ONE", Consistency::Quorum)).await, Response::Value { value: None, .. }));
    // Every replica stored the ALL write.
    for e in &c.engines {
        assert!(e.get(b"key-ALL").expect("get").is_some());
    }

    c.stop(2).await;
    assert!(matches!(c.call(0, put("a", "1", Consistency::Quorum)).await, Response::Written { acks: 2, .. }));
    assert_eq!(value(&c.call(1, get("a", Consistency::Quorum)).await), Some(&b"1"[..]));
    assert_eq!(value(&c.call(1, get("a", Consistency::One)).await), Some(&b"1"[..]));
    let all = c.call(0, put("a", "2", Consistency::All)).await;
    assert!(matches!(&all, Response::Error(e) if e.code == ErrorCode::Unavailable && e.acks == 2 && e.required == 3), "{all:?}");
    assert_eq!(code(&c.call(0, get("a", Consistency::All)).await), Some(ErrorCode::Unavailable));
    // Unavailable wrote nothing.
    assert_eq!(value(&c.call(1, get("a", Consistency::Quorum)).await), Some(&b"1"[..]));

    c.stop(1).await;
    assert_eq!(code(&c.call(0, put("b", "1", Consistency::Quorum)).await), Some(ErrorCode::Unavailable));
    assert_eq!(code(&c.call(0, get("a", Consistency::Quorum)).await), Some(ErrorCode::Unavailable));
    assert!(matches!(c.call(0, put("b", "1", Consistency::One)).await, Response::Written { .. }));

    // A restarted node's clock starts above every version it issued before.
    let before = match c.call(0, put("c", "1", Consistency::One)).await {
        Response::Written { version, .. } => version,
        other => panic!("{other:?}"),
    };
    c.stop(0).await;
    c.restart(0).await;
    match c.call(0, put("c", "2", Consistency::One)).await {
        Response::Written { version, .. } => assert!(version > before),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_each_quorum_follow_datacenters() {
    let rf = BTreeMap::from([("dc1".to_string(), 2), ("dc2".to_string(), 2)]);
    let mut c = Cluster::start(&["dc1", "dc1", "dc2", "dc2"], Replication::PerDatacenter { datacenters: rf }).await;
    // LOCAL_* levels promise nothing across datacenters: read back in the writer's datacenter.
    for (level, reader) in [(Consistency::LocalQuorum, 1), (Consistency::EachQuorum, 2), (Consistency::LocalOne, 0)] {
        assert!(matches!(c.call(0, put("k", "v", level)).await, Response::Written { .. }), "{level}");
        assert_eq!(value(&c.call(reader, get("k", level)).await), Some(&b"v"[..]), "{level}");
    }
    // dc2 loses a node: its local quorum (2 of 2) is gone, dc1's is not.
    c.stop(3).await;
    assert!(matches!(c.call(0, put("k", "w", Consistency::LocalQuorum)).await, Response::Written { acks, .. } if acks >= 2));
    assert_eq!(code(&c.call(0, put("k", "w", Consistency::EachQuorum)).await), Some(ErrorCode::Unavailable));
    assert_eq!(code(&c.call(2, put("k", "w", Consistency::LocalQuorum)).await), Some(ErrorCode::Unavailable));
    assert!(matches!(c.call(2, put("k", "x", Consistency::LocalOne)).await, Response::Written { .. }));
    assert_eq!(value(&c.call(0, get("k", Consistency::Quorum)).await), Some(&b"x"[..]));
}
