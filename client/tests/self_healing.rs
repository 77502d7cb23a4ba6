//! Self-healing on real `ringkv-node` processes: hinted handoff to a returning replica, anti-
//! entropy rebuilding a wiped replica and carrying a lone divergent key cheaply, and deletes that
//! stay deleted through a replica's absence and tombstone purge. Driven through the client
//! library and the launcher, as a user's program would.

mod common;

use client::launcher::StopSignal;
use client::ClientError;
use common::harness::start;
use proto::Consistency;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_bring_a_returning_replica_up_to_date_in_one_pass() {
    let h = start("\n[hints]\ncheck-interval-ms = 200\n").await;
    h.cluster
        .stop_node(3, StopSignal::Kill)
        .expect("kill node 3");
    h.wait_seen(3, false).await;
    let keys = || (0..10_000).map(|i| format!("hinted-{i}"));
    h.write_all(keys(), Consistency::One).await;
    // Hints for a replica known down are stored just after each write is answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pending = h.hints_for(3).await;
    while pending < 10_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        pending = h.hints_for(3).await;
    }
    assert_eq!(pending, 10_000, "one hint per write for the down replica");

    let returned = Instant::now();
    h.restart(3).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.hints_for(3).await > 0 {
        assert!(Instant::now() < deadline, "hints not replayed within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "10,000 hints replayed {:.1} s after node 3 was restarted",
        returned.elapsed().as_secs_f64()
    );
    for k in keys() {
        let record = h.client.inspect(3, k.as_bytes()).await.expect("inspect");
        assert_eq!(
            record.and_then(|r| r.value),
            Some(format!("value-{k}").into_bytes()),
            "{k} on node 3 alone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_rebuilds_a_wiped_replica_with_values_and_tombstones() {
    let h = start("").await;
    h.write_all((0..3000).map(|i| format!("ae-{i}")), Consistency::All)
        .await;
    for i in (0..3000).step_by(10) {
        h.client
            .delete(format!("ae-{i}").as_bytes(), Consistency::All)
            .await
            .expect("delete");
    }
    h.cluster
        .stop_node(2, StopSignal::Term)
        .expect("stop node 2");
    let data = h.cluster.dir().node_data(2);
    std::fs::remove_dir_all(&data).expect("wipe node 2's data");
    // Started and, once it answers, repaired at once: the repair itself waits until node 2 has
    // heard from its peers (its failure detector starts with everyone unheard).
    h.cluster.start_node(2).expect("start node 2");
    h.cluster
        .wait_nodes_ready(&[2], Duration::from_secs(30))
        .await
        .expect("node 2 ready");
    assert!(
        h.client
            .inspect(2, b"ae-1")
            .await
            .expect("inspect")
            .is_none(),
        "node 2 starts empty"
    );
    let started = Instant::now();
    let report = h
        .client
        .repair(2, true, Duration::from_secs(120))
        .await
        .expect("repair");
    println!(
        "wiped replica rebuilt: {} keys pulled in {} ms, {} bytes",
        report.keys_pulled, report.millis, report.bytes_exchanged
    );
    assert_eq!(report.failures, 0, "{report:?}");
    assert_eq!(report.keys_pulled, 3000, "{report:?}");
    assert!(started.elapsed() < Duration::from_secs(60));
    for i in 0..3000 {
        let k = format!("ae-{i}");
        let record = h
            .client
            .inspect(2, k.as_bytes())
            .await
            .expect("inspect")
            .unwrap_or_else(|| panic!("{k} missing on node 2"));
        if i % 10 == 0 {
            assert!(record.is_tombstone(), "{k} must be a tombstone");
        } else {
            assert_eq!(record.value, Some(format!("value-{k}").into_bytes()), "{k}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_divergent_key_is_found_and_fixed_with_little_traffic() {
    // No hints: the replica that missed the write can only learn it from anti-entropy.
    let h = start("\n[hints]\nenabled = false\n").await;
    h.write_all((0..20_000).map(|i| format!("big-{i}")), Consistency::All)
        .await;
    h.cluster
        .stop_node(3, StopSignal::Kill)
        .expect("kill node 3");
    h.wait_seen(3, false).await;
    h.client
        .put(b"big-77", b"changed", Consistency::Quorum)
        .await
        .expect("write while node 3 is down");
    h.restart(3).await;
    assert_eq!(
        h.client
            .inspect(3, b"big-77")
            .await
            .expect("inspect")
            .and_then(|r| r.value),
        Some(b"value-big-77".to_vec())
    );
    let report = h
        .client
        .repair(3, true, Duration::from_secs(60))
        .await
        .expect("repair");
    println!("1 divergent key in 20,000: {report:?}");
    assert_eq!(report.keys_pulled, 1, "{report:?}");
    assert_eq!(report.keys_pushed, 0, "{report:?}");
    // A full listing of 20,000 keys would be ~600 KB; the descent touches a few leaves only.
    assert!(
        report.bytes_exchanged < 64 * 1024,
        "{} bytes exchanged",
        report.bytes_exchanged
    );
    assert_eq!(
        h.client
            .inspect(3, b"big-77")
            .await
            .expect("inspect")
            .and_then(|r| r.value),
        Some(b"changed".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_missed_by_a_replica_never_reads_back_before_or_after_purge() {
    let h = start("\n[hints]\ncheck-interval-ms = 200\n[anti-entropy]\ninterval-ms = 1000\ntombstone-grace-ms = 4000\n").await;
    h.client
        .put(b"doomed", b"alive", Consistency::All)
        .await
        .expect("put");
    h.cluster
        .stop_node(3, StopSignal::Kill)
        .expect("kill node 3");
    h.wait_seen(3, false).await;
    h.client
        .delete(b"doomed", Consistency::Quorum)
        .await
        .expect("delete at QUORUM");
    h.restart(3).await;
    // Through hint replay, anti-entropy rounds and the tombstone's purge (grace 4 s), QUORUM
    // reads coordinated by every node never see the value again.
    let until = Instant::now() + Duration::from_secs(9);
    let mut reads = 0;
    while Instant::now() < until {
        for coordinator in [1u32, 2, 3] {
            match h
                .client
                .get_via(coordinator, b"doomed", Consistency::Quorum)
                .await
            {
                Err(ClientError::NotFound) => reads += 1,
                other => panic!("read {reads}: the deleted key came back: {other:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // By now the tombstone is purged everywhere, and nothing resurrected the value.
    for node in [1u32, 2, 3] {
        let rec = h.client.inspect(node, b"doomed").await.expect("inspect");
        assert!(
            rec.is_none(),
            "node {node} still holds {rec:?} after the grace period"
        );
    }
    assert!(matches!(
        h.client.get(b"doomed", Consistency::All).await,
        Err(ClientError::NotFound)
    ));
    assert!(reads > 20, "{reads} reads");
}
