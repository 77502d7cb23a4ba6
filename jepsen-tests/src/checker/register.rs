//! The register checker: is each key's history linearizable as a read/write register?
//!
//! A Wing-Gong-Lowe search (as in Knossos and Porcupine), one key at a time (a history is
//! linearizable when each key's is, because keys are independent objects). The search
//! linearizes, one at a time, any pending operation invoked before the earliest completion of the
//! pending `ok` operations, applies it to the register, and backtracks when a read disagrees. A
//! configuration (set of linearized operations, register value) seen before is not explored
//! again; the set is hashed with two 64-bit Zobrist keys per operation (a false match needs a
//! 128-bit collision). The search stops after a step budget and then answers `unknown`.
//!
//! Outcomes: `ok` operations must be linearized between invoke and completion; a `fail` write
//! never took effect and is dropped; an `info` write may take effect at any point after its
//! invocation, or never; a read that did not end `ok` constrains nothing and is dropped. Written
//! values are unique, so an `info` write that no read observed can be dropped too (placing it can
//! never make a history valid that is not valid without it).

use super::Verdict;
use crate::history::{Op, OpKind, Outcome};
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Search steps per key before giving up with `unknown`.
pub const DEFAULT_STEP_BUDGET: u64 = 2_000_000;
/// Operations listed around a failure.
const MAX_WINDOW_OPS: usize = 24;
/// Register values listed as possible just before a failure.
const MAX_STATES: usize = 8;

/// The linearizability verdict of a whole history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearizabilityResult {
    /// Invalid when any key is; unknown when any key's search ran out of budget.
    pub verdict: Verdict,
    /// One line explaining the verdict.
    pub reason: String,
    /// Per key.
    pub keys: Vec<KeyResult>,
}

/// The verdict for one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyResult {
    /// The key.
    pub key: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Operations the search considered.
    pub ops: usize,
    /// Unknown (`info`) writes dropped because no read observed their value.
    pub unobserved_unknown_writes: usize,
    /// Search steps taken.
    pub steps: u64,
    /// `ok` reads that returned the value of a write recorded as `fail` (the client said it was
    /// certainly not applied): each one alone makes the key non-linearizable, and points at the
    /// error-to-outcome mapping (the client's or the harness's) rather than at the level.
    #[serde(default)]
    pub reads_of_failed_writes: usize,
    /// Where the search got stuck, when the key is not linearizable.
    pub window: Option<FailureWindow>,
}

/// The first non-linearizable window of a key: the deepest point the search reached and the
/// operation it could not linearize there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureWindow {
    /// The operation that cannot be linearized (the earliest-completing pending `ok` one).
    pub op: OpSummary,
    /// Register values possible just before it (`None`: never written).
    pub states: Vec<Option<String>>,
    /// Operations linearized before the window.
    pub linearized_before: usize,
    /// Start of the window: invocation of the earliest pending operation (ns from run start).
    pub start_ns: u64,
    /// End of the window: completion of [`FailureWindow::op`].
    pub end_ns: u64,
    /// Operations overlapping the window.
    pub concurrent: Vec<OpSummary>,
    /// A sentence saying what went wrong.
    pub explanation: String,
}

/// An operation as shown in a failure window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpSummary {
    /// Client process.
    pub process: u32,
    /// Read or write.
    pub kind: OpKind,
    /// Written or read value.
    pub value: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Invocation time (ns from run start).
    pub invoke_ns: u64,
    /// Completion time (ns from run start).
    pub complete_ns: u64,
}

impl OpSummary {
    fn of(op: &Op) -> OpSummary {
        OpSummary {
            process: op.process,
            kind: op.kind,
            value: op.value.clone(),
            outcome: op.outcome,
            invoke_ns: op.invoke_ns,
            complete_ns: op.complete_ns,
        }
    }
}

/// Checks every key of a register-workload history with [`DEFAULT_STEP_BUDGET`].
pub fn check(ops: &[Op]) -> LinearizabilityResult {
    check_with_budget(ops, DEFAULT_STEP_BUDGET)
}

