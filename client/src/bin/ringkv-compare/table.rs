//! The comparison's results: one row per system and workload, the ratios of ringkv to each
//! peer, as a text table or one JSON object.

use crate::System;
use client::bench::{BenchOptions, BenchReport, OpStats, Workload};
use serde_json::{json, Value};

/// One workload measured on one system.
pub struct Row {
    /// The system.
    pub system: System,
    /// The workload.
    pub workload: Workload,
    /// What `measured` reported.
    pub report: BenchReport,
}

impl Row {
    fn ops_per_s(&self) -> f64 {
        let secs = self.report.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.report.total() as f64 / secs
        } else {
            0.0
        }
    }

    /// The stats of the operations the workload is about (gets for read, puts for write, all of
    /// them merged for mixed).
    fn stats(&self) -> OpStats {
        match self.workload {
            Workload::Read => self.report.read.clone(),
            Workload::Write => self.report.write.clone(),
            Workload::Mixed => {
                let mut all = self.report.read.clone();
                let _ = all.latency_us.add(&self.report.write.latency_us);
                all.ok += self.report.write.ok;
                all.not_found += self.report.write.not_found;
                for (k, n) in &self.report.write.errors {
                    *all.errors.entry(k).or_default() += n;
                }
                all
            }
        }
    }

    fn errors(&self) -> u64 {
        let s = self.stats();
        s.errors.values().sum()
    }

    fn client_cpu_us_per_op(&self) -> Option<f64> {
        let c = self.report.cpu.as_ref()?;
        let n = self.report.total();
        (n > 0).then(|| c.client_secs * 1e6 / n as f64)
    }
}

/// ringkv's figures divided by a peer's, for one workload.
pub struct Ratio {
    /// The peer.
    pub peer: System,
    /// The workload.
    pub workload: Workload,
    /// ringkv ops/s ÷ peer ops/s (above 1: ringkv does more).
    pub ops_per_s: Option<f64>,
    /// ringkv p99 ÷ peer p99 (below 1: ringkv answers faster).
    pub p99: Option<f64>,
}

/// Everything measured in one run.
pub struct Comparison {
    /// The settings every system ran with (`workload` aside).
    pub options: BenchOptions,
    /// CPUs of this machine.
    pub cpus: usize,
    /// Load average before the first system started.
    pub load_before: Option<[f64; 3]>,
    /// Load average after the last one stopped.
    pub load_after: Option<[f64; 3]>,
    /// Every measurement, in the order it ran.
    pub rows: Vec<Row>,
    /// Further observations (ringkv's fsync counts), printed under the table.
    pub notes: Vec<String>,
}

