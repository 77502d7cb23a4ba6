//! Scenario matrices: the short suite CI runs (a few 10-second scenarios) and the full matrix
//! (every nemesis under both workloads at QUORUM and ALL; the register workload with a random
//! coordinator per operation at LINEARIZABLE, where linearizability is required, and at QUORUM
//! beside it, where it is recorded; plus a deliberately broken setup that must be caught), and
//! the Markdown table of results the README keeps.

use crate::checker::Verdict;
use crate::error::HarnessError;
use crate::nemesis::{NemesisKind, Schedule};
use crate::scenario::{self, RunOptions, RunReport, Scenario};
use crate::workload::{Coordinators, WorkloadKind};
use proto::Consistency;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Which matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SuiteKind {
    /// The CI suite: set at QUORUM under partition-one, kill and pause, and at ALL under
    /// partition-halves, and the register at LINEARIZABLE with random coordinators under
    /// partition-halves, 10 s each; and set at QUORUM and ALL under the membership nemesis, 40 s
    /// each.
    Short,
    /// The whole matrix, 30 or 40 s per scenario.
    Full,
    /// The part of the full matrix that compares levels with a random coordinator per operation:
    /// the register at LINEARIZABLE and at QUORUM under every nemesis but kill-wipe and
    /// membership, 40 s each.
    Linearizable,
}

const SHORT_TIME: Duration = Duration::from_secs(10);
const SHORT_SCHEDULE: Schedule = Schedule {
    quiet: Duration::from_secs(2),
    fault: Duration::from_secs(3),
};

/// Every nemesis that injects a fault and heals it (all but `none`, and `kill-wipe` and
/// `membership`, which only the set workload's dedicated scenarios use): what the
/// random-coordinator register scenarios run under.
pub fn fault_nemeses() -> impl Iterator<Item = NemesisKind> {
    NemesisKind::ALL.into_iter().filter(|n| {
        !matches!(
            n,
            NemesisKind::None | NemesisKind::KillWipe | NemesisKind::Membership
        )
    })
}

/// Workload time of the membership scenarios: room for its four changes (two joins, two
/// leaves), each a quiet gap, the start of a spare or the commit, and the transition.
const MEMBERSHIP_TIME: Duration = Duration::from_secs(40);
const MEMBERSHIP_SCHEDULE: Schedule = Schedule {
    quiet: Duration::from_secs(3),
    fault: Duration::from_secs(2),
};

/// The set workload at `level` while the ring grows from 3 to 5 nodes and shrinks back to 3
/// (the membership nemesis): nothing acknowledged may be lost, replicas must converge, and every
/// operation must be served (the availability checker).
pub fn membership(level: Consistency) -> Scenario {
    let mut s = Scenario::new(WorkloadKind::Set, level, NemesisKind::Membership);
    s.nodes = 5;
    s.time = MEMBERSHIP_TIME;
    s.schedule = MEMBERSHIP_SCHEDULE;
    s
}
/// Workload time of the random-coordinator register scenarios: with 5 s of fault and 5 s of
/// quiet, four fault cycles.
const RANDOM_COORDINATOR_TIME: Duration = Duration::from_secs(40);
/// Keys of the random-coordinator register scenarios: 200 ops/s over 2 keys is about 100 ops per
/// key per second, thousands per key in a run.
const RANDOM_COORDINATOR_KEYS: usize = 2;

/// The register workload at `level`, a random coordinator per operation, under `nemesis`.
/// At LINEARIZABLE the linearizability verdict must be valid (`unknown` fails too); at any other
/// level ringkv does not promise it, and it is recorded only.
pub fn register_random_coordinators(level: Consistency, nemesis: NemesisKind) -> Scenario {
    let mut s = Scenario::new(WorkloadKind::Register, level, nemesis);
    s.coordinators = Coordinators::Random;
    s.name = s.default_name();
    s.time = RANDOM_COORDINATOR_TIME;
    s.keys = RANDOM_COORDINATOR_KEYS;
    if level == Consistency::Linearizable {
        s.must_be_valid = vec!["linearizability".into()];
    } else {
        s.informational = vec!["linearizability".into()];
    }
    s
}

