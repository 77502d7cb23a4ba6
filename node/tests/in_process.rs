//! Nodes started in-process on the memory backend, talking over real QUIC on loopback: the
//! coordinator's levels, Unavailable and Timeout, and clock persistence across restarts.

use node::config::{
    AntiEntropyConfig, Durability, HintsConfig, Limits, MemberConfig, NodeConfig, Replication,
    Timeouts, TlsFiles,
};
use node::node::{start, RunningNode};
use proto::message::{ReadOpts, Receipt, WriteOpts};
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
    /// A pool with a node certificate (of no member), for replica requests.
    node_pool: Pool,
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn write_tls(dir: &Path, name: &str, m: &TlsMaterial) -> TlsFiles {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    write_pem(&cert, &m.cert_pem, false).expect("cert");
    write_pem(&key, &m.key_pem, true).expect("key");
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert,
        key,
    }
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
                timeouts: Timeouts {
                    request_ms: 1000,
                    heartbeat_ms: 50,
                    down_after_ms: 300,
                    ..Timeouts::default()
                },
                limits: Limits::default(),
                durability: Durability::default(),
                hints: HintsConfig {
                    check_interval_ms: 100,
                    ..HintsConfig::default()
                },
                // Rounds only when asked (Request::Repair { wait: true }), so tests control them.
                anti_entropy: AntiEntropyConfig {
                    interval_ms: 3_600_000,
                    tombstone_grace_ms: 8_000_000,
                },
                metrics_listen: None,
                seeds: Vec::new(),
                streaming: Default::default(),
                members: members.clone(),
            });
        }
        let client = issue(&ca, "test", Role::Client, "client").expect("client cert");
        let pool = Pool::new(
            client_endpoint(&client).expect("endpoint"),
            Duration::from_secs(1),
        );
        let peer = issue(&ca, "test", Role::Node, "node-99").expect("node cert");
        let node_pool = Pool::new(
            client_endpoint(&peer).expect("endpoint"),
            Duration::from_secs(1),
        );
        let engines: Vec<Arc<MemEngine>> =
            configs.iter().map(|_| Arc::new(MemEngine::new())).collect();
        let mut c = Cluster {
            _dir: dir,
            configs,
            nodes: Vec::new(),
            engines,
            pool,
            node_pool,
        };
        for i in 0..c.configs.len() {
            let n = c.boot(i).await;
            c.nodes.push(Some(n));
        }
        c.wait_all_up().await;
        c
    }

    async fn boot(&self, i: usize) -> RunningNode {
        // The port of a stopped node can be taken meanwhile as an ephemeral port by a client
        // endpoint of a test running in parallel; it is released again soon after.
        let mut tries = 0;
        loop {
            let engine: Arc<dyn Engine> = self.engines[i].clone();
            match start(self.configs[i].clone(), engine).await {
                Ok(n) => return n,
                Err(e) if tries < 50 && e.to_string().contains("in use") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("node {} does not start: {e}", i + 1),
            }
        }
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
        self.pool
            .call(
                self.configs[i].members[i].address,
                req,
                Duration::from_secs(3),
            )
            .await
            .expect("transport")
    }

    async fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown().await;
        }
        self.wait_all_up().await;
    }

    /// Stops node `i`, replaces its storage with an empty one, and starts it again.
    async fn wipe(&mut self, i: usize) {
        self.stop(i).await;
        self.engines[i] = Arc::new(MemEngine::new());
        self.restart(i).await;
    }

    async fn restart(&mut self, i: usize) {
        let n = self.boot(i).await;
        self.nodes[i] = Some(n);
        self.wait_all_up().await;
    }
}

fn put(key: &str, value: &str, c: Consistency) -> Request {
    put_with(key, value, c, WriteOpts::default())
}

fn put_with(key: &str, value: &str, c: Consistency, opts: WriteOpts) -> Request {
    Request::Put {
        key: key.into(),
        value: value.into(),
        consistency: c,
        opts,
    }
}