fn divide(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

impl Comparison {
    /// ringkv against each peer row, for the workloads both ran.
    pub fn ratios(&self) -> Vec<Ratio> {
        self.rows
            .iter()
            .filter(|r| !r.system.is_ringkv())
            .filter_map(|peer| {
                let ours = self
                    .rows
                    .iter()
                    .find(|r| r.system == peer.system.ringkv() && r.workload == peer.workload)?;
                Some(Ratio {
                    peer: peer.system,
                    workload: peer.workload,
                    ops_per_s: divide(ours.ops_per_s(), peer.ops_per_s()),
                    p99: divide(
                        ours.stats().quantile_us(0.99) as f64,
                        peer.stats().quantile_us(0.99) as f64,
                    ),
                })
            })
            .collect()
    }

    fn ratio(&self, peer: System, workload: Workload) -> Option<Ratio> {
        self.ratios()
            .into_iter()
            .find(|r| r.peer == peer && r.workload == workload)
    }

    /// The rows in display order: per ringkv setting, per workload, ringkv first.
    fn ordered(&self) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        let setting = |s: System| {
            if s.ringkv() == System::RingkvSync {
                0
            } else {
                1
            }
        };
        let position = |w: Workload| {
            self.options_order()
                .iter()
                .position(|x| *x == w)
                .unwrap_or(usize::MAX)
        };
        // Stable: within a setting and workload, rows keep the order they ran in (ringkv first).
        rows.sort_by_key(|r| (setting(r.system), position(r.workload)));
        rows
    }

    fn options_order(&self) -> Vec<Workload> {
        let mut order: Vec<Workload> = Vec::new();
        for r in &self.rows {
            if !order.contains(&r.workload) {
                order.push(r.workload);
            }
        }
        order
    }

    /// The text table, with the settings above it and what each system acknowledges below.
    pub fn render(&self) -> String {
        let o = &self.options;
        let mut s = String::new();
        s += &format!(
            "ringkv-compare: {} tasks, {}-byte values, {} keys (uniform), {:.0} s per workload, closed loop;\n",
            o.concurrency,
            o.value_size,
            o.keys,
            o.duration.as_secs_f64()
        );
        s +=
            "every system: 3 server processes on 127.0.0.1, run alone, driven by this one process \
              through its client crate\n";
        let load = |l: &Option<[f64; 3]>| {
            l.map_or("?".to_string(), |l| {
                format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
            })
        };
        s += &format!(
            "machine: {} CPUs shared by servers and client; load average {} before, {} after\n\n",
            self.cpus,
            load(&self.load_before),
            load(&self.load_after)
        );
        let header = [
            "system",
            "durability",
            "workload",
            "ops/s",
            "p50 µs",
            "p99 µs",
            "srv µs/op",
            "cli µs/op",
            "errors",
            "ringkv÷peer ops/s",
            "ringkv÷peer p99",
        ];
        let mut lines: Vec<[String; 11]> = vec![header.map(String::from)];
        let mut last_setting = None;
        for r in self.ordered() {
            if last_setting.is_some() && last_setting != Some(r.system.ringkv()) {
                lines.push(Default::default());
            }
            last_setting = Some(r.system.ringkv());
            let st = r.stats();
            let ratio = (!r.system.is_ringkv())
                .then(|| self.ratio(r.system, r.workload))
                .flatten();
            let x = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.2}x"));
            let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
            lines.push([
                r.system.name(),
                r.system.durability(),
                r.workload.name().to_string(),
                format!("{:.0}", r.ops_per_s()),
                st.quantile_us(0.5).to_string(),
                st.quantile_us(0.99).to_string(),
                opt(r.report.server_cpu_us_per_op()),
                opt(r.client_cpu_us_per_op()),
                r.errors().to_string(),
                x(ratio.as_ref().and_then(|r| r.ops_per_s)),
                x(ratio.as_ref().and_then(|r| r.p99)),
            ]);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                lines
                    .iter()
                    .map(|l| l[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for l in &lines {
            if l.iter().all(String::is_empty) {
                s.push('\n');
                continue;
            }
            let cells: Vec<String> = l
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let pad = widths[i].saturating_sub(c.chars().count());
                    // Text columns align left, numbers right.
                    if i < 3 {
                        format!("{c}{}", " ".repeat(pad))
                    } else {
                        format!("{}{c}", " ".repeat(pad))
                    }
                })
                .collect();
            s += cells.join("  ").trim_end();
            s.push('\n');
        }
        s += "\nringkv÷peer: ringkv's ops/s (above 1: ringkv does more) and p99 (below 1: ringkv \
              answers faster) over the peer's, same workload and durability class.\n";
        s += "srv µs/op: CPU of the 3 server processes per operation; cli µs/op: CPU of this \
              process (the load generator and client library) per operation.\n";
        for r in self.ordered() {
            if let Some(p) = r.report.preload.as_ref() {
                s += &format!(
                    "{} ({}): preloaded {} keys in {:.1} s before its read workload, {} errors\n",
                    r.system.name(),
                    r.system.durability(),
                    p.keys,
                    p.elapsed.as_secs_f64(),
                    p.errors
                );
            }
            for (what, st) in [("read", &r.report.read), ("write", &r.report.write)] {
                if !st.errors.is_empty() {
                    let kinds: Vec<String> =
                        st.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
                    s += &format!(
                        "{} {} workload, {what} errors: {}\n",
                        r.system.name(),
                        r.workload.name(),
                        kinds.join(" ")
                    );
                }
            }
        }
        for n in &self.notes {
            s += n;
            s.push('\n');
        }
        s += "\nwhat a success means:\n";
        let mut seen: Vec<System> = Vec::new();
        for r in self.ordered() {
            if !seen.contains(&r.system) {
                seen.push(r.system);
                s += &format!(
                    "  {} ({}): {}\n",
                    r.system.name(),
                    r.system.durability(),
                    r.system.acknowledges()
                );
            }
        }
        s
    }

    /// The results as one JSON object.
    pub fn to_json(&self) -> Value {
        let o = &self.options;
        let rows: Vec<Value> = self
            .ordered()
            .iter()
            .map(|r| {
                let st = r.stats();
                json!({
                    "system": r.system.name(),
                    "durability": r.system.durability(),
                    "acknowledges": r.system.acknowledges(),
                    "workload": r.workload.name(),
                    "ops_per_s": r.ops_per_s(),
                    "p50_us": st.quantile_us(0.5),
                    "p99_us": st.quantile_us(0.99),
                    "server_cpu_us_per_op": r.report.server_cpu_us_per_op(),
                    "client_cpu_us_per_op": r.client_cpu_us_per_op(),
                    "errors": r.errors(),
                    "report": r.report.to_json(),
                })
            })
            .collect();
        let ratios: Vec<Value> = self
            .ratios()
            .iter()
            .map(|r| {
                json!({
                    "ringkv": r.peer.ringkv().durability(),
                    "peer": r.peer.name(),
                    "peer_durability": r.peer.durability(),
                    "workload": r.workload.name(),
                    "ops_per_s": r.ops_per_s,
                    "p99": r.p99,
                })
            })
            .collect();
        json!({
            "ok": true,
            "op": "compare",
            "concurrency": o.concurrency,
            "value_size": o.value_size,
            "keys": o.keys,
            "duration_s": o.duration.as_secs_f64(),
            "cpus": self.cpus,
            "load_average_before": self.load_before,
            "load_average_after": self.load_after,
            "results": rows,
            "ratios": ratios,
            "notes": self.notes,
        })
    }
}

