//! Real clusters: `ringkv cluster up` starts `ringkv-node` processes in a temporary directory and
//! the `ringkv` binary drives them as a user would. Covers every consistency level, failed nodes
//! (Unavailable, never a hang), two datacenters, oversized requests, UDP garbage, foreign
//! certificates, a restart that must keep the data, and the two durability modes.
//!
//! Needs the `ringkv-node` binary next to `ringkv` (`cargo build --release --workspace --bins`)
//! or named by `RINGKV_NODE_BIN`. Clusters run one at a time (see `common`).

mod common;

use common::{Run, TestCluster};
use proto::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A failing command must come back well before a user gives up on it: one connect attempt per
/// dead coordinator the client tries first (about 1 s each, bounded by the client's connect
/// timeout), then a prompt Unavailable from a live one.
const PROMPT: Duration = Duration::from_secs(5);
/// Detection of a killed node: `down-after` is 1 s; status polls take up to 2 s each.
const DETECT: Duration = Duration::from_secs(10);

#[track_caller]
fn assert_unavailable(run: Run, alive: u64, required: u64) {
    let run = run.expect_code(4);
    assert!(
        run.stderr.to_lowercase().contains("unavailable")
            && run.stderr.contains(&alive.to_string())
            && run.stderr.contains(&required.to_string()),
        "the message names the failure and the counts: {}",
        run.describe()
    );
    assert!(run.elapsed < PROMPT, "took too long: {}", run.describe());
}

#[track_caller]
fn assert_unavailable_json(run: Run, alive: u64, required: u64) {
    let run = run.expect_code(4);
    let v = run.json();
    assert_eq!(v["ok"], false, "{}", run.describe());
    assert_eq!(v["error"], "Unavailable", "{}", run.describe());
    assert_eq!(v["exit_code"], 4, "{}", run.describe());
    assert_eq!(v["alive"], alive, "{}", run.describe());
    assert_eq!(v["required"], required, "{}", run.describe());
    assert!(run.elapsed < PROMPT, "took too long: {}", run.describe());
}

#[test]
fn every_level_round_trips() {
    let c = TestCluster::up(&["--nodes", "3", "--rf", "3"]);

    // Upper case, and lower case for some levels (the flag is case-insensitive).
    let levels = [
        "ONE",
        "two",
        "THREE",
        "QUORUM",
        "LOCAL_ONE",
        "local_quorum",
        "each_quorum",
        "ALL",
        "linearizable",
    ];
    for level in levels {
        let (key, value) = (format!("k-{level}"), format!("v-{level}"));
        let put = c.run(&["put", &key, &value, "--consistency", level]).ok();
        assert!(
            put.stdout_text().starts_with("OK (version "),
            "{}",
            put.describe()
        );
        let got = c.run(&["get", &key, "--consistency", level]).ok();
        assert_eq!(got.stdout_text(), value, "{}", got.describe());
    }

    // ANY is for writes; a quorum read sees the write.
    c.run(&["put", "k-any", "v-any", "-c", "ANY"]).ok();
    let got = c.run(&["get", "k-any", "-c", "QUORUM"]).ok();
    assert_eq!(got.stdout_text(), "v-any");
    let refused = c.run(&["get", "k-any", "-c", "ANY"]).expect_code(6);
    assert!(
        refused.stderr.contains("writes only"),
        "{}",
        refused.describe()
    );

    // Delete, then the key is gone at every read level.
    c.run(&["delete", "k-QUORUM"]).ok();
    for level in ["ONE", "QUORUM", "ALL"] {
        let gone = c.run(&["get", "k-QUORUM", "-c", level]).expect_code(3);
        assert!(gone.stderr.contains("not found"), "{}", gone.describe());
        assert!(gone.stdout.is_empty(), "{}", gone.describe());
    }
    assert_eq!(c.run(&["get", "never-written"]).expect_code(3).stdout, b"");

    // --json: one object, success and failure alike.
    let put = c
        .run(&["--json", "put", "k-json", "v-json", "-c", "ALL"])
        .ok();
    let put_json = put.json();
    assert_eq!(put_json["ok"], true, "{}", put.describe());
    assert_eq!(put_json["op"], "put");
    assert_eq!(put_json["acks"], 3, "ALL waited for every replica");
    let got = c.run(&["--json", "get", "k-json"]).ok();
    let got_json = got.json();
    assert_eq!(got_json["ok"], true, "{}", got.describe());
    assert_eq!(got_json["value"], "v-json");
    assert_eq!(got_json["key"], "k-json");
    assert_eq!(
        got_json["version"], put_json["version"],
        "the read returns the version the write was stamped with"
    );
    let missing = c.run(&["--json", "get", "k-QUORUM"]).expect_code(3);
    let missing_json = missing.json();
    assert_eq!(missing_json["ok"], false);
    assert_eq!(missing_json["error"], "NotFound");
    assert_eq!(missing_json["exit_code"], 3);

    // The value from standard input (with `-` and with no value argument), and from a file of
    // arbitrary bytes, which `get` prints back byte for byte.
    let stdin_value = b"from stdin\nwith two lines\n";
    c.run_stdin(&["put", "k-stdin", "-"], Some(stdin_value))
        .ok();
    assert_eq!(c.run(&["get", "k-stdin"]).ok().stdout, stdin_value);
    c.run_stdin(&["put", "k-stdin2", "-c", "ALL"], Some(b"implicit"))
        .ok();
    assert_eq!(c.run(&["get", "k-stdin2"]).ok().stdout, b"implicit");

    let binary: Vec<u8> = (0..=255u8).rev().chain([0, 0, b'\n']).collect();
    let file = c.scratch().join("value.bin");
    std::fs::write(&file, &binary).expect("write value file");
    let file_s = file.to_str().expect("utf-8 path");
    c.run(&["put", "k-file", "--file", file_s]).ok();
    assert_eq!(c.run(&["get", "k-file", "-c", "ALL"]).ok().stdout, binary);
    let hex = c.run(&["--json", "get", "k-file"]).ok().json();
    let expected_hex: String = binary.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex["value_hex"], expected_hex.as_str());

    // An empty value is a value, not a deletion.
    c.run(&["put", "k-empty", ""]).ok();
    assert_eq!(c.run(&["get", "k-empty", "-c", "ALL"]).ok().stdout, b"");
}

