//! Scenario matrices: the short suite CI runs (a few 10-second scenarios) and the full matrix
//! (every nemesis under both workloads at QUORUM and ALL, plus a deliberately broken setup that
//! must be caught), and the Markdown table of results the README keeps.

use crate::checker::Verdict;
use crate::error::HarnessError;
use crate::nemesis::{NemesisKind, Schedule};
use crate::scenario::{self, RunOptions, RunReport, Scenario};
use crate::workload::WorkloadKind;
use proto::Consistency;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Which matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SuiteKind {
    /// The CI suite: set at QUORUM under partition-one, kill and pause, and at ALL under
    /// partition-halves, 10 s each.
    Short,
    /// The whole matrix, 30 s per scenario (about 18 minutes).
    Full,
}

const SHORT_TIME: Duration = Duration::from_secs(10);
const SHORT_SCHEDULE: Schedule = Schedule {
    quiet: Duration::from_secs(2),
    fault: Duration::from_secs(3),
};

/// The scenarios of a suite.
pub fn scenarios(kind: SuiteKind) -> Vec<Scenario> {
    match kind {
        SuiteKind::Short => short(),
        SuiteKind::Full => full(),
    }
}

/// The CI suite: set at QUORUM under partition-one, kill and pause, and at ALL under
/// partition-halves.
pub fn short() -> Vec<Scenario> {
    [
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
    .collect()
}

/// The full matrix.
pub fn full() -> Vec<Scenario> {
    let mut out = Vec::new();
    let nemeses = [
        NemesisKind::None,
        NemesisKind::PartitionHalves,
        NemesisKind::PartitionOne,
        NemesisKind::PartitionMajoritiesRing,
        NemesisKind::PartitionBridge,
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::ClockSkew,
    ];
    for level in [Consistency::Quorum, Consistency::All] {
        for nemesis in nemeses {
            out.push(Scenario::new(WorkloadKind::Set, level, nemesis));
        }
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
    out.push(broken_build());
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
        for kind in [SuiteKind::Short, SuiteKind::Full] {
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
        assert!(short_secs <= 45, "the CI suite must stay short");
        assert!(full()
            .iter()
            .any(|s| s.must_fail == ["set"] && s.nemesis == NemesisKind::KillWipe));
    }
}
