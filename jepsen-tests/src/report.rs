//! What a run leaves behind: `history.jsonl` (every operation), `results.json` (the
//! [`RunReport`]: scenario, nemesis windows, repair rounds, checker results) and `index.html`
//! (verdicts and two hand-made inline SVG plots: the latency of every operation over time with
//! the nemesis windows shaded, and throughput per second by outcome). Also the one-screen text
//! summary the CLI prints.

use crate::checker::Verdict;
use crate::error::HarnessError;
use crate::history::{self, Op, OpKind, Outcome, Phase};
use crate::nemesis::NemesisWindow;
use crate::scenario::RunReport;
use std::fmt::Write as _;

/// Most points drawn in the latency plot (evenly thinned beyond).
const MAX_PLOT_POINTS: usize = 40_000;
const PLOT_WIDTH: f64 = 1000.0;
const PLOT_HEIGHT: f64 = 320.0;
const MARGIN_LEFT: f64 = 60.0;
const MARGIN_RIGHT: f64 = 20.0;
const MARGIN_TOP: f64 = 30.0;
const MARGIN_BOTTOM: f64 = 40.0;
/// Top of the legend, above the plot area so it never hides points.
const LEGEND_Y: f64 = 8.0;

/// Writes the run's files into its directory.
pub fn write_run(report: &RunReport, ops: &[Op]) -> Result<(), HarnessError> {
    let dir = &report.run_dir;
    let history_path = dir.join("history.jsonl");
    history::write_jsonl(&history_path, ops).map_err(HarnessError::io(&history_path))?;
    let results_path = dir.join("results.json");
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| HarnessError::Setup(format!("cannot encode results: {e}")))?;
    std::fs::write(&results_path, json).map_err(HarnessError::io(&results_path))?;
    let html_path = dir.join("index.html");
    std::fs::write(&html_path, html(report, ops)).map_err(HarnessError::io(&html_path))?;
    Ok(())
}

/// The one-screen summary of a run.
pub fn summary(r: &RunReport) -> String {
    let s = &r.scenario;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== {}: {} workload at {}, nemesis {}, {} nodes (rf {}), {} s, {} clients, {} coordinators, {} network",
        s.name,
        s.workload,
        s.consistency,
        s.nemesis,
        s.nodes,
        s.rf,
        s.time.as_secs(),
        s.concurrency,
        s.coordinators,
        r.network
    );
    let o = &r.ops;
    let _ = writeln!(
        out,
        "   ops: {} total, {} ok, {} fail, {} info; ok latency p50 {:.1} ms, p99 {:.1} ms; {:.0} ok/s; {} ok write(s) retried",
        o.total, o.ok, o.fail, o.info, o.p50_ms, o.p99_ms, o.ok_per_s, o.retried_writes
    );
    let faults: Vec<String> = r.nemesis.iter().map(|w| w.description.clone()).collect();
    if !faults.is_empty() {
        let _ = writeln!(out, "   faults: {}", faults.join("; "));
    }
    let rounds = r.repair.iter().map(|e| e.round).max().unwrap_or(0);
    let repaired: u64 = r
        .repair
        .iter()
        .filter_map(|e| e.report.as_ref().ok())
        .map(|rep| rep.keys_pulled + rep.keys_pushed)
        .sum();
    let _ = writeln!(
        out,
        "   repair: {rounds} round(s) after heal, {repaired} key(s) repaired"
    );
    if let Some(set) = &r.checks.set {
        let _ = writeln!(
            out,
            "   set:             {:<8} acknowledged {}, unknown {} ({} present), failed {}, LOST {}  ({})",
            set.verdict.label(),
            set.acknowledged,
            set.unknown,
            set.unknown_present,
            set.failed,
            set.lost,
            set.reason
        );
    }
    if let Some(lin) = &r.checks.linearizability {
        let _ = writeln!(
            out,
            "   linearizability: {:<8} {}",
            lin.verdict.label(),
            lin.reason
        );
        let keys: Vec<String> = lin
            .keys
            .iter()
            .map(|k| {
                let failed = if k.reads_of_failed_writes > 0 {
                    format!(
                        ", {} read(s) of writes recorded as failed",
                        k.reads_of_failed_writes
                    )
                } else {
                    String::new()
                };
                format!(
                    "{} {} ops {} ({} steps{failed})",
                    k.key,
                    k.ops,
                    k.verdict.label(),
                    k.steps
                )
            })
            .collect();
        if !keys.is_empty() {
            let _ = writeln!(out, "   keys:            {}", keys.join("; "));
        }
        for k in &lin.keys {
            if let Some(w) = &k.window {
                let _ = writeln!(
                    out,
                    "   {} window {:.3}-{:.3} s: {}",
                    k.key,
                    w.start_ns as f64 / 1e9,
                    w.end_ns as f64 / 1e9,
                    w.explanation
                );
            }
        }
    }
    if let Some(c) = &r.checks.convergence {
        let _ = writeln!(
            out,
            "   convergence:     {:<8} {}",
            c.verdict.label(),
            c.reason
        );
    }
    if let Some(a) = &r.checks.availability {
        let _ = writeln!(
            out,
            "   availability:    {:<8} {}",
            a.verdict.label(),
            a.reason
        );
        for u in a.unserved.iter().take(5) {
            let _ = writeln!(out, "   unserved: {u}");
        }
    }
    for note in &r.notes {
        let _ = writeln!(out, "   note: {note}");
    }
    let _ = writeln!(
        out,
        "   {} -> {}",
        if r.passed { "PASS" } else { "FAIL" },
        r.run_dir.join("index.html").display()
    );
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn verdict_cell(v: Verdict) -> String {
    let color = match v {
        Verdict::Valid => "#1b7f3b",
        Verdict::Invalid => "#b3261e",
        Verdict::Unknown => "#9a6700",
    };
    format!(
        "<td style=\"color:{color};font-weight:bold\">{}</td>",
        v.label()
    )
}