#[test]
fn one_node_down() {
    let c = TestCluster::up(&["--nodes", "3", "--rf", "3"]);
    // The client tries a key's replicas in placement order, and each dead one costs it a
    // connect timeout (about 1 s). Most keys here are led by node 1, which stays up; a few are
    // led by nodes that die, to cover the client moving on past dead coordinators.
    let fast = c.keys_where("fast", 3, |r, t| r.replicas(t)[0] == 1);
    let led_by_3 = c.key_where("led-by-3", |r, t| r.replicas(t)[..2] == [3, 1]);
    let led_by_2 = c.key_where("led-by-2", |r, t| r.replicas(t)[..2] == [2, 1]);
    let behind_two_dead = c.key_where("behind", |r, t| r.replicas(t) == [2, 3, 1]);

    c.run(&["cluster", "stop-node", "3", "--kill"]).ok();
    c.wait_seen_down(&[1, 2], &[3], DETECT);
    // `cluster status` reports the dead node, with exit 4.
    let status = c.run(&["cluster", "status"]).expect_code(4);
    assert!(
        status.stdout_text().contains("node 3 unreachable"),
        "{}",
        status.describe()
    );

    for key in fast.iter().chain([&led_by_2, &behind_two_dead]) {
        for level in ["ONE", "QUORUM"] {
            let value = format!("{key}-{level}");
            let put = c.run(&["put", key, &value, "-c", level]).ok();
            assert!(put.elapsed < PROMPT, "{}", put.describe());
            let got = c.run(&["get", key, "-c", level]).ok();
            assert_eq!(got.stdout_text(), value, "{}", got.describe());
            assert!(got.elapsed < PROMPT, "{}", got.describe());
        }
        assert_unavailable(c.run(&["put", key, "x", "-c", "ALL"]), 2, 3);
        assert_unavailable(c.run(&["get", key, "-c", "ALL"]), 2, 3);
    }
    // Node 3 would coordinate this key: the client moves on to node 1.
    let put = c.run(&["put", &led_by_3, "v3", "-c", "QUORUM"]).ok();
    assert!(put.elapsed < PROMPT, "{}", put.describe());
    assert_eq!(
        c.run(&["get", &led_by_3, "-c", "QUORUM"]).ok().stdout,
        b"v3"
    );
    assert_unavailable(c.run(&["put", &led_by_3, "x", "-c", "ALL"]), 2, 3);

    assert_unavailable_json(c.run(&["--json", "put", &fast[0], "x", "-c", "ALL"]), 2, 3);
    assert_unavailable_json(c.run(&["--json", "get", &fast[0], "-c", "ALL"]), 2, 3);
    // A refused ALL write wrote nothing: the earlier value is still there.
    let got = c.run(&["get", &fast[0], "-c", "QUORUM"]).ok();
    assert_eq!(got.stdout_text(), format!("{}-QUORUM", fast[0]));

    c.run(&["cluster", "stop-node", "2", "--kill"]).ok();
    c.wait_seen_down(&[1], &[2, 3], DETECT);
    for key in fast.iter().chain([&led_by_2, &behind_two_dead]) {
        assert_unavailable(c.run(&["put", key, "y", "-c", "QUORUM"]), 1, 2);
        // With RF 3 on 3 nodes node 1 replicates every key: ONE still works.
        let got = c.run(&["get", key, "-c", "ONE"]).ok();
        assert_eq!(
            got.stdout_text(),
            format!("{key}-QUORUM"),
            "{}",
            got.describe()
        );
        assert!(got.elapsed < PROMPT, "{}", got.describe());
    }
    for key in &fast {
        assert_unavailable(c.run(&["get", key, "-c", "QUORUM"]), 1, 2);
        let put = c.run(&["put", key, "alone", "-c", "ONE"]).ok();
        assert!(put.elapsed < PROMPT, "{}", put.describe());
        assert_eq!(c.run(&["get", key, "-c", "ONE"]).ok().stdout, b"alone");
    }
    assert_unavailable_json(c.run(&["--json", "get", &fast[0], "-c", "QUORUM"]), 1, 2);
}