/// The scenarios of a suite.
pub fn scenarios(kind: SuiteKind) -> Vec<Scenario> {
    match kind {
        SuiteKind::Short => short(),
        SuiteKind::Full => full(),
        SuiteKind::Linearizable => linearizable(),
    }
}

/// The CI suite: set at QUORUM under partition-one, kill and pause, and at ALL under
/// partition-halves; the register at LINEARIZABLE with random coordinators under
/// partition-halves (linearizability required); set at QUORUM and at ALL while the ring grows
/// from 3 to 5 and shrinks back (membership).
pub fn short() -> Vec<Scenario> {
    let mut out: Vec<Scenario> = [
        (Consistency::Quorum, NemesisKind::PartitionOne),
        (Consistency::Quorum, NemesisKind::Kill),
        (Consistency::Quorum, NemesisKind::Pause),
        (Consistency::All, NemesisKind::PartitionHalves),
    ]
    .into_iter()
    .map(|(level, nemesis)| {
        let mut s = Scenario::new(WorkloadKind::Set, level, nemesis);
        s.time = SHORT_TIME;
        s.schedule = SHORT_SCHEDULE;
        s
    })
    .collect();
    let mut s =
        register_random_coordinators(Consistency::Linearizable, NemesisKind::PartitionHalves);
    s.time = SHORT_TIME;
    s.schedule = SHORT_SCHEDULE;
    out.push(s);
    // At ALL too: a write then needs every replica of both rings, the joining node included
    // from the commit on.
    out.push(membership(Consistency::Quorum));
    out.push(membership(Consistency::All));
    out
}

/// The full matrix.
pub fn full() -> Vec<Scenario> {
    let mut out = Vec::new();
    for level in [Consistency::Quorum, Consistency::All] {
        for nemesis in std::iter::once(NemesisKind::None).chain(fault_nemeses()) {
            out.push(Scenario::new(WorkloadKind::Set, level, nemesis));
        }
    }
    for level in [Consistency::Quorum, Consistency::All] {
        out.push(membership(level));
    }
    // A node whose disk is wiped, with RF 3: the other replicas, hints and anti-entropy must
    // restore everything it held.
    out.push(Scenario::new(
        WorkloadKind::Set,
        Consistency::Quorum,
        NemesisKind::KillWipe,
    ));
    for level in [Consistency::Quorum, Consistency::All] {
        for nemesis in [
            NemesisKind::None,
            NemesisKind::PartitionHalves,
            NemesisKind::Kill,
            NemesisKind::Pause,
            NemesisKind::ClockSkew,
        ] {
            let mut s = Scenario::new(WorkloadKind::Register, level, nemesis);
            // ringkv (last-write-wins, no consensus) promises linearizability at no level:
            // the verdict is recorded, not required.
            s.informational = vec!["linearizability".into()];
            out.push(s);
        }
    }
    // A weaker level, where a coordinator change (the killed one comes back) could expose
    // stale reads.
    let mut s = Scenario::new(WorkloadKind::Register, Consistency::One, NemesisKind::Kill);
    s.informational = vec!["linearizability".into()];
    out.push(s);
    out.extend(linearizable());
    out.push(broken_build());
    out
}

/// The register with every operation through a random node: at LINEARIZABLE, which must stay
/// linearizable under every nemesis, and at QUORUM beside it (recorded only), which shows what
/// last-write-wins alone gives.
pub fn linearizable() -> Vec<Scenario> {
    let mut out = Vec::new();
    for nemesis in fault_nemeses() {
        for level in [Consistency::Linearizable, Consistency::Quorum] {
            out.push(register_random_coordinators(level, nemesis));
        }
    }
    out
}

