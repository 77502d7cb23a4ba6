//! The harness's network: namespaces on a bridge, nftables partition rules that cut exactly the
//! planned pairs, and removal of everything on drop, also when a test panics. Needs root; set
//! RINGKV_JEPSEN_SKIP=1 to skip on a workstation.

use jepsen_tests::netns::{self, Network};
use jepsen_tests::partition::{self, Shape};
use std::process::Command;

fn skip() -> bool {
    if std::env::var("RINGKV_JEPSEN_SKIP").is_ok_and(|v| v == "1") {
        eprintln!("RINGKV_JEPSEN_SKIP=1: skipping");
        return true;
    }
    if let Err(e) = netns::check_capability() {
        panic!("network tests need root and nftables: {e} (RINGKV_JEPSEN_SKIP=1 skips them)");
    }
    false
}

fn rules(namespace: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", namespace, "nft", "list", "ruleset"])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The IPv4 addresses named in an nft listing.
fn addrs(listing: &str) -> Vec<String> {
    listing
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|w| w.split('.').count() == 4)
        .map(str::to_string)
        .collect()
}

fn namespaces() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn partitions_become_drop_rules_and_heal_removes_them() {
    if skip() {
        return;
    }
    let net = Network::create(&[1, 2, 3]).expect("network");
    let (a1, a2, a3) = (
        net.addr(1).expect("1"),
        net.addr(2).expect("2"),
        net.addr(3).expect("3"),
    );
    assert_ne!(a1, a2);
    assert_ne!(net.gateway(), a1);
    let p = partition::plan(Shape::One, &[2, 1, 3]).expect("plan");
    net.apply_cuts(&p.cuts).expect("cut");
    let isolated = addrs(&rules(net.namespace(2).expect("ns")));
    assert!(
        isolated.contains(&a1.to_string()) && isolated.contains(&a3.to_string()),
        "{isolated:?}"
    );
    let other = addrs(&rules(net.namespace(1).expect("ns")));
    assert!(other.contains(&a2.to_string()), "{other:?}");
    assert!(
        !other.contains(&a3.to_string()),
        "1 and 3 stay connected: {other:?}"
    );
    for listing in [&isolated, &other] {
        assert!(
            !listing.contains(&net.gateway().to_string()),
            "clients on the bridge are never cut"
        );
    }
    assert!(rules(net.namespace(2).expect("ns")).contains("drop"));
    net.heal().expect("heal");
    assert!(!rules(net.namespace(2).expect("ns")).contains("drop"));
}

#[test]
fn the_network_is_removed_even_when_a_test_panics() {
    if skip() {
        return;
    }
    let mut names = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let net = Network::create(&[1, 2]).expect("network");
        names.push(net.namespace(1).expect("ns").to_string());
        assert!(namespaces().contains(&names[0]));
        panic!("boom");
    }));
    assert!(result.is_err());
    assert!(
        !namespaces().contains(&names[0]),
        "{} left behind",
        names[0]
    );
}
