//! Scale on paper: placement quality of the ring at 1,000 nodes.
//!
//! For 16 and 256 virtual nodes per node (RF 3, simple strategy) it prints the load imbalance
//! (largest owned share over the mean) and the fraction of replica data that moves when one node
//! joins, next to the ideal 1/(N+1). Movement is measured on evenly spaced sample tokens: a
//! replica slot moves when the node holding it changes.
//!
//! `cargo run --release -p ringkv-ring --example scale [-- NODES SAMPLES]`

use ring::{tokens_for, Member, Ring, Strategy, Token};
use std::time::Instant;

fn members(n: u32, vnodes: u32) -> Vec<Member> {
    (1..=n)
        .map(|id| Member {
            id,
            datacenter: "dc1".into(),
            rack: format!("rack{}", id % 3),
            tokens: tokens_for(id, vnodes),
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let samples: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rf = 3;
    println!("{nodes} nodes, RF {rf}, {samples} sample tokens");
    println!("vnodes  build_ms  max/mean_share  min/mean_share  moved_on_join  ideal_1/(N+1)  moved/ideal");
    for vnodes in [16u32, 256] {
        let started = Instant::now();
        let before = match Ring::new(members(nodes, vnodes), Strategy::Simple { rf }) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("cannot build the ring: {e}");
                std::process::exit(1);
            }
        };
        let build_ms = started.elapsed().as_millis();
        let shares: Vec<f64> = (1..=nodes).map(|id| before.ownership(id)).collect();
        let mean = 1.0 / f64::from(nodes);
        let max = shares.iter().cloned().fold(f64::MIN, f64::max);
        let min = shares.iter().cloned().fold(f64::MAX, f64::min);
        let after = match Ring::new(members(nodes + 1, vnodes), Strategy::Simple { rf }) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("cannot build the ring: {e}");
                std::process::exit(1);
            }
        };
        let step = u64::MAX / samples;
        let mut moved = 0u64;
        for i in 0..samples {
            let t: Token = i.wrapping_mul(step);
            let (a, b) = (before.replicas(t), after.replicas(t));
            moved += a.iter().filter(|n| !b.contains(n)).count() as u64;
        }
        let moved_frac = moved as f64 / (samples as f64 * rf as f64);
        let ideal = 1.0 / f64::from(nodes + 1);
        println!(
            "{vnodes:>6}  {build_ms:>8}  {:>14.3}  {:>14.3}  {:>13.6}  {:>13.6}  {:>11.2}",
            max / mean,
            min / mean,
            moved_frac,
            ideal,
            moved_frac / ideal
        );
    }
}