/// Checks every key with a step budget per key.
pub fn check_with_budget(ops: &[Op], budget: u64) -> LinearizabilityResult {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let keys: Vec<KeyResult> = by_key
        .into_iter()
        .map(|(key, ops)| check_key(key, &ops, budget))
        .collect();
    let verdict = keys
        .iter()
        .fold(Verdict::Valid, |acc, k| acc.and(k.verdict));
    let reason = match verdict {
        Verdict::Valid => format!("all {} key(s) linearizable", keys.len()),
        Verdict::Invalid => {
            let bad: Vec<&str> = keys
                .iter()
                .filter(|k| k.verdict == Verdict::Invalid)
                .map(|k| k.key.as_str())
                .collect();
            let first = keys
                .iter()
                .find_map(|k| k.window.as_ref())
                .map(|w| format!(": {}", w.explanation))
                .unwrap_or_default();
            format!("not linearizable: key(s) {}{first}", bad.join(", "))
        }
        Verdict::Unknown => format!("search budget of {budget} steps per key exhausted"),
    };
    LinearizabilityResult {
        verdict,
        reason,
        keys,
    }
}

/// An operation prepared for the search.
struct SearchOp {
    invoke: u64,
    /// Completion; `u64::MAX` for an `info` write (it may take effect at any later time).
    ret: u64,
    /// `ok` operations must be linearized; `info` writes may be left out.
    required: bool,
    /// Write of a value id, or read of a value id (0: nothing written yet).
    write: bool,
    value: u32,
    /// Index into the key's operations, for reporting.
    source: usize,
}

fn check_key(key: &str, ops: &[&Op], budget: u64) -> KeyResult {
    let (search_ops, values, unobserved) = prepare(ops);
    let mut search = Search::new(&search_ops);
    let outcome = search.run(budget);
    let window = (outcome == Verdict::Invalid).then(|| search.window(ops, &search_ops, &values));
    KeyResult {
        key: key.to_string(),
        verdict: outcome,
        ops: search_ops.len(),
        unobserved_unknown_writes: unobserved,
        steps: search.steps,
        reads_of_failed_writes: reads_of_failed_writes(ops),
        window,
    }
}

/// The write recorded as `fail` that wrote `value`, if any.
fn failed_write_of<'o>(ops: &[&'o Op], value: &str) -> Option<&'o Op> {
    ops.iter()
        .find(|o| {
            o.kind == OpKind::Write
                && o.outcome == Outcome::Fail
                && o.value.as_deref() == Some(value)
        })
        .copied()
}

/// `ok` reads that returned a value only a write recorded as `fail` wrote.
fn reads_of_failed_writes(ops: &[&Op]) -> usize {
    let failed: HashSet<&str> = ops
        .iter()
        .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Fail)
        .filter_map(|o| o.value.as_deref())
        .collect();
    ops.iter()
        .filter(|o| o.kind == OpKind::Read && o.outcome == Outcome::Ok)
        .filter(|o| o.value.as_deref().is_some_and(|v| failed.contains(v)))
        .count()
}

/// Turns a key's operations into search operations sorted by invocation, with value ids.
/// Returns them, the value of each id (index = id - 1) and the number of dropped unobserved
/// `info` writes.
fn prepare(ops: &[&Op]) -> (Vec<SearchOp>, Vec<String>, usize) {
    let observed: HashSet<&str> = ops
        .iter()
        .filter(|o| o.kind == OpKind::Read && o.outcome == Outcome::Ok)
        .filter_map(|o| o.value.as_deref())
        .collect();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut values: Vec<String> = Vec::new();
    let mut id_of = |v: &str| -> u32 {
        if let Some(&id) = ids.get(v) {
            return id;
        }
        values.push(v.to_string());
        let id = u32::try_from(values.len()).unwrap_or(u32::MAX);
        ids.insert(v.to_string(), id);
        id
    };
    let mut out = Vec::new();
    let mut unobserved = 0;
    for (source, op) in ops.iter().enumerate() {
        let (required, ret) = match (op.kind, op.outcome) {
            (_, Outcome::Ok) => (true, op.complete_ns),
            (OpKind::Write, Outcome::Info) => {
                if !op.value.as_deref().is_some_and(|v| observed.contains(v)) {
                    unobserved += 1;
                    continue;
                }
                (false, u64::MAX)
            }
            // A failed write never happened; a read without an answer constrains nothing.
            _ => continue,
        };
        let value = match &op.value {
            Some(v) => id_of(v),
            None if op.kind == OpKind::Read => 0,
            None => continue, // a write without a value cannot be checked
        };
        out.push(SearchOp {
            invoke: op.invoke_ns,
            ret,
            required,
            write: op.kind == OpKind::Write,
            value,
            source,
        });
    }
    out.sort_by_key(|o| (o.invoke, o.ret));
    (out, values, unobserved)
}