fn get(key: &str, c: Consistency) -> Request {
    get_with(key, c, ReadOpts::default())
}

fn get_with(key: &str, c: Consistency, opts: ReadOpts) -> Request {
    Request::Get {
        key: key.into(),
        consistency: c,
        opts,
    }
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
            // Through the same coordinator: it awaits its own copy before answering a write.
            let r = c.call(1, get(&key, level)).await;
            assert_eq!(value(&r), Some(&b"v"[..]), "{level}: {r:?}");
        }
    }
    assert_eq!(
        code(&c.call(0, get("k", Consistency::Any)).await),
        Some(ErrorCode::InvalidRequest)
    );
    // A delete reads as not found.
    c.call(
        0,
        Request::Delete {
            key: "key-ONE".into(),
            consistency: Consistency::All,
            opts: WriteOpts::default(),
        },
    )
    .await;
    assert!(matches!(
        c.call(0, get("key-ONE", Consistency::Quorum)).await,
        Response::Value { value: None, .. }
    ));
    // Every replica stored the ALL write.
    for e in &c.engines {
        assert!(e.get(b"key-ALL").expect("get").is_some());
    }

    c.stop(2).await;
    assert!(matches!(
        c.call(0, put("a", "1", Consistency::Quorum)).await,
        Response::Written { acks: 2, .. }
    ));
    assert_eq!(
        value(&c.call(1, get("a", Consistency::Quorum)).await),
        Some(&b"1"[..])
    );
    assert_eq!(
        value(&c.call(1, get("a", Consistency::One)).await),
        Some(&b"1"[..])
    );
    let all = c.call(0, put("a", "2", Consistency::All)).await;
    assert!(
        matches!(&all, Response::Error(e) if e.code == ErrorCode::Unavailable && e.acks == 2 && e.required == 3),
        "{all:?}"
    );
    assert_eq!(
        code(&c.call(0, get("a", Consistency::All)).await),
        Some(ErrorCode::Unavailable)
    );
    // Unavailable wrote nothing.
    assert_eq!(
        value(&c.call(1, get("a", Consistency::Quorum)).await),
        Some(&b"1"[..])
    );

    c.stop(1).await;
    assert_eq!(
        code(&c.call(0, put("b", "1", Consistency::Quorum)).await),
        Some(ErrorCode::Unavailable)
    );
    assert_eq!(
        code(&c.call(0, get("a", Consistency::Quorum)).await),
        Some(ErrorCode::Unavailable)
    );
    assert!(matches!(
        c.call(0, put("b", "1", Consistency::One)).await,
        Response::Written { .. }
    ));

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