/// Node id -> datacenter, from `cluster status --json`.
fn datacenters(c: &TestCluster) -> BTreeMap<u64, String> {
    c.nodes().into_iter().map(|(id, _, dc)| (id, dc)).collect()
}

#[test]
fn two_datacenters() {
    let c = TestCluster::up(&["--nodes", "4", "--datacenters", "2", "--rf", "2"]);
    let dcs = datacenters(&c);
    let in_dc = |name: &str| -> Vec<u64> {
        dcs.iter()
            .filter(|(_, dc)| dc.as_str() == name)
            .map(|(id, _)| *id)
            .collect()
    };
    let (dc1, dc2) = (in_dc("dc1"), in_dc("dc2"));
    assert_eq!(dc1, [1, 3], "round robin: {dcs:?}");
    assert_eq!(dc2, [2, 4], "round robin: {dcs:?}");
    let coordinator = |run: &Run| run.json()["coordinator"].as_u64().expect("coordinator");

    // Node 4 will die. Most keys are led by node 2 in dc2 and by a node other than 4 overall (no
    // connect timeout); `led_by_4` covers the client moving on to node 2.
    let keys = c.keys_where("dc", 3, |r, t| {
        r.replicas(t)[0] != 4 && r.replicas_in(t, "dc2").next() == Some(2)
    });
    let led_by_4 = c.key_where("led-by-4", |r, t| r.replicas_in(t, "dc2").next() == Some(4));

    for key in keys.iter().chain([&led_by_4]) {
        for (level, dc, members) in [
            ("LOCAL_QUORUM", "dc1", &dc1),
            ("EACH_QUORUM", "dc1", &dc1),
            ("LOCAL_QUORUM", "dc2", &dc2),
        ] {
            let value = format!("{key}-{level}-{dc}");
            let put = c
                .run(&[
                    "--json",
                    "put",
                    key,
                    &value,
                    "-c",
                    level,
                    "--datacenter",
                    dc,
                ])
                .ok();
            assert!(
                members.contains(&coordinator(&put)),
                "--datacenter {dc} routes to a coordinator there: {}",
                put.describe()
            );
            let got = c
                .run(&["--json", "get", key, "-c", level, "--datacenter", dc])
                .ok();
            assert_eq!(got.json()["value"], value.as_str(), "{}", got.describe());
            assert!(members.contains(&coordinator(&got)), "{}", got.describe());
        }
    }

    c.run(&["cluster", "stop-node", "4", "--kill"]).ok();
    c.wait_seen_down(&[1, 2, 3], &[4], DETECT);
    for key in keys.iter().chain([&led_by_4]) {
        // dc2 has one of its two replicas: no quorum there, whoever coordinates.
        assert_unavailable(
            c.run(&["put", key, "x", "-c", "EACH_QUORUM", "--datacenter", "dc1"]),
            1,
            2,
        );
        assert_unavailable(
            c.run(&["put", key, "x", "-c", "LOCAL_QUORUM", "--datacenter", "dc2"]),
            1,
            2,
        );
        // dc1 is whole: its local quorum is unaffected.
        let value = format!("{key}-after");
        let put = c
            .run(&[
                "--json",
                "put",
                key,
                &value,
                "-c",
                "LOCAL_QUORUM",
                "--datacenter",
                "dc1",
            ])
            .ok();
        assert!(dc1.contains(&coordinator(&put)), "{}", put.describe());
        let got = c
            .run(&["get", key, "-c", "LOCAL_QUORUM", "--datacenter", "dc1"])
            .ok();
        assert_eq!(got.stdout_text(), value, "{}", got.describe());
        // The surviving dc2 replica serves LOCAL_ONE in dc2.
        let got = c
            .run(&[
                "--json",
                "get",
                key,
                "-c",
                "LOCAL_ONE",
                "--datacenter",
                "dc2",
            ])
            .ok();
        assert_eq!(coordinator(&got), 2, "{}", got.describe());
        assert!(got.elapsed < PROMPT, "{}", got.describe());
    }
    for key in &keys {
        assert_unavailable(
            c.run(&["get", key, "-c", "LOCAL_QUORUM", "--datacenter", "dc2"]),
            1,
            2,
        );
        // QUORUM counts all four replicas: 3 of 4 are up.
        let got = c.run(&["get", key, "-c", "QUORUM"]).ok();
        assert_eq!(
            got.stdout_text(),
            format!("{key}-after"),
            "{}",
            got.describe()
        );
    }
    assert_unavailable_json(
        c.run(&[
            "--json",
            "get",
            &keys[0],
            "-c",
            "EACH_QUORUM",
            "--datacenter",
            "dc1",
        ]),
        1,
        2,
    );
}