/// The Wing-Gong-Lowe search over one key's operations.
struct Search<'a> {
    ops: &'a [SearchOp],
    linearized: Vec<u64>,
    /// Pending required operations by completion time.
    returns: BTreeSet<(u64, usize)>,
    required_total: usize,
    required_done: usize,
    state: u32,
    hash: (u64, u64),
    zobrist: Vec<(u64, u64)>,
    memo: HashSet<(u64, u64, u32)>,
    stack: Vec<(usize, u32)>,
    steps: u64,
    best_depth: usize,
    best_states: Vec<u32>,
    best_blocker: Option<usize>,
    best_first_pending: Option<usize>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [SearchOp]) -> Search<'a> {
        // Fixed seed: the keys only need to be distinct and random-looking, and a fixed seed
        // keeps a run's verdict reproducible.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_1ea2);
        let zobrist = ops
            .iter()
            .map(|_| (rng.next_u64(), rng.next_u64()))
            .collect();
        let returns = ops
            .iter()
            .enumerate()
            .filter(|(_, o)| o.required)
            .map(|(i, o)| (o.ret, i))
            .collect();
        let mut s = Search {
            ops,
            linearized: vec![0; ops.len().div_ceil(64)],
            returns,
            required_total: ops.iter().filter(|o| o.required).count(),
            required_done: 0,
            state: 0,
            hash: (0, 0),
            zobrist,
            memo: HashSet::new(),
            stack: Vec::new(),
            steps: 0,
            best_depth: 0,
            best_states: vec![0],
            best_blocker: None,
            best_first_pending: None,
        };
        s.memo.insert((0, 0, 0));
        s.best_blocker = s.returns.first().map(|&(_, i)| i);
        s.best_first_pending = s.next_pending(0);
        s
    }

    fn toggle(&mut self, i: usize) {
        self.linearized[i / 64] ^= 1 << (i % 64);
        self.hash.0 ^= self.zobrist[i].0;
        self.hash.1 ^= self.zobrist[i].1;
    }

    /// The first operation at or after `from` that is not linearized.
    fn next_pending(&self, from: usize) -> Option<usize> {
        let mut word = from / 64;
        if word >= self.linearized.len() {
            return None;
        }
        let mut bits = !self.linearized[word] & (u64::MAX << (from % 64));
        loop {
            if bits != 0 {
                let i = word * 64 + bits.trailing_zeros() as usize;
                return (i < self.ops.len()).then_some(i);
            }
            word += 1;
            if word >= self.linearized.len() {
                return None;
            }
            bits = !self.linearized[word];
        }
    }

    /// The register after applying operation `i`, or `None` when a read disagrees.
    fn apply(&self, i: usize) -> Option<u32> {
        let op = &self.ops[i];
        if op.write {
            Some(op.value)
        } else {
            (op.value == self.state).then_some(self.state)
        }
    }

    fn run(&mut self, budget: u64) -> Verdict {
        let mut from = 0;
        loop {
            if self.required_done == self.required_total {
                return Verdict::Valid;
            }
            self.steps += 1;
            if self.steps > budget {
                return Verdict::Unknown;
            }
            match self.next_candidate(from) {
                Some((i, state)) => {
                    self.stack.push((i, self.state));
                    self.linearize(i, state);
                    from = 0;
                }
                None => {
                    let Some((i, previous)) = self.stack.pop() else {
                        return Verdict::Invalid;
                    };
                    self.undo(i, previous);
                    from = i + 1;
                }
            }
        }
    }

    /// The next operation at or after `from` that may be linearized now and leads to a
    /// configuration not seen before, with the register value after it.
    fn next_candidate(&mut self, from: usize) -> Option<(usize, u32)> {
        let horizon = self.returns.first().map_or(u64::MAX, |&(ret, _)| ret);
        let mut cursor = self.next_pending(from);
        while let Some(i) = cursor {
            if self.ops[i].invoke > horizon {
                return None;
            }
            if let Some(state) = self.apply(i) {
                let (h0, h1) = (
                    self.hash.0 ^ self.zobrist[i].0,
                    self.hash.1 ^ self.zobrist[i].1,
                );
                if self.memo.insert((h0, h1, state)) {
                    return Some((i, state));
                }
            }
            cursor = self.next_pending(i + 1);
        }
        None
    }

    fn linearize(&mut self, i: usize, state: u32) {
        self.toggle(i);
        if self.ops[i].required {
            self.returns.remove(&(self.ops[i].ret, i));
            self.required_done += 1;
        }
        self.state = state;
        if self.required_done > self.best_depth {
            self.best_depth = self.required_done;
            self.best_states = vec![state];
            self.best_blocker = self.returns.first().map(|&(_, b)| b);
            self.best_first_pending = self.next_pending(0);
        } else if self.required_done == self.best_depth
            && self.best_states.len() < MAX_STATES
            && !self.best_states.contains(&state)
        {
            self.best_states.push(state);
        }
    }

    fn undo(&mut self, i: usize, previous: u32) {
        self.toggle(i);
        if self.ops[i].required {
            self.returns.insert((self.ops[i].ret, i));
            self.required_done -= 1;
        }
        self.state = previous;
    }

    /// Describes the deepest point reached, after the search failed.
    fn window(&self, ops: &[&Op], search_ops: &[SearchOp], values: &[String]) -> FailureWindow {
        let value_of = |id: u32| -> Option<String> {
            id.checked_sub(1)
                .and_then(|i| values.get(i as usize))
                .cloned()
        };
        let blocker = self.best_blocker.and_then(|b| search_ops.get(b));
        let start_ns = self
            .best_first_pending
            .and_then(|p| search_ops.get(p))
            .map_or(0, |o| o.invoke);
        let end_ns = blocker.map_or(start_ns, |b| b.ret);
        let op = blocker
            .and_then(|b| ops.get(b.source))
            .map(|o| OpSummary::of(o));
        let states: Vec<Option<String>> = self.best_states.iter().map(|&s| value_of(s)).collect();
        let concurrent: Vec<OpSummary> = search_ops
            .iter()
            .filter(|o| o.invoke <= end_ns && o.ret >= start_ns)
            .filter_map(|o| ops.get(o.source))
            .take(MAX_WINDOW_OPS)
            .map(|o| OpSummary::of(o))
            .collect();
        let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "nothing".into());
        let explanation = match &op {
            Some(o) => {
                let mut e = format!(
                    "{} of {} by process {} ({:.3}-{:.3} s) cannot be linearized: after {} operation(s) the register could only hold {}",
                    match o.kind {
                        OpKind::Read => "read",
                        OpKind::Write => "write",
                    },
                    shown(&o.value),
                    o.process,
                    o.invoke_ns as f64 / 1e9,
                    o.complete_ns as f64 / 1e9,
                    self.best_depth,
                    states.iter().map(shown).collect::<Vec<_>>().join(" or "),
                );
                let failed = (o.kind == OpKind::Read)
                    .then(|| o.value.as_deref().and_then(|v| failed_write_of(ops, v)))
                    .flatten();
                if let Some(w) = failed {
                    e.push_str(&format!(
                        " (its value was written by a write recorded as failed: process {}, {:.3}-{:.3} s, {})",
                        w.process,
                        w.invoke_ns as f64 / 1e9,
                        w.complete_ns as f64 / 1e9,
                        w.error.as_deref().unwrap_or("no error text"),
                    ));
                }
                e
            }
            None => "no linearization exists".into(),
        };
        FailureWindow {
            op: op.unwrap_or(OpSummary {
                process: 0,
                kind: OpKind::Read,
                value: None,
                outcome: Outcome::Ok,
                invoke_ns: start_ns,
                complete_ns: end_ns,
            }),
            states,
            linearized_before: self.best_depth,
            start_ns,
            end_ns,
            concurrent,
            explanation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Phase;

    fn op(kind: OpKind, value: Option<&str>, outcome: Outcome, invoke: u64, complete: u64) -> Op {
        Op {
            process: 0,
            kind,
            key: "r".into(),
            value: value.map(str::to_string),
            outcome,
            invoke_ns: invoke,
            complete_ns: complete,
            error: None,
            coordinator: None,
            phase: Phase::Main,
            attempts: None,
        }
    }
    fn w(v: &str, a: u64, b: u64) -> Op {
        op(OpKind::Write, Some(v), Outcome::Ok, a, b)
    }
    fn r(v: Option<&str>, a: u64, b: u64) -> Op {
        op(OpKind::Read, v, Outcome::Ok, a, b)
    }

    #[test]
    fn sequential_and_concurrent_histories_are_valid() {
        let h = vec![
            r(None, 0, 5),
            w("a", 10, 20),
            r(Some("a"), 30, 40),
            w("b", 50, 70),
            // Concurrent with the write of b: may see a or b.
            r(Some("a"), 55, 60),
            r(Some("b"), 65, 80),
        ];
        let res = check(&h);
        assert_eq!(res.verdict, Verdict::Valid, "{res:?}");
    }

    #[test]
    fn a_stale_read_is_invalid_with_its_window() {
        let h = vec![
            w("a", 0, 10),
            w("b", 20, 30),
            // Starts after b was acknowledged, yet sees a.
            r(Some("a"), 40, 50),
        ];
        let res = check(&h);
        assert_eq!(res.verdict, Verdict::Invalid);
        let window = res.keys[0].window.as_ref().expect("window");
        assert_eq!(window.op.value.as_deref(), Some("a"));
        assert_eq!(window.op.kind, OpKind::Read);
        assert_eq!(window.states, vec![Some("b".to_string())]);
        assert_eq!(window.linearized_before, 2);
        assert!(
            res.reason.contains("cannot be linearized"),
            "{}",
            res.reason
        );
    }

    #[test]
    fn reading_a_failed_or_never_written_value_is_invalid() {
        let mut failed = op(OpKind::Write, Some("x"), Outcome::Fail, 0, 10);
        failed.error = Some("Unavailable: nothing was written".into());
        let h = vec![failed, r(Some("x"), 20, 30)];
        let res = check(&h);
        assert_eq!(res.verdict, Verdict::Invalid);
        // The report says the read value came from a write recorded as failed.
        assert_eq!(res.keys[0].reads_of_failed_writes, 1);
        assert!(
            res.reason.contains("written by a write recorded as failed")
                && res.reason.contains("Unavailable: nothing was written"),
            "{}",
            res.reason
        );
        let ghost = check(&[r(Some("ghost"), 0, 1)]);
        assert_eq!(ghost.verdict, Verdict::Invalid);
        assert_eq!(ghost.keys[0].reads_of_failed_writes, 0);
        assert!(
            !ghost.reason.contains("recorded as failed"),
            "{}",
            ghost.reason
        );
    }

    #[test]
    fn unknown_writes_may_apply_late_or_never_but_not_before_invocation() {
        // An info write observed long after it timed out: fine.
        let late = vec![
            op(OpKind::Write, Some("x"), Outcome::Info, 0, 10),
            r(None, 20, 30),
            r(Some("x"), 40, 50),
        ];
        assert_eq!(check(&late).verdict, Verdict::Valid);
        // Never observed: dropped, fine.
        let never = vec![
            op(OpKind::Write, Some("y"), Outcome::Info, 0, 10),
            r(None, 20, 30),
        ];
        let res = check(&never);
        assert_eq!(res.verdict, Verdict::Valid);
        assert_eq!(res.keys[0].unobserved_unknown_writes, 1);
        // Observed before it was invoked: impossible.
        let early = vec![
            r(Some("z"), 0, 10),
            op(OpKind::Write, Some("z"), Outcome::Info, 20, 30),
        ];
        assert_eq!(check(&early).verdict, Verdict::Invalid);
        // Once a later value was read, the unknown write cannot come back.
        let flip = vec![
            op(OpKind::Write, Some("x"), Outcome::Info, 0, 10),
            w("y", 20, 30),
            r(Some("x"), 40, 50),
            r(Some("y"), 60, 70),
            r(Some("x"), 80, 90),
        ];
        assert_eq!(check(&flip).verdict, Verdict::Invalid);
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut h = vec![w("a", 0, 10), r(Some("a"), 20, 30)];
        let mut other = vec![w("b", 0, 10), r(None, 20, 30)];
        for o in &mut other {
            o.key = "s".into();
        }
        h.extend(other);
        let res = check(&h);
        assert_eq!(res.verdict, Verdict::Invalid);
        let verdicts: Vec<(&str, Verdict)> = res
            .keys
            .iter()
            .map(|k| (k.key.as_str(), k.verdict))
            .collect();
        assert_eq!(verdicts, [("r", Verdict::Valid), ("s", Verdict::Invalid)]);
    }

    #[test]
    fn an_exhausted_budget_is_unknown_not_a_hang() {
        // Many fully concurrent writes and a final read of the first: valid, but the search needs
        // more than a handful of steps.
        let mut h: Vec<Op> = (0..12).map(|i| w(&format!("v{i}"), 0, 1000)).collect();
        h.push(r(Some("v0"), 2000, 2001));
        assert_eq!(check_with_budget(&h, 5).verdict, Verdict::Unknown);
        let res = check(&h);
        assert_eq!(res.verdict, Verdict::Valid);
        assert!(res.keys[0].steps > 5, "{} steps", res.keys[0].steps);
    }

    #[test]
    fn a_long_valid_history_checks_quickly() {
        let mut h = Vec::new();
        for i in 0..3000u64 {
            let t = i * 100;
            h.push(w(&format!("v{i}"), t, t + 60));
            h.push(r(Some(&format!("v{i}")), t + 30, t + 90));
        }
        let res = check(&h);
        assert_eq!(res.verdict, Verdict::Valid);
        assert!(res.keys[0].steps < 100_000, "{} steps", res.keys[0].steps);
    }
}