/// The HTML page of a run.
pub fn html(r: &RunReport, ops: &[Op]) -> String {
    let s = &r.scenario;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name}</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px}}\
         pre{{background:#f6f6f6;padding:8px;overflow:auto}}</style></head><body>\
         <h1>{name} — {pass}</h1>",
        name = esc(&s.name),
        pass = if r.passed { "PASS" } else { "FAIL" }
    );
    let _ = write!(
        h,
        "<p>{} workload at {}, nemesis <b>{}</b>, {} nodes (rf {}), {} s, {} clients at {} ops/s, {} coordinators, {} write retries, {} network, seed {}.</p>",
        s.workload, s.consistency, s.nemesis, s.nodes, s.rf, s.time.as_secs(), s.concurrency, s.rate, s.coordinators, s.write_retries, r.network, s.seed
    );
    h.push_str("<h2>Verdicts</h2><table><tr><th>checker</th><th>verdict</th><th>details</th></tr>");
    if let Some(set) = &r.checks.set {
        let _ = write!(
            h,
            "<tr><td>set</td>{}<td>{} attempted, {} acknowledged, {} unknown ({} present, {} absent), {} failed, <b>{} lost</b>; {}</td></tr>",
            verdict_cell(set.verdict), set.attempted, set.acknowledged, set.unknown, set.unknown_present,
            set.unknown_absent, set.failed, set.lost, esc(&set.reason)
        );
    }
    if let Some(lin) = &r.checks.linearizability {
        let _ = write!(
            h,
            "<tr><td>linearizability</td>{}<td>{}</td></tr>",
            verdict_cell(lin.verdict),
            esc(&lin.reason)
        );
    }
    if let Some(c) = &r.checks.convergence {
        let _ = write!(
            h,
            "<tr><td>convergence</td>{}<td>{}</td></tr>",
            verdict_cell(c.verdict),
            esc(&c.reason)
        );
    }
    if let Some(a) = &r.checks.availability {
        let _ = write!(
            h,
            "<tr><td>availability</td>{}<td>{}</td></tr>",
            verdict_cell(a.verdict),
            esc(&a.reason)
        );
    }
    h.push_str("</table>");
    for note in &r.notes {
        let _ = write!(h, "<p><i>note: {}</i></p>", esc(note));
    }
    let o = &r.ops;
    let _ = write!(
        h,
        "<h2>Operations</h2><p>{} total: {} ok, {} fail, {} info. Ok latency p50 {:.1} ms, p99 {:.1} ms.</p>",
        o.total, o.ok, o.fail, o.info, o.p50_ms, o.p99_ms
    );
    h.push_str("<h3>Latency of every operation (log scale; shaded: nemesis active)</h3>");
    h.push_str(&latency_svg(ops, &r.nemesis));
    h.push_str("<h3>Throughput of the workload (operations completed per second, by outcome)</h3>");
    h.push_str(&throughput_svg(ops, &r.nemesis));
    h.push_str("<h2>Nemesis</h2><table><tr><th>start s</th><th>end s</th><th>fault</th></tr>");
    for w in &r.nemesis {
        let _ = write!(
            h,
            "<tr><td>{:.1}</td><td>{:.1}</td><td>{}</td></tr>",
            secs(w.start_ns),
            secs(w.end_ns),
            esc(&w.description)
        );
    }
    h.push_str("</table>");
    if let Some(lin) = &r.checks.linearizability {
        h.push_str("<h2>Linearizability per key</h2><table><tr><th>key</th><th>verdict</th><th>ops</th><th>steps</th><th>first non-linearizable window</th></tr>");
        for k in &lin.keys {
            let window = k
                .window
                .as_ref()
                .map(|w| {
                    let ops: Vec<String> = w
                        .concurrent
                        .iter()
                        .map(|o| {
                            format!(
                                "p{} {:?} {} {:?} [{:.3}, {:.3}]",
                                o.process,
                                o.kind,
                                o.value.as_deref().unwrap_or("nil"),
                                o.outcome,
                                secs(o.invoke_ns),
                                secs(o.complete_ns)
                            )
                        })
                        .collect();
                    format!("{}<pre>{}</pre>", esc(&w.explanation), esc(&ops.join("\n")))
                })
                .unwrap_or_default();
            let _ = write!(
                h,
                "<tr><td>{}</td>{}<td>{}</td><td>{}</td><td>{window}</td></tr>",
                esc(&k.key),
                verdict_cell(k.verdict),
                k.ops,
                k.steps
            );
        }
        h.push_str("</table>");
    }
    if let Some(set) = &r.checks.set {
        if !set.lost_keys.is_empty() || !set.failed_present_keys.is_empty() {
            let _ = write!(
                h,
                "<h2>Set anomalies</h2><p>lost: {}</p><p>failed yet present: {}</p>",
                esc(&set.lost_keys.join(", ")),
                esc(&set.failed_present_keys.join(", "))
            );
        }
    }
    if let Some(a) = &r.checks.availability {
        if !a.unserved.is_empty() {
            let _ = write!(
                h,
                "<h2>Unserved operations</h2><pre>{}</pre>",
                esc(&a.unserved.join("\n"))
            );
        }
    }
    if let Some(c) = &r.checks.convergence {
        if !c.examples.is_empty() {
            let text = serde_json::to_string_pretty(&c.examples).unwrap_or_default();
            let _ = write!(h, "<h2>Divergent replicas</h2><pre>{}</pre>", esc(&text));
        }
    }
    h.push_str("<h2>Repair rounds after heal</h2><pre>");
    for e in &r.repair {
        let line = match &e.report {
            Ok(rep) => format!(
                "round {} node {}: {} pairs compared, {} differing, {} pulled, {} pushed, {} failures, {} ms\n",
                e.round, e.node, rep.pairs_compared, rep.pairs_differing, rep.keys_pulled, rep.keys_pushed, rep.failures, rep.millis
            ),
            Err(err) => format!("round {} node {}: error {err}\n", e.round, e.node),
        };
        h.push_str(&esc(&line));
    }
    h.push_str("</pre><p>Files: <a href=\"history.jsonl\">history.jsonl</a>, <a href=\"results.json\">results.json</a>, node logs under <code>cluster/node-*/node.log</code>.</p></body></html>\n");
    h
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Maps run time (s) to an x pixel and back the extent of the plot.
struct Axes {
    t_max: f64,
}

impl Axes {
    fn x(&self, t: f64) -> f64 {
        MARGIN_LEFT + (t / self.t_max).clamp(0.0, 1.0) * (PLOT_WIDTH - MARGIN_LEFT - MARGIN_RIGHT)
    }

    fn inner_height(&self) -> f64 {
        PLOT_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    }

    /// Shaded nemesis windows and the x axis with ticks.
    fn frame(&self, svg: &mut String, windows: &[NemesisWindow]) {
        for w in windows {
            let (x0, x1) = (self.x(secs(w.start_ns)), self.x(secs(w.end_ns)));
            let _ = write!(
                svg,
                "<rect x=\"{x0:.1}\" y=\"{MARGIN_TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#888\" fill-opacity=\"0.18\"><title>{}</title></rect>",
                (x1 - x0).max(1.0),
                self.inner_height(),
                esc(&w.description)
            );
        }
        let y = PLOT_HEIGHT - MARGIN_BOTTOM;
        let _ = write!(
            svg,
            "<line x1=\"{MARGIN_LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#333\"/>",
            PLOT_WIDTH - MARGIN_RIGHT
        );
        let step = tick_step(self.t_max);
        let mut t = 0.0;
        while t <= self.t_max + 1e-9 {
            let x = self.x(t);
            let _ = write!(
                svg,
                "<line x1=\"{x:.1}\" y1=\"{y}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#333\"/><text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{t:.0}</text>",
                y + 4.0,
                y + 16.0
            );
            t += step;
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">time since start (s)</text>",
            (PLOT_WIDTH + MARGIN_LEFT) / 2.0,
            PLOT_HEIGHT - 6.0
        );
    }
}

fn tick_step(t_max: f64) -> f64 {
    [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0]
        .into_iter()
        .find(|s| t_max / s <= 15.0)
        .unwrap_or(600.0)
}

fn t_max(ops: &[Op], windows: &[NemesisWindow]) -> f64 {
    let ops_end = ops.iter().map(|o| o.complete_ns).max().unwrap_or(0);
    let nem_end = windows.iter().map(|w| w.end_ns).max().unwrap_or(0);
    secs(ops_end.max(nem_end)).max(1.0)
}

fn svg_open(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{PLOT_WIDTH}\" height=\"{PLOT_HEIGHT}\" viewBox=\"0 0 {PLOT_WIDTH} {PLOT_HEIGHT}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    )
}

/// Colour of an operation by kind and outcome.
fn color(kind: OpKind, outcome: Outcome) -> &'static str {
    match (outcome, kind) {
        (Outcome::Ok, OpKind::Write) => "#1f77b4",
        (Outcome::Ok, OpKind::Read) => "#2ca02c",
        (Outcome::Fail, _) => "#d62728",
        (Outcome::Info, _) => "#ff7f0e",
    }
}