/// A UDP payload: mostly random bytes of random sizes, some shaped like QUIC long-header packets
/// (Initial, with version 1 or an unknown version) so they get past the first checks.
fn garbage_datagram(rng: &mut impl rand::Rng, i: usize) -> Vec<u8> {
    let len = match i % 5 {
        0 => rng.gen_range(0..=20),
        1 => rng.gen_range(1200..=1500),
        2 => rng.gen_range(1500..=9000),
        _ => rng.gen_range(21..1200),
    };
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
    // One in three looks like a QUIC Initial: version 1, or a version nobody speaks.
    let version: Option<[u8; 4]> = match i % 6 {
        0 => Some([0, 0, 0, 1]),
        3 => Some(rng.gen()),
        _ => None,
    };
    if let (Some(version), true) = (version, len >= 8) {
        bytes[0] = 0xc0 | (bytes[0] & 0x0f); // long header, packet type Initial
        bytes[1..5].copy_from_slice(&version);
        bytes[5] = rng.gen_range(0..=20); // destination connection id length
    }
    bytes
}

#[test]
fn oversized_and_garbage() {
    let c = TestCluster::up(&["--nodes", "3", "--rf", "3"]);

    // Keys and values exactly at the limits are accepted end to end.
    let max_key = "k".repeat(MAX_KEY_BYTES);
    let big_value: Vec<u8> = (0..MAX_VALUE_BYTES).map(|i| (i % 251) as u8).collect();
    let big_file = c.scratch().join("max.bin");
    std::fs::write(&big_file, &big_value).expect("write");
    let big_s = big_file.to_str().expect("utf-8");
    c.run(&["put", &max_key, "--file", big_s, "-c", "ALL"]).ok();
    let got = c.run(&["get", &max_key, "-c", "ALL"]).ok();
    assert!(
        got.stdout == big_value,
        "a 1 MiB value under a 64 KiB key reads back whole (got {} bytes)",
        got.stdout.len()
    );

    // One byte over is refused with exit 6, naming the limit.
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    for args in [
        vec!["put", long_key.as_str(), "v"],
        vec!["get", long_key.as_str()],
        vec!["delete", long_key.as_str()],
    ] {
        let run = c.run(&args).expect_code(6);
        assert!(
            run.stderr
                .contains(&format!("{}-byte limit", MAX_KEY_BYTES))
                && run.stderr.contains(&(MAX_KEY_BYTES + 1).to_string()),
            "{}",
            run.describe()
        );
    }
    let over = c.scratch().join("over.bin");
    std::fs::write(&over, vec![b'x'; MAX_VALUE_BYTES + 1]).expect("write");
    let run = c
        .run(&["put", "k-over", "--file", over.to_str().expect("utf-8")])
        .expect_code(6);
    assert!(
        run.stderr
            .contains(&format!("{MAX_VALUE_BYTES}-byte limit")),
        "{}",
        run.describe()
    );
    let over_stdin = vec![b'y'; MAX_VALUE_BYTES + 1];
    let run = c
        .run_stdin(&["put", "k-over", "-"], Some(&over_stdin))
        .expect_code(6);
    assert!(run.stderr.contains("limit"), "{}", run.describe());
    c.run(&["get", "k-over"]).expect_code(3);

    // Garbage datagrams at node 1's QUIC port (node 1 is a replica of every key).
    let nodes = c.nodes();
    let addr: std::net::SocketAddr = nodes[0].1.parse().expect("node address");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut rng = rand::thread_rng();
    let started = Instant::now();
    for i in 0..1000 {
        let datagram = garbage_datagram(&mut rng, i);
        // A full socket buffer or an ICMP error from an earlier datagram is not this test's
        // concern; the node's survival is.
        let _ = socket.send_to(&datagram, addr);
    }
    eprintln!(
        "sent 1000 garbage datagrams to {addr} in {:?}",
        started.elapsed()
    );

    let status = c.run(&["--json", "cluster", "status"]).ok();
    let status = status.json();
    assert_eq!(status["all_reachable"], true, "{status:#}");
    for node in status["nodes"].as_array().expect("nodes") {
        assert!(node["pid"].is_number(), "every node still runs: {status:#}");
        let down: Vec<_> = node["status"]["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .filter(|p| p["up"] != true)
            .collect();
        assert!(down.is_empty(), "no node sees a peer down: {status:#}");
    }
    c.run(&["put", "after-garbage", "still here", "-c", "ALL"])
        .ok();
    let got = c.run(&["get", "after-garbage", "-c", "ALL"]).ok();
    assert_eq!(got.stdout_text(), "still here");
    let got = c.run(&["get", &max_key, "-c", "ONE"]).ok();
    assert_eq!(got.stdout.len(), MAX_VALUE_BYTES);
}

#[test]
fn wrong_certificates_are_refused() {
    use proto::tls::{generate_ca, issue, write_pem, Role};
    let c = TestCluster::up(&["--nodes", "3", "--rf", "3"]);
    let addr = c.nodes()[0].1.clone();
    let (our_ca, our_cert, our_key) = (
        c.path_arg("ca.pem"),
        c.path_arg("client.pem"),
        c.path_arg("client.key"),
    );

    // An unrelated CA with the same cluster name, and a client and a node certificate from it.
    let foreign_ca = generate_ca("ringkv").expect("foreign CA");
    let scratch = c.scratch();
    let write = |name: &str, pem: &str, private: bool| {
        let path = scratch.join(name);
        write_pem(&path, pem, private).expect("write pem");
        path.to_str().expect("utf-8").to_string()
    };
    let foreign_ca_pem = write("foreign-ca.pem", &foreign_ca.cert_pem, false);
    let foreign_client = issue(&foreign_ca, "ringkv", Role::Client, "intruder").expect("issue");
    let foreign_cert = write("foreign.pem", &foreign_client.cert_pem, false);
    let foreign_key = write("foreign.key", &foreign_client.key_pem, true);
    let foreign_node = issue(&foreign_ca, "ringkv", Role::Node, "node-9").expect("issue");
    let foreign_node_cert = write("foreign-node.pem", &foreign_node.cert_pem, false);
    let foreign_node_key = write("foreign-node.key", &foreign_node.key_pem, true);

    let with_certs = |cmd: &[&str], ca: &str, cert: &str, key: &str| {
        let mut args = cmd.to_vec();
        args.extend_from_slice(&["--node", &addr, "--ca", ca, "--cert", cert, "--key", key]);
        // No cluster directory: the flags are all the client has.
        common::ringkv(&args, None)
    };

    // The client refuses a node its CA did not sign.
    let run =
        with_certs(&["get", "k"], &foreign_ca_pem, &foreign_cert, &foreign_key).expect_code(7);
    assert!(
        run.stderr.starts_with("error: unauthorized") && run.stderr.contains("certificate"),
        "{}",
        run.describe()
    );

    // The node refuses client certificates its CA did not sign (a client and a node role).
    let refused: Vec<Run> = [
        (&foreign_cert, &foreign_key),
        (&foreign_node_cert, &foreign_node_key),
    ]
    .into_iter()
    .flat_map(|(cert, key)| {
        [
            &["get", "k"][..],
            &["put", "k", "intruder", "-c", "ONE"][..],
        ]
        .map(|cmd| with_certs(cmd, &our_ca, cert, key))
    })
    .collect();

    // The cluster keeps serving clients with the right certificates, and nothing was written.
    let run = with_certs(&["get", "k", "-c", "ALL"], &our_ca, &our_cert, &our_key).expect_code(3);
    assert!(run.stderr.contains("not found"), "{}", run.describe());
    with_certs(
        &["put", "k", "welcome", "-c", "ALL"],
        &our_ca,
        &our_cert,
        &our_key,
    )
    .ok();
    let got = c.run(&["get", "k", "-c", "ALL"]).ok();
    assert_eq!(got.stdout_text(), "welcome");
    c.run(&["cluster", "status"]).ok();

    // Each refusal is reported as one (exit 7), promptly, naming the node: not as a timeout
    // that leaves the user wondering whether the write happened.
    for run in refused {
        let run = run.expect_code(7);
        assert!(
            run.stderr.starts_with("error: unauthorized") && run.stderr.contains(&addr),
            "{}",
            run.describe()
        );
        assert!(run.elapsed < PROMPT, "{}", run.describe());
    }
}

#[test]
fn restart_keeps_data() {
    let c = TestCluster::up(&["--nodes", "3", "--rf", "3"]);
    let keys: Vec<(String, String)> = (0..100)
        .map(|i| {
            (
                format!("restart-{i:03}"),
                format!("value {i} {}", "*".repeat(i)),
            )
        })
        .collect();
    let versions: Vec<serde_json::Value> = in_parallel(&keys, |(k, v)| {
        let put = c.run(&["--json", "put", k, v, "-c", "ALL"]).ok();
        let json = put.json();
        assert_eq!(json["acks"], 3, "{}", put.describe());
        json["version"].clone()
    });

    let down = c.run(&["--json", "cluster", "down"]).ok();
    assert!(
        down.elapsed < client::launcher::STOP_WAIT,
        "every node stops on SIGTERM, before the launcher resorts to SIGKILL: {}",
        down.describe()
    );
    let down = down.json();
    let stopped = down["stopped"].as_array().expect("stopped");
    assert_eq!(stopped.len(), 3, "every node was running: {down:#}");
    assert_eq!(down["purged"], false);
    c.run(&["cluster", "status"]).expect_code(4);
    // Each node kept its clock's reservation in its own file, renewed while it ran: the newest
    // intact slot is ahead of the wall clock now (the reservation is 2 s ahead, renewed every
    // 500 ms).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let dir = client::cluster_dir::ClusterDir::resolve(Some(c.dir())).expect("cluster dir");
    for id in 1..=3 {
        let path = dir.node_data(id).join("RINGKV-CLOCK");
        let bytes = std::fs::read(&path).expect("reservation file");
        assert_eq!(bytes.len(), 64, "{}", path.display());
        let reserved_ms = bytes
            .chunks(32)
            .filter(|slot| slot.starts_with(b"RKVCLK01"))
            .map(|slot| {
                let seq = u64::from_le_bytes(slot[8..16].try_into().unwrap());
                let hlc = u64::from_le_bytes(slot[16..24].try_into().unwrap());
                (seq, hlc >> proto::version::HLC_LOGICAL_BITS)
            })
            .max()
            .expect("a written slot")
            .1;
        assert!(
            reserved_ms > now_ms,
            "node {id}: reserved up to {reserved_ms} ms, now {now_ms} ms"
        );
    }

    let up = c.run(&["--json", "cluster", "up"]).ok().json();
    assert_eq!(
        up["created"], false,
        "the existing cluster is reused: {up:#}"
    );

    let reads: Vec<(Vec<u8>, serde_json::Value)> = in_parallel(&keys, |(k, _)| {
        let got = c.run(&["--json", "get", k, "-c", "ONE"]).ok();
        let json = got.json();
        (
            json["value"]
                .as_str()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
            json["version"].clone(),
        )
    });
    for (((key, value), (read, read_version)), version) in keys.iter().zip(&reads).zip(&versions) {
        assert_eq!(read, value.as_bytes(), "{key}");
        assert_eq!(
            read_version, version,
            "{key} keeps the version it was written with"
        );
    }

    // New writes win over the data written before the restart (clocks did not go back).
    c.run(&["put", "restart-000", "newer", "-c", "ALL"]).ok();
    for level in ["ONE", "ALL"] {
        assert_eq!(
            c.run(&["get", "restart-000", "-c", level]).ok().stdout,
            b"newer"
        );
    }
}

/// A single-threaded runtime for a test's client, and the cluster's client configuration.
fn client_runtime(c: &TestCluster) -> (tokio::runtime::Runtime, client::ClientConfig) {
    let dir = client::cluster_dir::ClusterDir::new(c.dir()).expect("cluster dir");
    let config = dir
        .client_config(Duration::from_secs(5), None)
        .expect("client config");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    (runtime, config)
}

/// Per node: how much `ringkv_wal_syncs_total`, `ringkv_storage_batches_total` and
/// `ringkv_storage_writes_total` grew while `count` sequential QUORUM puts ran (waiting until
/// every replica stored them), and how long that took.
fn sync_counts_over_puts(c: &TestCluster, count: usize) -> (Vec<[u64; 3]>, Duration) {
    const NAMES: [&str; 3] = [
        "ringkv_wal_syncs_total",
        "ringkv_storage_batches_total",
        "ringkv_storage_writes_total",
    ];
    let addresses: Vec<String> = c.nodes().into_iter().map(|n| n.1).collect();
    let sample = || -> Vec<[u64; 3]> {
        addresses
            .iter()
            .map(|a| {
                let m = common::node_metrics(a);
                NAMES.map(|n| {
                    *m.get(n)
                        .unwrap_or_else(|| panic!("{n} missing at {a}: {m:?}"))
                })
            })
            .collect()
    };
    let (runtime, config) = client_runtime(c);
    let started = Instant::now();
    let before = sample();
    runtime.block_on(async {
        let client = client::Client::connect(config).await.expect("connect");
        for i in 0..count {
            client
                .put(
                    format!("durability-{i}").as_bytes(),
                    b"value",
                    proto::Consistency::Quorum,
                )
                .await
                .expect("put");
        }
    });
    // QUORUM returns after two replicas: wait for the third to store the last writes too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let deltas = loop {
        let after = sample();
        let deltas: Vec<[u64; 3]> = after
            .iter()
            .zip(&before)
            .map(|(a, b)| [0, 1, 2].map(|i| a[i] - b[i]))
            .collect();
        if deltas.iter().all(|d| d[2] >= count as u64) || Instant::now() > deadline {
            break deltas;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for d in &deltas {
        assert!(
            d[2] >= count as u64,
            "every replica stored every write: {deltas:?}"
        );
    }
    (deltas, started.elapsed())
}

#[test]
fn durability_sync_syncs_every_batch_and_periodic_does_not() {
    const PUTS: usize = 40;
    let c = TestCluster::up(&["--nodes", "3", "--rf", "3", "--durability", "sync"]);
    let status = c.status();
    assert_eq!(status["durability"], "sync", "{status:#}");
    let (sync, _) = sync_counts_over_puts(&c, PUTS);
    // [syncs, batches, writes] per node. Sync mode fsyncs every batch. Each put is acknowledged
    // after two replicas synced a batch holding it, and a batch that started after the previous
    // put was acknowledged cannot have served that one: at least two syncs per put in all.
    for d in &sync {
        assert!(d[0] >= d[1] && d[1] >= 1, "every batch is synced: {sync:?}");
    }
    let total: u64 = sync.iter().map(|d| d[0]).sum();
    assert!(
        total >= 2 * PUTS as u64,
        "{total} syncs for {PUTS} puts: {sync:?}"
    );
    drop(c);

    // The default (periodic, every 1000 ms) syncs on a timer, not per batch.
    let c = TestCluster::up(&["--nodes", "3", "--rf", "3"]);
    let status = c.status();
    assert_eq!(status["durability"], "periodic", "{status:#}");
    let (periodic, elapsed) = sync_counts_over_puts(&c, PUTS);
    let ticks = elapsed.as_secs() + 2;
    for d in &periodic {
        assert!(
            d[0] <= ticks && d[0] < d[1],
            "about one sync per second over {elapsed:?}, fewer than the batches: {periodic:?}"
        );
    }
}

/// Runs `f` over `items` on a few threads (each call is a `ringkv` process), in order.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const THREADS: usize = 4;
    let chunk = items.len().div_ceil(THREADS).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let f = &f;
                s.spawn(move || part.iter().map(f).collect::<Vec<R>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Concurrent writes leave each coordinator for each peer in batches (one replica request for
/// every write that was waiting for that peer), and every write of every batch is stored on
/// every replica, with the version the client was told.
#[test]
fn concurrent_writes_reach_the_replicas_in_batches() {
    const PUTS: usize = 3_000;
    const IN_FLIGHT: usize = 64;
    let c = TestCluster::up(&["--nodes", "3", "--rf", "3"]);
    let addresses: Vec<String> = c.nodes().into_iter().map(|n| n.1).collect();
    let counts = || -> [u64; 2] {
        addresses.iter().fold([0, 0], |acc, a| {
            let m = common::node_metrics(a);
            let get = |n: &str| {
                *m.get(n)
                    .unwrap_or_else(|| panic!("{n} missing at {a}: {m:?}"))
            };
            [
                acc[0] + get("ringkv_replica_write_batches_total"),
                acc[1] + get("ringkv_replica_writes_batched_total"),
            ]
        })
    };
    let before = counts();
    let (runtime, config) = client_runtime(&c);
    let keys: Vec<String> = (0..PUTS).map(|i| format!("batched-{i:05}")).collect();
    let (client, versions) = runtime.block_on(async {
        use futures::StreamExt;
        let client = client::Client::connect(config).await.expect("connect");
        let versions: Vec<proto::Version> = futures::stream::iter(&keys)
            .map(|k| {
                let client = &client;
                async move {
                    client
                        .put(k.as_bytes(), k.as_bytes(), proto::Consistency::Quorum)
                        .await
                        .unwrap_or_else(|e| panic!("put {k}: {e}"))
                        .version
                }
            })
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        (client, versions)
    });
    // Every replica has every write (the third replica of a QUORUM write may lag a moment).
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        for (key, version) in keys.iter().zip(&versions) {
            for node in 1..=3 {
                loop {
                    let record = client.inspect(node, key.as_bytes()).await.expect("inspect");
                    if record.as_ref().map(|r| r.version) == Some(*version) {
                        assert_eq!(record.and_then(|r| r.value), Some(key.as_bytes().to_vec()));
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "node {node} has {record:?} for {key}, written as {version:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });
    // Counted once every replica has every write: the last batches have gone out.
    let after = counts();
    let (batches, writes) = (after[0] - before[0], after[1] - before[1]);
    // With RF 3 on three nodes every coordinator is a replica and sends each write to the two
    // others; a write goes alone only when its peer's queue is full.
    assert!(
        writes >= 2 * PUTS as u64 * 9 / 10,
        "{writes} of {} replica writes went in batches",
        2 * PUTS
    );
    assert!(
        batches * 3 / 2 <= writes,
        "{writes} replica writes in {batches} batches: no coalescing"
    );
}
