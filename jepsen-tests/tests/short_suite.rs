//! The CI suite: set workload on a real 5-node cluster (one network namespace per node) under
//! partition-one, kill and pause at QUORUM, and partition-halves at ALL, and the register at
//! LINEARIZABLE with a random coordinator per operation under partition-halves, and the set at
//! QUORUM and at ALL while the ring grows from 3 to 5 nodes and shrinks back to 3 (membership). Every
//! acknowledged write must survive, the LINEARIZABLE history must be linearizable, every
//! replica must converge after the heal and a repair round, and under membership every request
//! must be served.
//!
//! Needs root (CAP_NET_ADMIN) and nftables, which CI has (scripts/setup.sh). Without them the
//! test fails, saying why; set RINGKV_JEPSEN_SKIP=1 to skip it on a workstation.

use jepsen_tests::checker::Verdict;
use jepsen_tests::nemesis::NemesisKind;
use jepsen_tests::workload::WorkloadKind;
use jepsen_tests::{netns, report, scenario, suite, RunOptions};
use std::path::PathBuf;
use std::time::Instant;

fn skip_requested() -> bool {
    std::env::var("RINGKV_JEPSEN_SKIP").is_ok_and(|v| v == "1")
}

/// A fresh directory for this test's runs; the previous test's runs are removed, so the latest
/// ones stay for inspection without piling up.
fn out_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("jepsen-runs");
    let _ = std::fs::remove_dir_all(&root);
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_suite_loses_no_acknowledged_write_and_converges() {
    if skip_requested() {
        eprintln!("RINGKV_JEPSEN_SKIP=1: skipping the jepsen short suite");
        return;
    }
    if let Err(e) = netns::check_capability() {
        panic!(
            "the jepsen short suite needs root and nftables: {e}. \
             Run scripts/setup.sh as root, or set RINGKV_JEPSEN_SKIP=1 to skip it locally."
        );
    }
    let opts = RunOptions {
        out_root: out_root(),
        node_bin: None,
        keep_data: false,
    };
    let scenarios = suite::short();
    let nemeses: Vec<NemesisKind> = scenarios.iter().map(|s| s.nemesis).collect();
    assert!(nemeses.contains(&NemesisKind::PartitionOne));
    assert!(nemeses.contains(&NemesisKind::Kill));
    assert!(nemeses.contains(&NemesisKind::Pause));
    assert!(nemeses.contains(&NemesisKind::Membership));
    assert!(scenarios
        .iter()
        .any(|s| s.consistency == proto::Consistency::Linearizable));
    let started = Instant::now();
    let rows = suite::run(scenarios, &opts, |row| match &row.result {
        Ok(r) => eprint!("{}", report::summary(r)),
        Err(e) => eprintln!("== {}: setup error: {e}", row.scenario.name),
    })
    .await;
    eprintln!(
        "{}\nshort suite: {:.0} s",
        suite::markdown(&rows),
        started.elapsed().as_secs_f64()
    );
    for row in &rows {
        let r = match &row.result {
            Ok(r) => r,
            Err(e) => panic!("{}: setup failed: {e}", row.scenario.name),
        };
        assert_eq!(r.network, "namespaces", "{}", row.scenario.name);
        match row.scenario.workload {
            WorkloadKind::Set => {
                let set = r.checks.set.as_ref().expect("set result");
                assert_eq!(
                    set.lost, 0,
                    "{}: lost acknowledged writes {:?}",
                    row.scenario.name, set.lost_keys
                );
                assert!(
                    set.acknowledged > 0,
                    "{}: nothing was acknowledged, the run proves nothing",
                    row.scenario.name
                );
            }
            WorkloadKind::Register => {
                let lin = r.checks.linearizability.as_ref().expect("register result");
                assert_eq!(
                    lin.verdict,
                    Verdict::Valid,
                    "{}: {}",
                    row.scenario.name,
                    lin.reason
                );
                assert!(
                    r.ops.ok > 0,
                    "{}: nothing succeeded, the run proves nothing",
                    row.scenario.name
                );
            }
        }
        assert!(
            r.passed,
            "{} failed:\n{}",
            row.scenario.name,
            report::summary(r)
        );
        assert!(
            !r.nemesis.is_empty() || row.scenario.nemesis == NemesisKind::None,
            "{}: the nemesis never acted",
            row.scenario.name
        );
        if row.scenario.nemesis == NemesisKind::Membership {
            // 3 -> 5 -> 3: both spares joined, then two founding members left.
            let what: Vec<&str> = r.nemesis.iter().map(|w| w.description.as_str()).collect();
            for (i, expected) in [
                "node 4 joins",
                "node 5 joins",
                "node 1 leaves",
                "node 2 leaves",
            ]
            .iter()
            .enumerate()
            {
                assert!(
                    what.get(i).is_some_and(|w| w.starts_with(expected)),
                    "{}: change {i} was not {expected:?}: {what:?}",
                    row.scenario.name
                );
            }
            let availability = r.checks.availability.as_ref().expect("availability result");
            assert_eq!(
                (availability.failed, availability.unknown),
                (0, 0),
                "{}: {} {:?}",
                row.scenario.name,
                availability.reason,
                availability.unserved
            );
        }
        for file in ["history.jsonl", "results.json", "index.html"] {
            assert!(
                r.run_dir.join(file).is_file(),
                "{} has no {file}",
                r.run_dir.display()
            );
        }
    }
    // Every namespace and link this process made is gone.
    let leftovers = our_names();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

/// Namespaces and links named by this process (`rkj<pid><letter>...`).
fn our_names() -> Vec<String> {
    let tag = format!("{}{}", netns::NAME_PREFIX, std::process::id());
    let mut names = Vec::new();
    for args in [&["netns", "list"][..], &["-o", "link", "show"][..]] {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("ip");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for word in text.split(|c: char| c.is_whitespace() || c == ':' || c == '@') {
            let ours = word
                .strip_prefix(&tag)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_lowercase()));
            if ours {
                names.push(word.to_string());
            }
        }
    }
    names
}

#[test]
fn a_partition_nemesis_on_loopback_is_a_usage_error() {
    let mut s = scenario::Scenario::new(
        jepsen_tests::workload::WorkloadKind::Set,
        proto::Consistency::Quorum,
        NemesisKind::PartitionHalves,
    );
    s.net = scenario::NetMode::Loopback;
    let err = s.validate().expect_err("needs namespaces");
    assert_eq!(err.exit_code(), jepsen_tests::error::EXIT_USAGE);
    assert!(err.to_string().contains("namespaces"), "{err}");
}