/// Latency scatter plot: x = invocation time, y = latency on a log scale.
pub fn latency_svg(ops: &[Op], windows: &[NemesisWindow]) -> String {
    let axes = Axes {
        t_max: t_max(ops, windows),
    };
    let mut svg = svg_open("latency of every operation over time");
    axes.frame(&mut svg, windows);
    let max_ms = ops.iter().map(Op::latency_ms).fold(10.0_f64, f64::max);
    let (lo, hi) = (0.1_f64.log10(), max_ms.log10().ceil().max(1.0));
    let y = |ms: f64| -> f64 {
        let v = ms.max(0.1).log10();
        MARGIN_TOP + (1.0 - (v - lo) / (hi - lo)) * axes.inner_height()
    };
    let mut decade = lo;
    while decade <= hi + 1e-9 {
        let ms = 10f64.powf(decade);
        let yy = y(ms);
        let _ = write!(
            svg,
            "<line x1=\"{MARGIN_LEFT}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            PLOT_WIDTH - MARGIN_RIGHT,
            MARGIN_LEFT - 4.0,
            yy + 4.0,
            if ms < 1.0 { format!("{ms:.1}") } else { format!("{ms:.0}") }
        );
        decade += 1.0;
    }
    let _ = write!(
        svg,
        "<text x=\"14\" y=\"{:.1}\" font-size=\"12\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">latency (ms)</text>",
        PLOT_HEIGHT / 2.0,
        PLOT_HEIGHT / 2.0
    );
    let stride = ops.len().div_ceil(MAX_PLOT_POINTS).max(1);
    for op in ops.iter().step_by(stride) {
        let r = if op.phase == Phase::Final { 1.0 } else { 1.6 };
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{r}\" fill=\"{}\" fill-opacity=\"0.7\"/>",
            axes.x(secs(op.invoke_ns)),
            y(op.latency_ms()),
            color(op.kind, op.outcome)
        );
    }
    legend(
        &mut svg,
        &[
            ("ok write", color(OpKind::Write, Outcome::Ok)),
            ("ok read", color(OpKind::Read, Outcome::Ok)),
            ("fail", color(OpKind::Write, Outcome::Fail)),
            ("info (unknown)", color(OpKind::Write, Outcome::Info)),
        ],
    );
    svg.push_str("</svg>");
    svg
}

