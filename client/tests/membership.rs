//! Membership changes on real `ringkv-node` processes, driven through the `ringkv` CLI as a user
//! would: a cluster grows from 3 to 5 nodes and shrinks back to 3 under QUORUM load without a
//! failed request or a lost write; a killed node is replaced and the new node ends with all of
//! its data; nodes started from a seed learn each other; a node restarted on a new address is
//! recognised by its id; a join's streaming resumes from its saved cursors after the joining node
//! is killed, and goes on after a source is killed and restarted.

mod common;

use client::client::membership_at;
use client::launcher::StopSignal;
use client::{Client, ClientError};
use common::harness::start;
use common::ringkv_bin;
use proto::membership::MembershipOp;
use proto::Consistency;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs `ringkv --cluster-dir DIR args...` off the runtime and returns (exit code, stdout).
async fn cli(dir: &Path, args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(ringkv_bin());
    cmd.arg("--cluster-dir").arg(dir).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run ringkv"))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!(
        "$ ringkv {}\n{stdout}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), stdout)
}

fn value_of(key: &str) -> Vec<u8> {
    format!("value-{key}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_to_five_and_shrink_to_three_under_quorum_load_loses_nothing() {
    let mut h = start("").await;
    let dir = h.cluster.dir().root().to_path_buf();
    h.write_all((0..3000).map(|i| format!("pre-{i}")), Consistency::Quorum)
        .await;

    // Load: writers and readers at QUORUM for the whole test; every failure is recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let ops = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (client, stop, acked, failures, ops) = (
            h.client.clone(),
            stop.clone(),
            acked.clone(),
            failures.clone(),
            ops.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            // Bounded: at most 200,000 operations per task, and the test stops them sooner.
            while !stop.load(Ordering::Relaxed) && i < 200_000 {
                let key = format!("live-{w}-{i}");
                match client
                    .put(key.as_bytes(), &value_of(&key), Consistency::Quorum)
                    .await
                {
                    Ok(_) => acked.lock().unwrap().push(key),
                    Err(e) => failures.lock().unwrap().push(format!("put {key}: {e}")),
                }
                let old = format!("pre-{}", (i * 7 + w) % 3000);
                match client.get(old.as_bytes(), Consistency::Quorum).await {
                    Ok(r) if r.value == value_of(&old) => {}
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("get {old}: wrong value {:?}", r.value)),
                    Err(e) => failures.lock().unwrap().push(format!("get {old}: {e}")),
                }
                ops.fetch_add(2, Ordering::Relaxed);
                i += 1;
            }
        }));
    }

    // 3 -> 4 -> 5 with `cluster add`, then 5 -> 4 -> 3 with `cluster leave` + `commit`.
    for _ in 0..2 {
        let (code, out) = cli(&dir, &["cluster", "add", "--timeout-secs", "120"]).await;
        assert_eq!(code, 0, "cluster add failed");
        assert!(out.contains("complete"), "{out}");
    }
    h.cluster.reload();
    assert_eq!(h.cluster.node_ids(), vec![1, 2, 3, 4, 5]);
    for leaving in ["1", "2"] {
        let (code, out) = cli(&dir, &["cluster", "leave", leaving]).await;
        assert_eq!(code, 0, "leave refused");
        assert!(out.contains(&format!("leave node {leaving}")), "{out}");
        let (code, out) = cli(&dir, &["cluster", "commit", "--timeout-secs", "120"]).await;
        assert_eq!(code, 0, "commit failed");
        assert!(
            out.contains(&format!("node {leaving} is out of the ring")),
            "{out}"
        );
    }
    h.cluster.reload();
    assert_eq!(h.cluster.node_ids(), vec![3, 4, 5]);
    // A little more load on the final ring, then stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("load task");
    }
    let failures = failures.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} operations under load, {} acknowledged writes, {} failures",
        ops.load(Ordering::Relaxed),
        acked.len(),
        failures.len()
    );
    assert!(acked.len() > 100, "the load did not run: {}", acked.len());
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    // The long-lived client learned the new ring: the nodes that left are no longer routed to.
    let mut routed: Vec<u32> = h
        .client
        .topology()
        .members
        .iter()
        .map(|m| m.member.id)
        .collect();
    routed.sort_unstable();
    assert_eq!(
        routed,
        vec![3, 4, 5],
        "the load's client still routes by an old ring"
    );

    // Every acknowledged write, and every preloaded key, is readable at QUORUM from the final
    // three-node ring (a fresh client learns it).
    let cfg = h
        .cluster
        .client_config(Duration::from_secs(5))
        .expect("client config");
    let fresh = Client::connect(cfg)
        .await
        .expect("connect to the final ring");
    let members: Vec<u32> = fresh
        .topology()
        .members
        .iter()
        .map(|m| m.member.id)
        .collect();
    assert_eq!(members, vec![3, 4, 5]);
    for key in acked
        .iter()
        .cloned()
        .chain((0..3000).map(|i| format!("pre-{i}")))
    {
        let got = fresh
            .get(key.as_bytes(), Consistency::Quorum)
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"));
        assert_eq!(got.value, value_of(&key), "key {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_ends_with_all_data_of_the_dead_node() {
    let mut h = start("").await;
    let dir = h.cluster.dir().root().to_path_buf();
    let keys: Vec<String> = (0..2000).map(|i| format!("r-{i}")).collect();
    h.write_all(keys.iter().cloned(), Consistency::All).await;
    h.cluster
        .stop_node(3, StopSignal::Kill)
        .expect("kill node 3");
    h.wait_seen(3, false).await;
    // Replacing a live node is refused.
    let (code, _) = cli(&dir, &["cluster", "replace", "2", "--with", "127.0.0.1:9"]).await;
    assert_ne!(code, 0, "replacing a live node must be refused");
    let (code, out) = cli(
        &dir,
        &["cluster", "add", "--replace", "3", "--timeout-secs", "120"],
    )
    .await;
    assert_eq!(code, 0, "cluster add --replace failed");
    assert!(out.contains("replace dead node 3 by node 4"), "{out}");
    h.cluster.reload();
    assert_eq!(h.cluster.node_ids(), vec![1, 2, 4]);
    let cfg = h
        .cluster
        .client_config(Duration::from_secs(5))
        .expect("client config");
    let fresh = Client::connect(cfg).await.expect("connect");
    // Node 4 holds, by itself, every key node 3 held (RF 3 of 3: all of them).
    for key in &keys {
        assert_holds(&fresh, 4, key).await;
    }
    // And it serves as a replica: ALL now means nodes 1, 2 and 4.
    fresh
        .put(b"after-replace", b"x", Consistency::All)
        .await
        .expect("ALL write on the new ring");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_nodes_learn_each_other_and_a_moved_node_is_known_by_its_id() {
    let mut h = start("").await;
    // Two nodes started from the seeds, not joined: within seconds each knows the other's
    // address and runs the cluster's ring.
    let started = Instant::now();
    let (a, b) = start_two_seeded(&mut h);
    let pool = admin_pool(&h);
    let ring_epoch = membership_at(
        &pool,
        h.cluster.address(1).unwrap(),
        MembershipOp::Show,
        Duration::from_secs(2),
    )
    .await
    .expect("show")
    .ring
    .epoch;
    let knows = |v: &proto::membership::MembershipView, id: u32, addr: String| {
        v.endpoints
            .iter()
            .any(|(e, _)| e.id == id && e.addr == addr)
    };
    loop {
        let va = membership_at(&pool, a.address, MembershipOp::Show, Duration::from_secs(2)).await;
        let vb = membership_at(&pool, b.address, MembershipOp::Show, Duration::from_secs(2)).await;
        if let (Ok(va), Ok(vb)) = (va, vb) {
            if knows(&va, b.id, b.address.to_string())
                && knows(&vb, a.id, a.address.to_string())
                && va.ring.epoch == ring_epoch
                && vb.ring.epoch == ring_epoch
            {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "seeded nodes did not learn each other within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "two seeded nodes learned each other in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    // They own nothing: a client's topology still lists 1, 2, 3.
    assert_eq!(
        h.client
            .topology()
            .members
            .iter()
            .map(|m| m.member.id)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    // Node 3 restarts on another port: the others learn its address from gossip, by its id.
    h.cluster.stop_node(3, StopSignal::Term).expect("stop 3");
    let new_port = client::cluster_dir::pick_free_udp_ports(1).expect("port")[0];
    let new_addr = format!("127.0.0.1:{new_port}");
    let old_addr = h.cluster.address(3).unwrap().to_string();
    let cfg_path = h.cluster.dir().node_config(3);
    let text = std::fs::read_to_string(&cfg_path).expect("node.toml");
    std::fs::write(&cfg_path, text.replace(&old_addr, &new_addr)).expect("rewrite node.toml");
    let file_path = h.cluster.dir().cluster_file();
    let text = std::fs::read_to_string(&file_path).expect("cluster.toml");
    std::fs::write(&file_path, text.replace(&old_addr, &new_addr)).expect("rewrite cluster.toml");
    h.cluster.reload();
    h.cluster
        .start_node(3)
        .expect("restart 3 on its new address");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = membership_at(
            &pool,
            h.cluster.address(1).unwrap(),
            MembershipOp::Show,
            Duration::from_secs(2),
        )
        .await;
        if v.is_ok_and(|v| knows(&v, 3, new_addr.clone())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 never learned node 3's new address"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Writes at ALL through node 1 reach node 3 at its new address.
    let mut cfg = h
        .cluster
        .client_config(Duration::from_secs(5))
        .expect("client config");
    cfg.seeds = vec![h.cluster.address(1).unwrap()];
    let fresh = Client::connect(cfg).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match fresh.put(b"moved", b"v", Consistency::All).await {
            Ok(_) => break,
            Err(e @ (ClientError::Unavailable { .. } | ClientError::Timeout { .. }))
                if Instant::now() < deadline =>
            {
                eprintln!("ALL not yet possible: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("ALL write after the move: {e}"),
        }
    }
    let rec = fresh.inspect(3, b"moved").await.expect("inspect node 3");
    assert_eq!(rec.and_then(|r| r.value), Some(b"v".to_vec()));
}

/// Asserts that node `node` itself (no coordination, no read repair) holds `key`'s value.
async fn assert_holds(client: &Client, node: u32, key: &str) {
    let record = client
        .inspect(node, key.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("inspect {key} on node {node}: {e}"));
    assert_eq!(
        record.and_then(|r| r.value),
        Some(value_of(key)),
        "node {node} lacks {key}"
    );
}

/// Adds two nodes to the cluster files and starts them: they learn the ring from the running
/// nodes as seeds; nothing is staged for them.
fn start_two_seeded(
    h: &mut common::harness::Harness,
) -> (
    client::cluster_dir::NodeEntry,
    client::cluster_dir::NodeEntry,
) {
    let a = h.cluster.add_node().expect("add node");
    let b = h.cluster.add_node().expect("add node");
    h.cluster.start_node(a.id).expect("start a");
    h.cluster.start_node(b.id).expect("start b");
    (a, b)
}

/// A connection pool with the cluster's client certificate, for requests to single nodes.
fn admin_pool(h: &common::harness::Harness) -> proto::transport::Pool {
    let tls = h
        .cluster
        .dir()
        .client_tls(h.cluster.file())
        .expect("client tls");
    proto::transport::Pool::new(
        proto::transport::client_endpoint(&tls).expect("endpoint"),
        Duration::from_secs(1),
    )
}

/// Starts node 4 (not yet a ring member, so no peer watches it) and waits until it answers with
/// the ring learned.
async fn start_4(h: &common::harness::Harness) {
    h.cluster.start_node(4).expect("start 4");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let status = h.cluster.node_status(4).await;
        if matches!(&status, Ok(s) if s.ring_epoch > 0) {
            return;
        }
        assert!(
            Instant::now() < until,
            "node 4 did not come back: {:?}\n{}",
            status.map(|s| s.ring_epoch),
            h.cluster.log_tail(4, 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Node 4's stream progress for the transition in progress (or just ended), if it answers.
async fn progress_of_4(h: &common::harness::Harness) -> Option<proto::membership::StreamProgress> {
    h.cluster
        .node_status(4)
        .await
        .ok()
        .and_then(|s| s.streaming)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_resumes_after_the_joining_node_and_a_source_crash() {
    let mut h = start("").await;
    let dir = h.cluster.dir().root().to_path_buf();
    let keys: Vec<String> = (0..20_000).map(|i| format!("s-{i}")).collect();
    h.write_all(keys.iter().cloned(), Consistency::All).await;

    // Node 4 starts and its join is staged; it is restarted with a slow stream (100 kB/s, pages
    // of 200 records) so that it can be crashed in the middle, then the join is committed.
    let (code, out) = cli(&dir, &["cluster", "add", "--no-commit"]).await;
    assert_eq!(code, 0, "cluster add --no-commit failed: {out}");
    h.cluster.reload();
    h.cluster.stop_node(4, StopSignal::Term).expect("stop 4");
    let config = h.cluster.dir().node_config(4);
    let mut text = std::fs::read_to_string(&config).expect("node.toml");
    text.push_str("\n[streaming]\nmax-bytes-per-sec = 100000\npage-records = 200\n");
    std::fs::write(&config, text).expect("write node.toml");
    start_4(&h).await;
    let (code, _) = cli(&dir, &["cluster", "commit", "--no-wait"]).await;
    assert_eq!(code, 0, "commit failed");

    // Crash the joining node once it has received 15,000 records, and start it again.
    let wait_records = |at_least: u64| {
        let h = &h;
        async move {
            let until = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(p) = progress_of_4(h).await {
                    if p.records >= at_least {
                        return p;
                    }
                    assert!(!p.done, "streaming ended before {at_least} records: {p:?}");
                }
                assert!(Instant::now() < until, "streaming stalled");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let before_crash = wait_records(15_000).await;
    h.cluster.stop_node(4, StopSignal::Kill).expect("kill 4");
    start_4(&h).await;
    // The first progress it reports is what it loaded from disk, before streaming again: the
    // cursors saved (every second) before the crash. Starting over would report 0 records.
    let until = Instant::now() + Duration::from_secs(10);
    let resumed = loop {
        if let Some(p) = progress_of_4(&h).await {
            break p;
        }
        assert!(Instant::now() < until, "node 4 reports no stream progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("node 4 killed at {before_crash:?}; first progress after its restart: {resumed:?}");
    // 100 kB/s of ~19-byte records is about 5,300 records/s: at most ~1.5 s of them are lost
    // between the last save and the crash.
    assert!(
        resumed.records + 8_000 >= before_crash.records && resumed.parts_done > 0,
        "the restarted node did not resume from its saved cursors: {resumed:?}"
    );

    // Crash a source (node 1) a little later, and start it again within source-wait-ms.
    wait_records(resumed.records + 5_000).await;
    h.cluster.stop_node(1, StopSignal::Kill).expect("kill 1");
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.cluster.start_node(1).expect("start 1");
    h.cluster
        .wait_nodes_ready(&[1], Duration::from_secs(30))
        .await
        .expect("node 1 ready");

    // The transition ends.
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let v = h
            .cluster
            .membership(MembershipOp::Show, Duration::from_secs(5))
            .await;
        if matches!(&v, Ok(v) if v.ring.transition.is_none()) {
            break;
        }
        assert!(Instant::now() < until, "the transition did not end: {v:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Node 4 holds every key it owns in the new ring, by itself.
    let cfg = h
        .cluster
        .client_config(Duration::from_secs(5))
        .expect("client config");
    let fresh = Client::connect(cfg).await.expect("connect");
    let topology = fresh.topology();
    let ring = ring::Ring::new(
        topology.members.iter().map(|m| m.member.clone()).collect(),
        topology.strategy.clone(),
    )
    .expect("ring");
    let mut owned = 0u64;
    for key in &keys {
        if !ring.replicas_for_key(key.as_bytes()).contains(&4) {
            continue;
        }
        owned += 1;
        assert_holds(&fresh, 4, key).await;
    }
    assert!(owned > 10_000, "node 4 owns only {owned} keys");

    // Every part ended, none skipped (node 1 came back within source-wait-ms), and the count
    // (saved with the cursors) covers every owned key from each of the 3 replicas.
    let last = progress_of_4(&h).await.expect("final progress");
    eprintln!("node 4 owns {owned} keys; final stream progress {last:?}");
    assert!(last.done && last.parts_skipped == 0, "{last:?}");
    assert!(
        last.records >= 3 * owned,
        "records missing: {} < {}",
        last.records,
        3 * owned
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_sent_to_different_nodes_are_all_staged() {
    let mut h = start("").await;
    // Two nodes started from the seeds, nothing staged for them yet.
    let (a, b) = start_two_seeded(&mut h);
    let pool = admin_pool(&h);
    let until = Instant::now() + Duration::from_secs(30);
    for e in [&a, &b] {
        while !matches!(h.cluster.node_status(e.id).await, Ok(s) if s.ring_epoch > 0) {
            assert!(
                Instant::now() < until,
                "node {} did not learn the ring",
                e.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Three changes at the same moment, each sent to a different node. Proposed where they
    // arrived, they would make three states of the same epoch, and only one would survive.
    let addr = |id: u32| h.cluster.address(id).expect("address");
    let ops = [
        (
            1,
            MembershipOp::Join {
                addr: a.address.to_string(),
            },
        ),
        (
            2,
            MembershipOp::Join {
                addr: b.address.to_string(),
            },
        ),
        (3, MembershipOp::Leave { node: 1 }),
    ];
    let results =
        futures::future::join_all(ops.iter().map(|(via, op)| {
            membership_at(&pool, addr(*via), op.clone(), Duration::from_secs(20))
        }))
        .await;
    for (r, (via, op)) in results.iter().zip(&ops) {
        assert!(r.is_ok(), "{op:?} via node {via}: {r:?}");
    }
    // Every node ends up with all three staged.
    let until = Instant::now() + Duration::from_secs(10);
    for via in [1, 2, 3] {
        loop {
            let v = membership_at(&pool, addr(via), MembershipOp::Show, Duration::from_secs(2))
                .await
                .expect("show");
            if v.ring.staged.len() == 3 {
                break;
            }
            assert!(
                Instant::now() < until,
                "node {via} has staged only {:?}",
                v.ring.staged
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A node that cannot reach a majority of the ring's members refuses membership changes
/// (exit 4, nothing staged): in a partition only the majority side may change the ring, so two
/// sides cannot each stage a change of their own. Once a majority is back, changes are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_needs_a_majority_of_the_members() {
    let h = start("").await;
    let dir = h.cluster.dir().root().to_path_buf();
    // One of three down: two of three is a majority.
    h.cluster
        .stop_node(3, StopSignal::Kill)
        .expect("kill node 3");
    h.wait_seen(3, false).await;
    let (code, out) = cli(&dir, &["cluster", "leave", "2", "--json"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, _) = cli(&dir, &["cluster", "clear"]).await;
    assert_eq!(code, 0);
    // Two of three down: node 1 alone is a minority.
    h.cluster
        .stop_node(2, StopSignal::Kill)
        .expect("kill node 2");
    let (code, _) = cli(&dir, &["cluster", "leave", "3"]).await;
    assert_eq!(code, 4, "a minority must refuse the change");
    let (code, out) = cli(&dir, &["cluster", "plan", "--json"]).await;
    assert_eq!(code, 0, "{out}");
    let plan: serde_json::Value = serde_json::from_str(&out).expect("plan json");
    assert_eq!(plan["ring"]["staged"], serde_json::json!([]), "{plan:#}");
    // With node 2 back, a majority answers again: as soon as node 2 is up and node 1 reaches
    // it (right after the start it may not listen yet, or node 1 may still be backing off from
    // its address), the change is served.
    h.cluster.start_node(2).expect("start node 2");
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out) = cli(&dir, &["cluster", "leave", "3"]).await;
        if code == 0 {
            break;
        }
        assert_eq!(code, 4, "only unavailability may delay it: {out}");
        assert!(
            Instant::now() < until,
            "still refused 20 s after node 2 came back: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