/// One line about a finished workload, for progress messages.
pub fn summary(r: &BenchReport) -> String {
    let secs = r.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        r.total() as f64 / secs
    } else {
        0.0
    };
    let mut st = r.read.clone();
    let _ = st.latency_us.add(&r.write.latency_us);
    let errors: u64 = r.read.errors.values().chain(r.write.errors.values()).sum();
    format!(
        "{rate:.0} ops/s, p50 {} µs, p99 {} µs, {errors} errors",
        st.quantile_us(0.5),
        st.quantile_us(0.99)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use client::bench::keys::Distribution;
    use proto::Consistency;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn options(workload: Workload) -> BenchOptions {
        BenchOptions {
            ops: u64::MAX,
            duration: Duration::from_secs(1),
            concurrency: 4,
            value_size: 100,
            keys: 1000,
            distribution: Distribution::Uniform,
            consistency: Consistency::Quorum,
            workload,
            read_ratio: 0.5,
            rate: None,
        }
    }

    /// `ops` operations in one second, every one taking `latency_us`.
    fn stats(ops: u64, latency_us: u64) -> OpStats {
        let mut latency =
            hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        if ops > 0 {
            latency.record_n(latency_us, ops).expect("in range");
        }
        OpStats {
            latency_us: latency,
            ok: ops,
            not_found: 0,
            errors: BTreeMap::new(),
        }
    }

    fn row(system: System, workload: Workload, ops: u64, latency_us: u64) -> Row {
        let (read, write) = match workload {
            Workload::Write => (stats(0, 0), stats(ops, latency_us)),
            _ => (stats(ops, latency_us), stats(0, 0)),
        };
        Row {
            system,
            workload,
            report: BenchReport {
                options: options(workload),
                preload: None,
                elapsed: Duration::from_secs(1),
                warmup: Duration::ZERO,
                read,
                write,
                cpu: None,
            },
        }
    }

    #[test]
    fn ratios_pair_each_peer_with_its_ringkv_setting_and_workload() {
        let c = Comparison {
            options: options(Workload::Write),
            cpus: 2,
            load_before: Some([1.0, 1.0, 1.0]),
            load_after: None,
            notes: vec!["a note".into()],
            rows: vec![
                row(System::RingkvSync, Workload::Write, 1000, 2000),
                row(System::Etcd, Workload::Write, 500, 4000),
                row(System::RingkvPeriodic, Workload::Write, 3000, 1000),
                row(System::RingkvPeriodic, Workload::Read, 4000, 1000),
                row(System::Redis, Workload::Write, 6000, 500),
                row(System::Redis, Workload::Read, 8000, 250),
                row(System::RedisWait(1), Workload::Write, 3000, 2000),
            ],
        };
        let r = c.ratios();
        assert_eq!(r.len(), 4);
        let find = |peer: System, w: Workload| {
            let x = r
                .iter()
                .find(|x| x.peer == peer && x.workload == w)
                .expect("ratio");
            (x.ops_per_s.expect("ops"), x.p99.expect("p99"))
        };
        let close = |(a, b): (f64, f64), (x, y): (f64, f64)| {
            assert!((a - x).abs() < 0.01 && (b - y).abs() < 0.01, "{a} {b}");
        };
        close(find(System::Etcd, Workload::Write), (2.0, 0.5));
        close(find(System::Redis, Workload::Write), (0.5, 2.0));
        close(find(System::Redis, Workload::Read), (0.5, 4.0));
        close(find(System::RedisWait(1), Workload::Write), (1.0, 0.5));
        let text = c.render();
        assert!(text.contains("2.00x") && text.contains("0.50x"), "{text}");
        assert!(
            text.contains("redis WAIT 1")
                && text.contains("what a success means")
                && text.contains("a note\n"),
            "{text}"
        );
        // ringkv rows come first within each setting and workload.
        let order: Vec<String> = c.ordered().iter().map(|r| r.system.name()).collect();
        assert_eq!(
            order,
            [
                "ringkv",
                "etcd",
                "ringkv",
                "redis",
                "redis WAIT 1",
                "ringkv",
                "redis"
            ]
        );
        let json = c.to_json();
        assert_eq!(json["ratios"].as_array().map(Vec::len), Some(4));
        assert_eq!(json["results"][1]["system"], "etcd");
    }
}