/// The deliberately broken setup: one replica per key (RF 1) and a nemesis that kills a node and
/// deletes its data, as a build that acknowledges writes before storing them would lose them.
/// The set checker must report lost writes.
pub fn broken_build() -> Scenario {
    let mut s = Scenario::new(
        WorkloadKind::Set,
        Consistency::Quorum,
        NemesisKind::KillWipe,
    );
    s.name = "broken-set-rf1-kill-wipe".into();
    s.nodes = 3;
    s.rf = 1;
    s.time = SHORT_TIME;
    s.schedule = Schedule {
        quiet: Duration::from_secs(4),
        fault: Duration::from_secs(2),
    };
    s.must_fail = vec!["set".into()];
    s
}

/// One row of a suite: the report, or the setup error.
pub struct SuiteRow {
    /// The scenario.
    pub scenario: Scenario,
    /// What happened.
    pub result: Result<RunReport, HarnessError>,
    /// Wall time, s.
    pub seconds: f64,
}

impl SuiteRow {
    /// Whether the scenario ran and met its expectations.
    pub fn passed(&self) -> bool {
        matches!(&self.result, Ok(r) if r.passed)
    }
}

/// Runs the scenarios one after another (each prints its summary through `on_done`).
pub async fn run(
    scenarios: Vec<Scenario>,
    opts: &RunOptions,
    mut on_done: impl FnMut(&SuiteRow),
) -> Vec<SuiteRow> {
    let mut rows = Vec::new();
    for s in scenarios {
        let started = Instant::now();
        let result = scenario::run(&s, opts).await;
        let row = SuiteRow {
            scenario: s,
            result,
            seconds: started.elapsed().as_secs_f64(),
        };
        on_done(&row);
        rows.push(row);
    }
    rows
}

