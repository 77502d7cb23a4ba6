//! The client's own promises on real `ringkv-node` processes: session guarantees (read-your-writes
//! where plain ONE reads break it), writes retried after an ambiguous timeout that take effect
//! once, and receipts; through the library and through the `ringkv` command.

mod common;

use client::launcher::StopSignal;
use client::{Client, ClientConfig, ClientError};
use common::harness::{start, Harness};
use proto::Consistency;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// No hinted handoff and no anti-entropy round within a test: a replica that missed a write
/// stays stale until read repair, the situation sessions exist for.
const NO_BACKGROUND_HEALING: &str =
    "\n[hints]\nenabled = false\n[anti-entropy]\ninterval-ms = 600000\ntombstone-grace-ms = 1300000\n";

async fn client_with(h: &Harness, tune: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut cfg = h
        .cluster
        .client_config(Duration::from_secs(5))
        .expect("client config");
    tune(&mut cfg);
    Client::connect(cfg).await.expect("connect")
}

/// The cluster directory's `ringkv` command line prefix.
fn cli<'a>(h: &'a Harness, args: &[&'a str]) -> common::Run {
    let root = h
        .cluster
        .dir()
        .root()
        .to_str()
        .expect("utf-8 path")
        .to_string();
    let mut all = vec!["--cluster-dir".to_string(), root];
    all.extend(args.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    tokio::task::block_in_place(|| common::ringkv(&refs, None))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reads_break_read_your_writes_and_the_session_prevents_it() {
    let h = start(NO_BACKGROUND_HEALING).await;
    let plain = client_with(&h, |c| c.session_keys = 0).await;
    let session = client_with(&h, |_| {}).await;
    for key in ["plain", "session"] {
        h.client
            .put(key.as_bytes(), b"v1", Consistency::All)
            .await
            .expect("put v1 everywhere");
    }
    // Node 3 misses the second writes: it is down, and nothing heals it in the background.
    h.cluster
        .stop_node(3, StopSignal::Term)
        .expect("stop node 3");
    h.wait_seen(3, false).await;
    plain
        .put_via(1, b"plain", b"v2", Consistency::One)
        .await
        .expect("plain put v2");
    session
        .put_via(1, b"session", b"v2", Consistency::One)
        .await
        .expect("session put v2");
    h.restart(3).await;

    // A ONE read coordinated by node 3 answers from node 3 itself: the client that wrote v2
    // reads v1 back.
    let read = plain
        .get_via(3, b"plain", Consistency::One)
        .await
        .expect("plain read");
    assert_eq!(read.value, b"v1", "the violation plain ONE reads allow");

    // The session's floor makes node 3 look further than its own stale copy.
    let read = session
        .get_via(3, b"session", Consistency::One)
        .await
        .expect("session read");
    assert_eq!(read.value, b"v2", "read-your-writes within the session");
    assert!(
        session.session_floor(b"session").map(|f| f.version) >= Some(read.version),
        "the session remembers what it read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retried_after_a_timeout_keeps_its_first_version() {
    // Replica requests time out after 400 ms, while the failure detector keeps a silent node up
    // for a minute (phi's acceptable pause and the silence cap both 60 s): an ALL write to a cluster with a paused node times out ambiguously (two
    // replicas stored it) instead of failing fast as Unavailable.
    let h =
        start("\n[timeouts]\nrequest-ms = 400\nheartbeat-ms = 200\ndown-after-ms = 60000\nacceptable-pause-ms = 60000\n").await;
    let c = client_with(&h, |c| {
        c.write_retries = 8;
        c.receipts = true;
    })
    .await;
    let node3 = h.cluster.pid(3).expect("node 3 runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(node3),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("pause node 3");
    let started = Instant::now();
    let resume = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(node3),
            nix::sys::signal::Signal::SIGCONT,
        )
        .expect("resume node 3");
    });
    let w = c
        .put_via(1, b"retried", b"once", Consistency::All)
        .await
        .expect("the write succeeds once node 3 is back");
    resume.await.expect("resume task");
    assert!(
        w.attempts > 1,
        "the first attempt cannot have met ALL: {w:?}"
    );
    let receipt = w.receipt.as_ref().expect("receipt");
    assert!(
        receipt.reused_op,
        "later attempts reuse the first version: {w:?}"
    );
    // The version was stamped by the first attempt, before its 400 ms replica timeout.
    let stamped_at = std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(w.version.millis());
    let first_attempt_ended =
        std::time::SystemTime::now() - started.elapsed() + Duration::from_millis(600);
    assert!(stamped_at <= first_attempt_ended, "{w:?}");
    // Every replica holds exactly that version: no second version of the op exists.
    for id in h.cluster.node_ids() {
        let record = c.inspect(id, b"retried").await.expect("inspect");
        assert_eq!(
            record.map(|r| r.version),
            Some(w.version),
            "node {id} holds another version"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_keeps_a_session_across_commands_and_prints_receipts() {
    let h = start(NO_BACKGROUND_HEALING).await;
    let put = cli(&h, &["put", "k", "v", "-c", "ONE", "--receipt"]).ok();
    let text = put.stdout_text();
    assert!(text.starts_with("OK (version "), "{}", put.describe());
    assert!(text.contains("receipt: version "), "{}", put.describe());
    assert!(text.contains("acked "), "{}", put.describe());

    let got = cli(
        &h,
        &["--json", "get", "k", "-c", "LINEARIZABLE", "--receipt"],
    )
    .ok();
    let json = got.json();
    assert_eq!(json["value"], "v", "{}", got.describe());
    assert!(
        json["receipt"]["acked"]
            .as_array()
            .is_some_and(|a| a.len() >= 2),
        "{}",
        got.describe()
    );

    // The session file remembers the key's version; a floor beyond every replica (as after a
    // write this command line saw but the replicas lost) makes the read fail Stale, exit 11,
    // rather than return an older value.
    let path = h.cluster.dir().root().join("session.json");
    let text = std::fs::read_to_string(&path).expect("session file written");
    assert!(text.contains("\"6b\""), "key k in hex: {text}");
    let far = u64::MAX / 2;
    std::fs::write(&path, format!("{{\"keys\":[[\"6b\",{far},1,false]]}}"))
        .expect("rewrite session");
    let stale = cli(&h, &["get", "k", "-c", "ONE"]).expect_code(11);
    assert!(stale.stderr.contains("already saw"), "{}", stale.describe());
    let plain = cli(&h, &["get", "k", "-c", "ONE", "--no-session"]).ok();
    assert_eq!(plain.stdout_text(), "v");

    // A broken session file is a configuration error; nothing is sent.
    std::fs::write(&path, "{broken").expect("break session");
    let broken = cli(&h, &["get", "k"]).expect_code(9);
    assert!(
        broken.stderr.contains("session file"),
        "{}",
        broken.describe()
    );
    let err = h
        .client
        .get(b"never-written", Consistency::One)
        .await
        .expect_err("absent");
    assert!(matches!(err, ClientError::NotFound), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_refused_after_an_ambiguous_timeout_is_still_a_timeout() {
    // Replica requests time out after 400 ms and a silent node is marked down after 1 s: the
    // first ALL attempt with node 3 paused times out after two replicas stored the write, and a
    // later retry is refused at once as Unavailable ("nothing was written"), which must not be
    // taken for the write's outcome.
    let h =
        start("\n[timeouts]\nrequest-ms = 400\nheartbeat-ms = 200\ndown-after-ms = 1000\n").await;
    let c = client_with(&h, |c| c.write_retries = 6).await;
    let node3 = nix::unistd::Pid::from_raw(h.cluster.pid(3).expect("node 3 runs"));
    nix::sys::signal::kill(node3, nix::sys::signal::Signal::SIGSTOP).expect("pause node 3");
    let res = c.put_via(1, b"ambiguous", b"maybe", Consistency::All).await;
    nix::sys::signal::kill(node3, nix::sys::signal::Signal::SIGCONT).expect("resume node 3");
    match res {
        Err(ClientError::Timeout { message, .. }) => {
            assert!(message.contains("unavailable"), "{message}")
        }
        other => panic!("expected an ambiguous timeout, got {other:?}"),
    }
    // And indeed it was applied where it could be.
    for id in [1, 2] {
        let record = c.inspect(id, b"ambiguous").await.expect("inspect");
        assert_eq!(
            record.and_then(|r| r.value).as_deref(),
            Some(&b"maybe"[..]),
            "node {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_waiting_on_a_paused_replica_asks_a_spare_one() {
    // The failure detector keeps a silent node up for a minute, so node 1 keeps choosing paused
    // node 3 as one of a QUORUM read's two replicas; only speculation (a spare replica asked
    // when the level is not met after 50 ms) answers those reads before their 2 s deadline.
    let h = start(
        "\n[timeouts]\nheartbeat-ms = 200\ndown-after-ms = 60000\nacceptable-pause-ms = 60000\n",
    )
    .await;
    let keys: Vec<String> = (0..40).map(|i| format!("spec-{i}")).collect();
    h.write_all(keys.iter().cloned(), Consistency::All).await;
    let c = Arc::new(client_with(&h, |_| {}).await);
    let node3 = nix::unistd::Pid::from_raw(h.cluster.pid(3).expect("node 3 runs"));
    nix::sys::signal::kill(node3, nix::sys::signal::Signal::SIGSTOP).expect("pause node 3");
    let started = Instant::now();
    let reads: Vec<_> = keys
        .iter()
        .map(|k| {
            let (c, k) = (c.clone(), k.clone());
            tokio::spawn(async move {
                let r = c.get_via(1, k.as_bytes(), Consistency::Quorum).await;
                (k, r)
            })
        })
        .collect();
    let mut results = Vec::new();
    for r in reads {
        results.push(r.await.expect("read task"));
    }
    let took = started.elapsed();
    nix::sys::signal::kill(node3, nix::sys::signal::Signal::SIGCONT).expect("resume node 3");
    for (k, r) in results {
        let r = r.unwrap_or_else(|e| panic!("{k} with node 3 paused: {e}"));
        assert_eq!(r.value, format!("value-{k}").into_bytes(), "{k}");
    }
    println!("40 QUORUM reads via node 1 with node 3 paused: {took:?}");
    let address = h.cluster.address(1).expect("node 1's address").to_string();
    let speculative = tokio::task::block_in_place(|| common::node_metrics(&address))
        ["ringkv_speculative_reads_total"];
    println!("node 1 asked {speculative} spare replicas");
    assert!(speculative >= 1, "node 1 counted no speculative read");
}
