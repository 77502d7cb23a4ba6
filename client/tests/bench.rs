//! `ringkv bench` through the real binaries, against a local cluster: an open-loop mixed run
//! after a warmup reports only its measured phase, with the nodes' CPU; a bad warmup is refused;
//! writes in one coordinator window share a coordinator, and without windows each goes to its
//! key's first replica, as reads always do.

mod common;

use common::TestCluster;

#[test]
fn an_open_loop_run_counts_only_the_measured_phase_after_its_warmup() {
    let c = TestCluster::up(&["--nodes", "3", "--rf", "3"]);
    let v = c
        .run(&[
            "--json",
            "bench",
            "--workload",
            "mixed",
            "--read-ratio",
            "0.5",
            "-c",
            "QUORUM",
            "--keys",
            "200",
            "--concurrency",
            "8",
            "--rate",
            "400",
            "--duration",
            "2",
            "--warmup",
            "1",
        ])
        .ok()
        .json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["mode"], "open", "{v}");
    assert_eq!(v["warmup_s"].as_f64(), Some(1.0), "{v}");
    // Open loop at 400 ops/s for 2 s schedules exactly 800 operations; had the 1 s warmup been
    // counted, there would be about 1,200.
    let total = v["total_ops"].as_u64().expect("total_ops");
    assert!((400..=800).contains(&total), "{total} ops: {v}");
    let elapsed = v["elapsed_s"].as_f64().expect("elapsed_s");
    assert!(elapsed < 2.9, "measured phase took {elapsed} s: {v}");
    let writes = v["ops"]["write"]["ok"].as_u64().unwrap_or(0);
    let reads = v["ops"]["read"]["ok"].as_u64().unwrap_or(0)
        + v["ops"]["read"]["not_found"].as_u64().unwrap_or(0);
    assert!(writes > 0 && reads > 0, "{v}");
    assert_eq!(v["cpu"]["server_processes"], 3, "{v}");
    assert!(
        v["cpu"]["server_us_per_op"].as_f64().unwrap_or(0.0) > 0.0,
        "{v}"
    );
}

#[test]
fn a_bad_warmup_is_refused_before_anything_runs() {
    let c = TestCluster::up(&["--nodes", "1", "--rf", "1"]);
    for bad in ["--warmup=-1", "--warmup=4000", "--warmup=NaN"] {
        let run = c
            .run(&["--json", "bench", "--duration", "1", bad])
            .expect_code(6);
        let v = run.json();
        assert_eq!(v["error"], "InvalidRequest", "{v}");
        assert!(
            v["message"].as_str().unwrap_or("").contains("--warmup"),
            "{v}"
        );
    }
}

/// Client requests each node has coordinated so far (`cluster status`), by node id.
fn coordinated(c: &TestCluster) -> Vec<u64> {
    let status = c.status();
    let mut nodes: Vec<(u64, u64)> = status["nodes"]
        .as_array()
        .expect("status lists nodes")
        .iter()
        .map(|n| {
            let id = n["id"].as_u64().expect("id");
            let count = n["status"]["coordinated"]
                .as_u64()
                .unwrap_or_else(|| panic!("node {id} reports no count: {status}"));
            (id, count)
        })
        .collect();
    nodes.sort_unstable();
    nodes.into_iter().map(|(_, count)| count).collect()
}

/// Runs a closed-loop benchmark of 300 operations (`write` or `read`, the latter after its
/// preload of 300 keys) with the given coordinator window and returns how many requests each
/// node coordinated meanwhile.
fn coordinated_by_a_bench(c: &TestCluster, workload: &str, window_ms: &str) -> Vec<u64> {
    let before = coordinated(c);
    let v = c
        .run(&[
            "--json",
            "bench",
            "--workload",
            workload,
            "--keys",
            "300",
            "--ops",
            "300",
            "--duration",
            "30",
            "--warmup",
            "0",
            "--concurrency",
            "8",
            "--coordinator-window-ms",
            window_ms,
        ])
        .ok()
        .json();
    assert_eq!(v["total_ops"], 300, "{v}");
    let done = &v["ops"][workload];
    let ok = done["ok"].as_u64().unwrap_or(0) + done["not_found"].as_u64().unwrap_or(0);
    assert_eq!(ok, 300, "{v}");
    let after = coordinated(c);
    before.iter().zip(after).map(|(b, a)| a - b).collect()
}

#[test]
fn writes_in_one_coordinator_window_share_a_coordinator() {
    let c = TestCluster::up(&["--nodes", "3", "--rf", "3"]);
    // One window of a minute covers the whole run: its preferred node replicates every key
    // (RF 3 on 3 nodes), so it coordinates every write.
    let shares = coordinated_by_a_bench(&c, "write", "60000");
    assert_eq!(shares.iter().sum::<u64>(), 300, "{shares:?}");
    assert_eq!(
        shares.iter().filter(|n| **n == 300).count(),
        1,
        "one node coordinated all: {shares:?}"
    );
    // Without windows each write goes to its key's first replica, and the 300 random keys are
    // led by every node (each leads about a third of the ring).
    let shares = coordinated_by_a_bench(&c, "write", "0");
    assert_eq!(shares.iter().sum::<u64>(), 300, "{shares:?}");
    assert!(
        shares.iter().all(|n| *n > 0),
        "every node coordinated: {shares:?}"
    );
    // Reads ignore the window: the preload's 300 writes go to one node, the 300 reads to
    // their keys' first replicas, which are every node.
    let shares = coordinated_by_a_bench(&c, "read", "60000");
    assert_eq!(shares.iter().sum::<u64>(), 600, "{shares:?}");
    assert_eq!(
        shares.iter().filter(|n| **n >= 300).count(),
        1,
        "one node coordinated the preload: {shares:?}"
    );
    assert!(
        shares.iter().all(|n| *n > 0),
        "every node coordinated reads: {shares:?}"
    );
}