/// The suite's results as a Markdown table (the README keeps the latest one).
pub fn markdown(rows: &[SuiteRow]) -> String {
    let mut t = String::from(
        "| scenario | workload | level | nemesis | ops ok/fail/info | acked | unknown | lost | linearizable | converged | result | run time |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let s = &row.scenario;
        let ops = match &row.result {
            Ok(r) => format!("{}/{}/{}", r.ops.ok, r.ops.fail, r.ops.info),
            Err(_) => "-".into(),
        };
        let (acked, unknown, lost, lin, conv, result) = match &row.result {
            Ok(r) => {
                let set = r.checks.set.as_ref();
                let count = |f: fn(&crate::checker::set::SetResult) -> u64| {
                    set.map_or("-".to_string(), |s| f(s).to_string())
                };
                let lin = r.checks.linearizability.as_ref().map_or("-".into(), |l| {
                    let expected = if s.informational.iter().any(|i| i == "linearizability")
                        && l.verdict != Verdict::Valid
                    {
                        " (not promised)"
                    } else {
                        ""
                    };
                    format!("{}{expected}", verdict_word(l.verdict))
                });
                let conv = r
                    .checks
                    .convergence
                    .as_ref()
                    .map_or("-".into(), |c| verdict_word(c.verdict).to_string());
                let result = match (r.passed, s.must_fail.is_empty()) {
                    (true, true) => "pass".to_string(),
                    (true, false) => "pass (failure caught)".to_string(),
                    (false, _) => "**FAIL**".to_string(),
                };
                (
                    count(|s| s.acknowledged),
                    count(|s| s.unknown),
                    count(|s| s.lost),
                    lin,
                    conv,
                    result,
                )
            }
            Err(e) => {
                let first = e.to_string().lines().next().unwrap_or_default().to_string();
                let dash = || "-".to_string();
                (
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    format!("**error**: {first}"),
                )
            }
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {ops} | {acked} | {unknown} | {lost} | {lin} | {conv} | {result} | {:.0} s |",
            s.name, s.workload, s.consistency, s.nemesis, row.seconds
        );
    }
    t
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Valid => "yes",
        Verdict::Invalid => "no",
        Verdict::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_are_valid_and_uniquely_named() {
        for kind in [SuiteKind::Short, SuiteKind::Full, SuiteKind::Linearizable] {
            let all = scenarios(kind);
            let mut names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), all.len(), "{kind:?} has duplicate names");
            for s in &all {
                s.validate().unwrap_or_else(|e| panic!("{}: {e}", s.name));
            }
        }
        let short_secs: u64 = short().iter().map(|s| s.time.as_secs()).sum();
        // Five 10 s scenarios and the two 40 s membership ones.
        assert!(short_secs <= 130, "the CI suite must stay short");
        assert!(full()
            .iter()
            .any(|s| s.must_fail == ["set"] && s.nemesis == NemesisKind::KillWipe));
    }

    #[test]
    fn linearizable_register_scenarios_are_required_under_every_nemesis() {
        let full = full();
        let linearizable: Vec<&Scenario> = full
            .iter()
            .filter(|s| s.consistency == Consistency::Linearizable)
            .collect();
        for nemesis in fault_nemeses() {
            let s = linearizable
                .iter()
                .find(|s| s.nemesis == nemesis)
                .unwrap_or_else(|| panic!("no LINEARIZABLE scenario under {nemesis}"));
            assert_eq!(s.workload, WorkloadKind::Register, "{}", s.name);
            assert_eq!(s.coordinators, Coordinators::Random, "{}", s.name);
            assert_eq!(s.must_be_valid, ["linearizability"], "{}", s.name);
            assert!(s.informational.is_empty(), "{}", s.name);
            assert!(s.must_fail.is_empty(), "{}", s.name);
            // Several fault cycles and several hundred operations per key.
            let cycle = s.schedule.quiet + s.schedule.fault;
            assert!(s.time >= cycle * 3, "{}: fewer than 3 fault cycles", s.name);
            let per_key = f64::from(s.rate) * s.time.as_secs_f64() / s.keys as f64;
            assert!(per_key >= 500.0, "{}: {per_key} ops per key", s.name);
            // QUORUM beside it, with the same settings, recorded only.
            let q = full
                .iter()
                .find(|q| {
                    q.consistency == Consistency::Quorum
                        && q.nemesis == nemesis
                        && q.coordinators == Coordinators::Random
                })
                .unwrap_or_else(|| panic!("no QUORUM random-coordinator scenario under {nemesis}"));
            assert_eq!(q.informational, ["linearizability"], "{}", q.name);
            assert!(q.must_be_valid.is_empty(), "{}", q.name);
            assert_eq!((q.time, q.keys, q.rate), (s.time, s.keys, s.rate));
        }
        assert_eq!(linearizable.len(), fault_nemeses().count());
        // The CI suite has one, also required.
        let short = short();
        let ci: Vec<&Scenario> = short
            .iter()
            .filter(|s| s.consistency == Consistency::Linearizable)
            .collect();
        assert_eq!(ci.len(), 1);
        assert_eq!(ci[0].must_be_valid, ["linearizability"]);
        assert_eq!(ci[0].coordinators, Coordinators::Random);
    }

    fn report_with(scenario: &Scenario, lin: Verdict) -> RunReport {
        let checks = crate::checker::CheckResults {
            linearizability: Some(crate::checker::register::LinearizabilityResult {
                verdict: lin,
                ..Default::default()
            }),
            ..Default::default()
        };
        RunReport {
            scenario: scenario.clone(),
            run_dir: std::path::PathBuf::new(),
            network: "namespaces".into(),
            started_unix_ms: 0,
            duration_s: 0.0,
            ops: Default::default(),
            nemesis: Vec::new(),
            repair: Vec::new(),
            checks,
            passed: false,
            notes: Vec::new(),
        }
    }

    #[test]
    fn a_linearizable_scenario_fails_unless_the_history_is_proven_linearizable() {
        let lin = register_random_coordinators(Consistency::Linearizable, NemesisKind::ClockSkew);
        let quorum = register_random_coordinators(Consistency::Quorum, NemesisKind::ClockSkew);
        let met = |s: &Scenario, v| scenario::expectations_met(&report_with(s, v));
        assert!(met(&lin, Verdict::Valid));
        assert!(!met(&lin, Verdict::Invalid), "must fail the suite");
        assert!(
            !met(&lin, Verdict::Unknown),
            "an exhausted search proves nothing"
        );
        assert!(met(&quorum, Verdict::Valid));
        assert!(met(&quorum, Verdict::Invalid), "recorded, not required");
        assert!(met(&quorum, Verdict::Unknown));
    }
}
