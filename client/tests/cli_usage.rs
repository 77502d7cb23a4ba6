//! The `ringkv` binary without a running cluster: usage errors, local checks that fail before
//! connecting, configuration errors and their exit statuses, and the cluster commands driving a
//! fake node (a shell script) through start, readiness failure, status and stop.

use client::cluster_dir::ClusterDir;
use client::launcher::LocalCluster;
use std::path::Path;
use std::process::{Command, Output};

fn ringkv(args: &[&str]) -> Output {
    ringkv_env(args, &[])
}

fn ringkv_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringkv"));
    cmd.args(args)
        .env_remove("RINGKV_CLUSTER_DIR")
        .env_remove("RINGKV_NODE_BIN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ringkv")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited with a status")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn unknown_flags_and_missing_arguments_are_usage_errors() {
    assert_eq!(code(&ringkv(&["get", "k", "--bogus"])), 2);
    assert_eq!(code(&ringkv(&["get"])), 2);
    assert_eq!(code(&ringkv(&["frobnicate"])), 2);
    assert_eq!(
        code(&ringkv(&["get", "k", "--ca", "ca.pem"])),
        2,
        "--ca needs --cert and --key"
    );
    assert_eq!(code(&ringkv(&["get", "k", "--timeout-ms", "0"])), 2);
    assert_eq!(
        code(&ringkv(&["bench", "--coordinator-window-ms", "60001"])),
        2,
        "a coordinator window is at most a minute"
    );
    assert_eq!(
        code(&ringkv(&["put", "k", "v", "--coordinator-window-ms", "5"])),
        2,
        "one request has nothing to share a coordinator with"
    );
}