/// Throughput plot: operations completed per second, one line per outcome.
pub fn throughput_svg(ops: &[Op], windows: &[NemesisWindow]) -> String {
    let axes = Axes {
        t_max: t_max(ops, windows),
    };
    let buckets = axes.t_max.ceil() as usize + 1;
    let mut counts = [
        vec![0u64; buckets],
        vec![0u64; buckets],
        vec![0u64; buckets],
    ];
    // The final reads after the heal are a burst that would flatten the workload's curve.
    for op in ops.iter().filter(|o| o.phase == Phase::Main) {
        let b = (secs(op.complete_ns) as usize).min(buckets - 1);
        let series = match op.outcome {
            Outcome::Ok => 0,
            Outcome::Fail => 1,
            Outcome::Info => 2,
        };
        counts[series][b] += 1;
    }
    let max = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let mut svg = svg_open("throughput over time");
    axes.frame(&mut svg, windows);
    let y = |n: f64| MARGIN_TOP + (1.0 - n / max) * axes.inner_height();
    for frac in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let n = max * frac;
        let _ = write!(
            svg,
            "<line x1=\"{MARGIN_LEFT}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{n:.0}</text>",
            y(n),
            PLOT_WIDTH - MARGIN_RIGHT,
            y(n),
            MARGIN_LEFT - 4.0,
            y(n) + 4.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"14\" y=\"{:.1}\" font-size=\"12\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">ops/s</text>",
        PLOT_HEIGHT / 2.0,
        PLOT_HEIGHT / 2.0
    );
    let colors = ["#1b7f3b", "#d62728", "#ff7f0e"];
    for (series, color) in counts.iter().zip(colors) {
        let points: Vec<String> = series
            .iter()
            .enumerate()
            .map(|(i, &n)| format!("{:.1},{:.1}", axes.x(i as f64 + 0.5), y(n as f64)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        );
    }
    legend(
        &mut svg,
        &[("ok", colors[0]), ("fail", colors[1]), ("info", colors[2])],
    );
    svg.push_str("</svg>");
    svg
}

fn legend(svg: &mut String, entries: &[(&str, &str)]) {
    let mut x = MARGIN_LEFT + 10.0;
    for (label, color) in entries {
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
            LEGEND_Y,
            x + 14.0,
            LEGEND_Y + 9.0,
            esc(label)
        );
        x += 24.0 + 7.0 * label.len() as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::NemesisKind;

    fn op(at_s: u64, outcome: Outcome) -> Op {
        Op {
            process: 0,
            kind: OpKind::Write,
            key: "k".into(),
            value: Some("v".into()),
            outcome,
            invoke_ns: at_s * 1_000_000_000,
            complete_ns: at_s * 1_000_000_000 + 2_000_000,
            error: None,
            coordinator: None,
            phase: Phase::Main,
            attempts: None,
        }
    }

    #[test]
    fn plots_draw_every_point_and_shade_nemesis_windows() {
        let ops: Vec<Op> = (0..10)
            .map(|i| {
                op(
                    i,
                    if i % 3 == 0 {
                        Outcome::Info
                    } else {
                        Outcome::Ok
                    },
                )
            })
            .collect();
        let windows = vec![NemesisWindow {
            kind: NemesisKind::Kill,
            description: "killed <3>".into(),
            nodes: vec![3],
            start_ns: 2_000_000_000,
            end_ns: 4_000_000_000,
        }];
        let svg = latency_svg(&ops, &windows);
        assert_eq!(svg.matches("<circle").count(), 10);
        assert!(svg.contains("fill-opacity=\"0.18\""), "shaded window");
        assert!(svg.contains("killed &lt;3&gt;"), "escaped description");
        let svg = throughput_svg(&ops, &windows);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