/// Restarts in quick succession do not run a node's clock ahead of real time: each used to add
/// a clock reservation (2 s), until peers refused the node's timestamps as too far ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_again_and_again_keeps_its_clock_near_real_time() {
    let mut c = Cluster::start(&["dc1", "dc1", "dc1"], Replication::Simple { rf: 3 }).await;
    let mut last = match c.call(0, put("k", "0", Consistency::All)).await {
        Response::Written { version, .. } => version,
        other => panic!("{other:?}"),
    };
    for round in 1..=2 {
        // Three restarts in a row, each as soon as the previous start returned.
        for _ in 0..3 {
            c.nodes[0].take().expect("node 1 runs").shutdown().await;
            let n = c.boot(0).await;
            c.nodes[0] = Some(n);
        }
        c.wait_all_up().await;
        let clock = c.nodes[0].as_ref().expect("node 1 runs").node.clock.peek();
        let ahead_ms = (clock >> proto::version::HLC_LOGICAL_BITS)
            .saturating_sub(proto::version::wall_millis());
        assert!(
            ahead_ms <= 2_500,
            "restart {round}: node 1's clock is {ahead_ms} ms ahead of real time"
        );
        // Every replica takes a write stamped by the restarted node, above what it issued before.
        match c
            .call(0, put("k", &round.to_string(), Consistency::All))
            .await
        {
            Response::Written { version, .. } => {
                assert!(version > last, "restart {round}: {version:?} <= {last:?}");
                last = version;
            }
            other => panic!("restart {round}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_each_quorum_follow_datacenters() {
    let rf = BTreeMap::from([("dc1".to_string(), 2), ("dc2".to_string(), 2)]);
    let mut c = Cluster::start(
        &["dc1", "dc1", "dc2", "dc2"],
        Replication::PerDatacenter { datacenters: rf },
    )
    .await;
    // LOCAL_* levels promise nothing across datacenters: read back in the writer's datacenter.
    for (level, reader) in [
        (Consistency::LocalQuorum, 1),
        (Consistency::EachQuorum, 2),
        (Consistency::LocalOne, 0),
    ] {
        assert!(
            matches!(
                c.call(0, put("k", "v", level)).await,
                Response::Written { .. }
            ),
            "{level}"
        );
        assert_eq!(
            value(&c.call(reader, get("k", level)).await),
            Some(&b"v"[..]),
            "{level}"
        );
    }
    // dc2 loses a node: its local quorum (2 of 2) is gone, dc1's is not.
    c.stop(3).await;
    assert!(
        matches!(c.call(0, put("k", "w", Consistency::LocalQuorum)).await, Response::Written { acks, .. } if acks >= 2)
    );
    assert_eq!(
        code(&c.call(0, put("k", "w", Consistency::EachQuorum)).await),
        Some(ErrorCode::Unavailable)
    );
    assert_eq!(
        code(&c.call(2, put("k", "w", Consistency::LocalQuorum)).await),
        Some(ErrorCode::Unavailable)
    );
    assert!(matches!(
        c.call(2, put("k", "x", Consistency::LocalOne)).await,
        Response::Written { .. }
    ));
    assert_eq!(
        value(&c.call(0, get("k", Consistency::Quorum)).await),
        Some(&b"x"[..])
    );
}

/// A coordinator's own copy of a write is stored even when the request ends first. Node 1's
/// storage stops answering and its writer's queue holds one write, so the copies of the six
/// writes it coordinates wait (at most two in the writer, one queued, the others waiting to be
/// queued) and every write times out at ONE, which waits for the coordinator's own copy. Once
/// the storage answers again, node 1 holds all six: the copies still waiting to be queued were
/// handed to tasks of their own when their requests ended, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinators_own_copy_outlives_the_request() {
    let mut c = Cluster::start(&["dc1", "dc1", "dc1"], Replication::Simple { rf: 3 }).await;
    c.configs[0].limits.write_queue = 1;
    c.stop(0).await;
    c.restart(0).await;
    c.engines[0].hold_writes();
    let keys = ["held-1", "held-2", "held-3", "held-4", "held-5", "held-6"];
    let replies = futures::future::join_all(
        keys.iter()
            .map(|k| c.call(0, put(k, "v", Consistency::One))),
    )
    .await;
    for r in &replies {
        assert_eq!(code(r), Some(ErrorCode::Timeout), "{r:?}");
    }
    for k in keys {
        for i in 1..3 {
            assert!(local(&c, i, k).is_some(), "node {} lacks {k}", i + 1);
        }
        assert!(local(&c, 0, k).is_none(), "node 1 stored {k} while held");
    }
    c.engines[0].resume_writes();
    let mut missing = keys.to_vec();
    for _ in 0..100 {
        missing.retain(|k| local(&c, 0, k).is_none());
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        missing.is_empty(),
        "node 1 never stored its own copy of {missing:?}"
    );
}

fn local(c: &Cluster, i: usize, key: &str) -> Option<proto::Record> {
    c.engines[i].get(key.as_bytes()).expect("get")
}

async fn status(c: &Cluster, i: usize) -> proto::message::NodeStatus {
    match c.call(i, Request::Status).await {
        Response::Status(s) => *s,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_replay_to_a_returning_replica_and_read_repair_fixes_stale_ones() {
    let mut c = Cluster::start(&["dc1", "dc1", "dc1"], Replication::Simple { rf: 3 }).await;
    c.stop(2).await;
    for i in 0..200 {
        let w = c
            .call(i % 2, put(&format!("h{i}"), "v", Consistency::One))
            .await;
        assert!(matches!(w, Response::Written { .. }), "{w:?}");
    }
    // Hints for a replica known down are stored just after the write is answered.
    let mut pending = 0;
    for _ in 0..100 {
        pending = status(&c, 0)
            .await
            .hints_pending
            .iter()
            .chain(status(&c, 1).await.hints_pending.iter())
            .map(|(_, n)| n)
            .sum::<u64>();
        if pending >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pending, 200, "one hint per write for the down replica");
    c.restart(2).await;
    let mut replayed = false;
    for _ in 0..100 {
        if status(&c, 0).await.hints_pending.is_empty()
            && status(&c, 1).await.hints_pending.is_empty()
        {
            replayed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(replayed, "hints were not replayed");
    for i in 0..200 {
        assert!(
            local(&c, 2, &format!("h{i}")).is_some(),
            "h{i} missing on the returned replica"
        );
    }

    // Read repair: make node 3 stale without hints (write while it is down, then drop hints by
    // wiping the coordinators' view: write directly to two engines with a newer version).
    let newer = proto::Record::value(
        proto::Version {
            hlc: u64::MAX / 2,
            node: 1,
        },
        b"new".to_vec(),
    );
    for i in 0..2 {
        c.engines[i]
            .apply(&[storage::Write {
                key: b"rr".to_vec(),
                record: newer.clone(),
            }])
            .expect("apply");
    }
    assert!(local(&c, 2, "rr").is_none());
    let r = c.call(2, get("rr", Consistency::All)).await;
    assert_eq!(value(&r), Some(&b"new"[..]));
    assert_eq!(
        local(&c, 2, "rr"),
        Some(newer),
        "blocking read repair before the answer"
    );
    assert!(status(&c, 2).await.read_repairs >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_restores_a_wiped_replica_and_deletes_stay_deleted() {
    let mut c = Cluster::start(&["dc1", "dc1", "dc1"], Replication::Simple { rf: 3 }).await;
    for i in 0..500 {
        c.call(0, put(&format!("k{i}"), "v", Consistency::All))
            .await;
    }
    // A delete at QUORUM while node 3 is down, with hints lost: only anti-entropy carries it.
    c.stop(2).await;
    assert!(matches!(
        c.call(
            0,
            Request::Delete {
                key: "k7".into(),
                consistency: Consistency::Quorum,
                opts: WriteOpts::default(),
            }
        )
        .await,
        Response::Written { .. }
    ));
    for i in 0..2 {
        let hints: Vec<_> = c.engines[i]
            .hints(3, None, 100)
            .expect("hints")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        c.engines[i].delete_hints(&hints).expect("drop hints");
    }
    c.restart(2).await;
    assert!(
        local(&c, 2, "k7").is_some_and(|r| !r.is_tombstone()),
        "node 3 still has the old value"
    );
    let report = match c.call(0, Request::Repair { wait: true }).await {
        Response::RepairReport(r) => r,
        other => panic!("{other:?}"),
    };
    assert!(report.keys_pushed >= 1, "{report:?}");
    assert!(
        local(&c, 2, "k7").is_some_and(|r| r.is_tombstone()),
        "tombstone reached node 3"
    );
    assert!(matches!(
        c.call(2, get("k7", Consistency::One)).await,
        Response::Value { value: None, .. }
    ));

    // A wiped replica gets every key and tombstone back from one round it runs itself.
    c.wipe(1).await;
    assert_eq!(c.engines[1].approximate_len(), 0);
    let report = match c.call(1, Request::Repair { wait: true }).await {
        Response::RepairReport(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(report.keys_pulled, 500, "{report:?}");
    for i in 0..500 {
        assert_eq!(
            local(&c, 1, &format!("k{i}")).map(|r| r.is_tombstone()),
            Some(i == 7),
            "k{i}"
        );
    }
    // A second round finds nothing to do.
    match c.call(1, Request::Repair { wait: true }).await {
        Response::RepairReport(r) => assert_eq!(
            (r.pairs_differing, r.keys_pulled, r.keys_pushed),
            (0, 0, 0),
            "{r:?}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_asked_of_a_node_just_started_waits_to_hear_from_its_peers() {
    let mut c = Cluster::start(&["dc1", "dc1", "dc1"], Replication::Simple { rf: 3 }).await;
    for i in 0..100 {
        c.call(0, put(&format!("k{i}"), "v", Consistency::All))
            .await;
    }
    c.stop(0).await;
    c.stop(1).await;
    // Node 1 comes back and is asked for a repair at once, before its failure detector has
    // heard from anyone; node 2 comes back 300 ms later.
    let n = c.boot(0).await;
    c.nodes[0] = Some(n);
    let (report, n2) = tokio::join!(c.call(0, Request::Repair { wait: true }), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.boot(1).await
    });
    c.nodes[1] = Some(n2);
    let report = match report {
        Response::RepairReport(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(report.failures, 0, "{report:?}");
    assert!(report.pairs_compared > 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_is_met_by_a_hint_when_no_replica_is_up() {
    let mut c = Cluster::start(&["dc1", "dc1"], Replication::Simple { rf: 1 }).await;
    let ring = c.configs[0].ring().expect("ring");
    let key = (0..1000)
        .map(|i| format!("any{i}"))
        .find(|k| ring.replicas_for_key(k.as_bytes()) == [2])
        .expect("a key on node 2");
    c.stop(1).await;
    assert_eq!(
        code(&c.call(0, put(&key, "v", Consistency::One)).await),
        Some(ErrorCode::Unavailable)
    );
    assert!(matches!(
        c.call(0, put(&key, "v", Consistency::Any)).await,
        Response::Written { acks: 0, .. }
    ));
    assert!(local(&c, 1, &key).is_none());
    c.restart(1).await;
    for _ in 0..100 {
        if local(&c, 1, &key).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        local(&c, 1, &key).is_some(),
        "the hint was replayed to the replica"
    );
    assert_eq!(
        value(&c.call(0, get(&key, Consistency::One)).await),
        Some(&b"v"[..])
    );
}

/// Stores `record` under `key` directly in node `i`'s storage, bypassing coordination.
fn plant(c: &Cluster, i: usize, key: &str, record: proto::Record) {
    c.engines[i]
        .apply(&[storage::Write {
            key: key.as_bytes().to_vec(),
            record,
        }])
        .expect("apply");
}

/// A version `ms` milliseconds from now (negative: in the past), from node `node`.
fn version_in(ms: i64, node: u32) -> proto::Version {
    let now = proto::version::wall_millis() as i64;
    proto::Version {
        hlc: proto::version::hlc_from_millis((now + ms) as u64),
        node,
    }
}

fn written(r: &Response) -> (proto::Version, Option<Receipt>) {
    match r {
        Response::Written {
            version, receipt, ..
        } => (*version, receipt.as_deref().cloned()),
        other => panic!("not written: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_writes_above_the_newest_version_where_quorum_loses_the_write() {
    let c = Cluster::start(&["dc1", "dc1", "dc1"], Replication::Simple { rf: 3 }).await;
    // Every replica holds a record stamped 1.5 s in this coordinator's future, as a node with a
    // fast clock would have written it.
    let ahead = version_in(1500, 3);
    for key in ["q", "lin"] {
        for i in 0..3 {
            plant(&c, i, key, proto::Record::value(ahead, b"old".to_vec()));
        }
    }
    // QUORUM stamps with the coordinator's clock: below the stored version, so last-write-wins
    // drops the acknowledged write.
    let (v, _) = written(&c.call(0, put("q", "new", Consistency::Quorum)).await);
    assert!(v < ahead, "{v} vs {ahead}");
    assert_eq!(
        value(&c.call(1, get("q", Consistency::Quorum)).await),
        Some(&b"old"[..])
    );
    // LINEARIZABLE asks a majority for the newest version first and stamps above it.
    let opts = WriteOpts {
        receipt: true,
        ..WriteOpts::default()
    };
    let (v, receipt) = written(
        &c.call(0, put_with("lin", "new", Consistency::Linearizable, opts))
            .await,
    );
    assert!(v > ahead, "{v} vs {ahead}");
    let receipt = receipt.expect("receipt");
    assert!(receipt.version_from.len() >= 2, "{receipt:?}");
    assert_eq!(
        value(&c.call(1, get("lin", Consistency::Linearizable)).await),
        Some(&b"new"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_writes_the_newest_version_back_to_a_majority() {
    let c = Cluster::start(&["dc1", "dc1", "dc1"], Replication::Simple { rf: 3 }).await;
    let old = version_in(-2000, 1);
    let new = version_in(-1000, 2);
    plant(&c, 0, "k", proto::Record::value(old, b"old".to_vec()));
    plant(&c, 1, "k", proto::Record::value(old, b"old".to_vec()));
    plant(&c, 2, "k", proto::Record::value(new, b"new".to_vec()));
    let opts = ReadOpts {
        receipt: true,
        ..ReadOpts::default()
    };
    // Node 3 reads itself and one more: they disagree, and the answer waits for the write-back.
    let r = c
        .call(2, get_with("k", Consistency::Linearizable, opts))
        .await;
    assert_eq!(value(&r), Some(&b"new"[..]), "{r:?}");
    let Response::Value {
        receipt: Some(receipt),
        ..
    } = r
    else {
        panic!("no receipt: {r:?}");
    };
    assert_eq!(receipt.version, Some(new));
    assert_eq!(receipt.stale.len(), 1, "{receipt:?}");
    assert_eq!(receipt.repaired, receipt.stale);
    let repaired = receipt.repaired[0] as usize - 1;
    assert_eq!(local(&c, repaired, "k").map(|r| r.version), Some(new));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_op_takes_effect_once_whichever_node_the_retry_reaches() {
    // RF 2 of 3 nodes: each key has a node that is not its replica.
    let c = Cluster::start(&["dc1", "dc1", "dc1"], Replication::Simple { rf: 2 }).await;
    // A key that node 3 does not replicate, written through node 1.
    let mut chosen = None;
    for n in 0..64 {
        let key = format!("op-{n}");
        let opts = WriteOpts {
            op: Some(1000 + n as u128),
            ..WriteOpts::default()
        };
        let (v, _) = written(
            &c.call(0, put_with(&key, "first", Consistency::All, opts))
                .await,
        );
        if local(&c, 2, &key).is_none() {
            chosen = Some((key, 1000 + n as u128, v));
            break;
        }
    }
    let (key, op, first) = chosen.expect("a key node 3 does not replicate");
    let retry = |value: &str, retry: bool| {
        put_with(
            &key,
            value,
            Consistency::All,
            WriteOpts {
                op: Some(op),
                retry,
                receipt: true,
                ..WriteOpts::default()
            },
        )
    };
    // The first coordinator remembers the op.
    let (v, r) = written(&c.call(0, retry("first", false)).await);
    assert_eq!(v, first);
    assert!(r.expect("receipt").reused_op);
    // Node 3 has never seen the op: as a retry it asks the replicas, which remember it.
    let (v, r) = written(&c.call(2, retry("first", true)).await);
    assert_eq!(v, first);
    assert!(r.expect("receipt").reused_op);
    // Even sent as a fresh write, the replicas apply the op only once: they answer with the
    // first version, and nothing new is stored.
    let (v, _) = written(&c.call(2, retry("first", false)).await);
    assert_eq!(v, first);
    for i in 0..2 {
        assert_eq!(local(&c, i, &key).map(|r| r.version), Some(first));
    }
    // The same id for a different write is refused, not given the first write's version.
    for (i, retry) in [(0, false), (2, true)] {
        let reused = WriteOpts {
            op: Some(op),
            retry,
            ..WriteOpts::default()
        };
        let r = c
            .call(i, put_with(&key, "other", Consistency::All, reused))
            .await;
        assert_eq!(code(&r), Some(ErrorCode::InvalidRequest), "{r:?}");
    }
    // A different op on the same key is a new write with a new version.
    let other = WriteOpts {
        op: Some(op + 1_000_000),
        ..WriteOpts::default()
    };
    let (v, _) = written(
        &c.call(2, put_with(&key, "second", Consistency::All, other))
            .await,
    );
    assert!(v > first);
    assert_eq!(
        value(&c.call(0, get(&key, Consistency::All)).await),
        Some(&b"second"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_floor_skips_stale_replicas_and_otherwise_fails_stale() {
    let c = Cluster::start(&["dc1", "dc1", "dc1"], Replication::Simple { rf: 3 }).await;
    let old = version_in(-2000, 1);
    let new = version_in(-1000, 2);
    plant(&c, 0, "s", proto::Record::value(old, b"old".to_vec()));
    plant(&c, 1, "s", proto::Record::value(new, b"new".to_vec()));
    plant(&c, 2, "s", proto::Record::value(new, b"new".to_vec()));
    // ONE through node 1 reads node 1 itself: the stale value (what a session must not see
    // after writing "new").
    assert_eq!(
        value(&c.call(0, get("s", Consistency::One)).await),
        Some(&b"old"[..])
    );
    plant(&c, 0, "s", proto::Record::value(old, b"old".to_vec()));
    // With the session's floor the coordinator asks on until a replica has it.
    let floor = ReadOpts {
        min_version: Some(new),
        receipt: true,
        ..ReadOpts::default()
    };
    let r = c.call(0, get_with("s", Consistency::One, floor)).await;
    assert_eq!(value(&r), Some(&b"new"[..]), "{r:?}");
    // A floor no replica reaches is a clear Stale error, not an older value.
    let beyond = ReadOpts {
        min_version: Some(version_in(-500, 3)),
        ..ReadOpts::default()
    };
    let r = c.call(0, get_with("s", Consistency::One, beyond)).await;
    assert_eq!(code(&r), Some(ErrorCode::Stale), "{r:?}");
    // No record meets a floor only when the floor is a tombstone older than the purge grace
    // period (purged everywhere since); a value's floor never.
    let eleven_days_ago = version_in(-11 * 24 * 3600 * 1000, 3);
    for (tombstone, expect_stale) in [(false, true), (true, false)] {
        let floor = ReadOpts {
            min_version: Some(eleven_days_ago),
            min_is_tombstone: tombstone,
            ..ReadOpts::default()
        };
        let r = c
            .call(0, get_with("never-written", Consistency::One, floor))
            .await;
        assert_eq!(code(&r) == Some(ErrorCode::Stale), expect_stale, "{r:?}");
    }
    // A write with the session's floor is stamped above it, whatever the coordinator's clock.
    let ahead = version_in(1500, 3);
    let after = WriteOpts {
        after: Some(ahead),
        ..WriteOpts::default()
    };
    let (v, _) = written(
        &c.call(1, put_with("s", "mine", Consistency::One, after))
            .await,
    );
    assert!(v > ahead, "{v} vs {ahead}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_name_the_replicas_that_acked_and_those_hinted() {
    let mut c = Cluster::start(&["dc1", "dc1", "dc1"], Replication::Simple { rf: 3 }).await;
    c.stop(2).await;
    let opts = WriteOpts {
        receipt: true,
        ..WriteOpts::default()
    };
    let (v, r) = written(
        &c.call(0, put_with("r", "v", Consistency::Quorum, opts))
            .await,
    );
    let r = r.expect("receipt");
    assert_eq!(r.version, Some(v));
    let mut acked = r.acked.clone();
    acked.sort_unstable();
    assert_eq!(acked, vec![1, 2], "{r:?}");
    assert_eq!(r.hinted, vec![3], "{r:?}");
    assert!(r.failed.is_empty(), "{r:?}");
    // Without asking, no receipt travels.
    assert!(
        written(&c.call(0, put("r", "w", Consistency::Quorum)).await)
            .1
            .is_none()
    );
}

/// A coordinator's batch of replica writes: each write has its own outcome, in order. One stamped
/// too far ahead is refused alone (`ClockSkew`); an older one is acknowledged but not applied;
/// the ops are remembered under the coordinator's fingerprints. Clients may not send batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_replica_writes_is_answered_write_by_write() {
    use proto::message::{OpId, ReplicaWriteItem, ReplicaWriteOutcome};
    use proto::{Record, Version};
    let c = Cluster::start(&["dc1", "dc1", "dc1"], Replication::Simple { rf: 3 }).await;
    let now_hlc = || {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_millis() as u64;
        ms << proto::version::HLC_LOGICAL_BITS
    };
    let item = |key: &str, hlc: u64, op: Option<OpId>, fingerprint: u64| ReplicaWriteItem {
        key: key.as_bytes().to_vec(),
        record: Record::value(
            Version { hlc, node: 7 },
            format!("{key}@{hlc}").into_bytes(),
        ),
        op,
        fingerprint,
    };
    let at = c.configs[0].members[0].address;
    async fn call(pool: &Pool, at: SocketAddr, writes: Vec<ReplicaWriteItem>) -> Response {
        pool.call(
            at,
            Request::ReplicaWrites { writes },
            Duration::from_secs(3),
        )
        .await
        .expect("transport")
    }
    let now = now_hlc();
    let stored = call(&c.node_pool, at, vec![item("older", now, None, 0)]).await;
    assert!(
        matches!(&stored, Response::ReplicaWriteAcks { outcomes } if outcomes.len() == 1),
        "{stored:?}"
    );
    let ahead = now + (60_000 << proto::version::HLC_LOGICAL_BITS);
    let resp = call(
        &c.node_pool,
        at,
        vec![
            item("new", now, Some(42), 4242),
            item("ahead", ahead, None, 0),
            item("older", now - 1, None, 0),
        ],
    )
    .await;
    let Response::ReplicaWriteAcks { outcomes } = &resp else {
        panic!("{resp:?}")
    };
    assert_eq!(
        outcomes[0],
        ReplicaWriteOutcome::Acked {
            applied: true,
            duplicate: None
        }
    );
    assert!(
        matches!(&outcomes[1], ReplicaWriteOutcome::Failed(e) if e.code == ErrorCode::ClockSkew),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[2],
        ReplicaWriteOutcome::Acked {
            applied: false,
            duplicate: None
        }
    );
    assert_eq!(outcomes.len(), 3);
    let engine = &c.engines[0];
    assert_eq!(
        engine.get(b"new").expect("get").map(|r| r.version.hlc),
        Some(now)
    );
    assert_eq!(engine.get(b"ahead").expect("get"), None);
    assert_eq!(
        engine.get(b"older").expect("get").map(|r| r.version.hlc),
        Some(now)
    );
    // The op is remembered with the fingerprint the batch carried.
    let lookup = |fingerprint| Request::OpLookup {
        op: 42,
        fingerprint,
    };
    let found = c
        .node_pool
        .call(at, lookup(4242), Duration::from_secs(3))
        .await;
    assert_eq!(
        found.expect("lookup"),
        Response::OpVersion {
            version: Some(Version { hlc: now, node: 7 }),
            conflict: false
        }
    );
    let other = c
        .node_pool
        .call(at, lookup(1), Duration::from_secs(3))
        .await;
    assert!(
        matches!(
            other.expect("lookup"),
            Response::OpVersion { conflict: true, .. }
        ),
        "another fingerprint is a conflict"
    );
    // A client certificate may not send replica writes.
    let refused = call(&c.pool, at, vec![item("client", now, None, 0)]).await;
    assert_eq!(code(&refused), Some(ErrorCode::Unauthorized), "{refused:?}");
    assert_eq!(engine.get(b"client").expect("get"), None);
}