#[test]
fn unknown_consistency_level_is_a_usage_error_listing_the_levels() {
    let out = ringkv(&["get", "k", "--consistency", "QUOROM"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("QUOROM") && err.contains("LOCAL_QUORUM") && err.contains("EACH_QUORUM"),
        "{err}"
    );
}

#[test]
fn help_documents_the_exit_statuses() {
    let out = ringkv(&["--help"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(
        text.contains("Exit status") && text.contains("10  cannot reach the cluster"),
        "{text}"
    );
}

#[test]
fn a_missing_cluster_directory_is_a_configuration_error_naming_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("absent");
    let dir_s = dir.to_str().expect("utf-8 path");
    let out = ringkv(&["get", "k", "--cluster-dir", dir_s]);
    assert_eq!(code(&out), 9);
    let err = stderr(&out);
    assert!(
        err.starts_with("error: ")
            && err.contains("cluster.toml")
            && err.contains("ringkv cluster up"),
        "{err}"
    );

    // The environment variable is honoured when no flag is given.
    let out = ringkv_env(&["get", "k"], &[("RINGKV_CLUSTER_DIR", &dir)]);
    assert_eq!(code(&out), 9);
    assert!(stderr(&out).contains(dir_s), "{}", stderr(&out));

    // --json: one object on stdout, the same exit status.
    let out = ringkv(&["--json", "put", "k", "v", "--cluster-dir", dir_s]);
    assert_eq!(code(&out), 9);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"], "Config");
    assert_eq!(v["exit_code"], 9);
    assert_eq!(v["op"], "put");
}

#[test]
fn oversized_keys_and_bad_read_levels_fail_before_connecting() {
    // The cluster directory does not exist: reaching it would be exit 9, so 6 proves the check
    // happened first.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("absent");
    let dir_s = dir.to_str().expect("utf-8 path");
    let key = "k".repeat(70_000);
    for cmd in ["get", "delete"] {
        let out = ringkv(&[cmd, &key, "--cluster-dir", dir_s]);
        assert_eq!(code(&out), 6, "{cmd}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("65536-byte limit"),
            "{}",
            stderr(&out)
        );
    }
    let out = ringkv(&["put", &key, "v", "--cluster-dir", dir_s]);
    assert_eq!(code(&out), 6);

    let big = tmp.path().join("big.bin");
    std::fs::write(&big, vec![0u8; 1024 * 1024 + 1]).expect("write");
    let out = ringkv(&[
        "put",
        "k",
        "--file",
        big.to_str().expect("utf-8"),
        "--cluster-dir",
        dir_s,
    ]);
    assert_eq!(code(&out), 6);
    assert!(
        stderr(&out).contains("1048576-byte limit"),
        "{}",
        stderr(&out)
    );

    let out = ringkv(&["get", "k", "-c", "any", "--cluster-dir", dir_s]);
    assert_eq!(code(&out), 6);
    assert!(stderr(&out).contains("writes only"), "{}", stderr(&out));
    assert!(!dir.exists(), "nothing was created");
}

#[test]
fn impossible_layouts_and_missing_node_binaries_create_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("c");
    let dir_s = dir.to_str().expect("utf-8 path");
    let sh = "/bin/sh";
    let out = ringkv(&[
        "cluster",
        "up",
        "--dir",
        dir_s,
        "--nodes",
        "4",
        "--datacenters",
        "2",
        "--rf",
        "3",
        "--node-bin",
        sh,
    ]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--rf 3"), "{}", stderr(&out));
    assert!(!dir.exists());

    let out = ringkv(&[
        "cluster",
        "up",
        "--dir",
        dir_s,
        "--node-bin",
        "/nonexistent/ringkv-node",
    ]);
    assert_eq!(code(&out), 9);
    assert!(
        stderr(&out).contains("/nonexistent/ringkv-node"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.exists());

    let out = ringkv(&["cluster", "status", "--dir", dir_s]);
    assert_eq!(code(&out), 9);
    let out = ringkv(&["cluster", "down", "--dir", dir_s]);
    assert_eq!(code(&out), 0, "down without a cluster has nothing to do");
}

/// A stand-in for ringkv-node that starts, logs and never answers. It must not `exec`: the
/// launcher recognises a node by the config path on its command line.
fn fake_node(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-ringkv-node");
    std::fs::write(&path, "#!/bin/sh\necho \"fake node up with $*\"\ntrap 'exit 0' TERM\nwhile :; do sleep 0.1; done\n")
        .expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn cluster_commands_drive_node_processes_and_report_a_cluster_that_is_not_ready() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fake = fake_node(tmp.path());
    let dir = tmp.path().join("c");
    let (dir_s, fake_s) = (dir.to_str().expect("utf-8"), fake.to_str().expect("utf-8"));
    let up = ringkv(&[
        "cluster",
        "up",
        "--dir",
        dir_s,
        "--nodes",
        "2",
        "--rf",
        "2",
        "--base-port",
        "0",
        "--node-bin",
        fake_s,
        "--timeout-secs",
        "1",
    ]);
    // Whatever happens below, the detached processes are stopped at the end.
    let cluster = LocalCluster::open(ClusterDir::new(&dir).expect("dir"))
        .expect("created")
        .into_guard();
    assert_eq!(code(&up), 4, "never ready: {}", stderr(&up));
    let err = stderr(&up);
    assert!(
        err.contains("did not become ready") && err.contains("fake node up with --config"),
        "{err}"
    );
    let pids: Vec<i32> = cluster
        .node_ids()
        .into_iter()
        .filter_map(|id| cluster.pid(id))
        .collect();
    assert_eq!(pids.len(), 2, "both nodes run detached after `up` returned");

    let status = ringkv(&["--json", "cluster", "status", "--dir", dir_s]);
    assert_eq!(code(&status), 4, "unreachable nodes");
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(v["all_reachable"], false);
    assert_eq!(v["nodes"][0]["pid"], pids[0]);
    assert_eq!(v["nodes"][1]["reachable"], false);

    let stop = ringkv(&["cluster", "stop-node", "2", "--kill", "--dir", dir_s]);
    assert_eq!(code(&stop), 0, "{}", stderr(&stop));
    assert!(
        stdout(&stop).contains(&format!("pid {}", pids[1])),
        "{}",
        stdout(&stop)
    );
    assert_eq!(cluster.pid(2), None);
    assert_eq!(
        code(&ringkv(&["cluster", "stop-node", "7", "--dir", dir_s])),
        2,
        "unknown node id"
    );

    let again = ringkv(&[
        "cluster",
        "up",
        "--dir",
        dir_s,
        "--nodes",
        "5",
        "--node-bin",
        fake_s,
        "--timeout-secs",
        "1",
    ]);
    assert_eq!(code(&again), 4);
    assert!(
        stderr(&again).contains("ignoring --nodes"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        cluster.pid(1),
        Some(pids[0]),
        "a running node is left alone"
    );
    assert!(cluster.pid(2).is_some(), "a stopped node is started again");

    let down = ringkv(&["cluster", "down", "--purge", "--dir", dir_s]);
    assert_eq!(code(&down), 0, "{}", stderr(&down));
    assert!(!dir.exists());
    for pid in pids {
        assert!(!process_alive(pid), "pid {pid} was stopped");
    }
}

/// Alive and not a zombie.
fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.trim_start().chars().next())
            != Some('Z')
    })
}
