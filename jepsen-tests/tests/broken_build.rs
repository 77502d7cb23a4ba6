//! A deliberately broken setup must be caught: one replica per key (RF 1) and a nemesis that
//! kills a node and deletes its data directory, losing acknowledged writes as a build that acks
//! before storing would. The CLI must report lost writes and exit 1. Runs on loopback, so it
//! needs no root.

use std::process::Command;

fn skip_requested() -> bool {
    std::env::var("RINGKV_JEPSEN_SKIP").is_ok_and(|v| v == "1")
}

#[test]
fn the_set_checker_catches_acknowledged_writes_lost_on_a_real_cluster() {
    if skip_requested() {
        eprintln!("RINGKV_JEPSEN_SKIP=1: skipping");
        return;
    }
    // The previous run's directory goes; this one stays for inspection.
    let out_root = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("jepsen-broken");
    let _ = std::fs::remove_dir_all(&out_root);
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv-jepsen"))
        .args([
            "--nodes",
            "3",
            "--rf",
            "1",
            "--workload",
            "set",
            "--consistency",
            "quorum",
            "--nemesis",
            "kill-wipe",
            "--time",
            "8",
            "--quiet-secs",
            "3",
            "--fault-secs",
            "2",
            "--concurrency",
            "4",
            "--net",
            "loopback",
            "--name",
            "broken-rf1-kill-wipe",
        ])
        .arg("--out")
        .arg(&out_root)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run ringkv-jepsen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "a checker must fail");
    assert!(stdout.contains("set:             INVALID"), "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    // The results file names the lost keys.
    let index = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("FAIL -> "))
        .expect("summary names the report");
    let dir = std::path::Path::new(index).parent().expect("run dir");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).expect("results"))
            .expect("json");
    let lost = results["checks"]["set"]["lost"]
        .as_u64()
        .expect("lost count");
    let acked = results["checks"]["set"]["acknowledged"]
        .as_u64()
        .expect("acked");
    assert!(lost > 0 && lost <= acked, "lost {lost} of {acked}");
    assert!(
        results["checks"]["set"]["lost_keys"]
            .as_array()
            .is_some_and(|k| !k.is_empty()),
        "{results}"
    );
}

#[test]
fn usage_errors_exit_2_before_starting_anything() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv-jepsen"))
        .args(["--nodes", "3", "--nemesis", "partition-majorities-ring"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 4 nodes"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv-jepsen"))
        .args(["--nemesis", "no-such-fault"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}
