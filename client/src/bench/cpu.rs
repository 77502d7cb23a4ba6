//! CPU time of processes, read from `/proc/<pid>/stat` (user + system time of all threads,
//! exited ones included), for the benchmark's CPU-per-operation figure.

use std::path::Path;

/// Seconds of CPU (user + system) process `pid` has used so far, or `None` when it is gone or
/// `/proc` is unreadable.
pub fn process_cpu_secs(pid: i32) -> Option<f64> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    parse_stat_cpu_ticks(&stat).map(|ticks| ticks as f64 / ticks_per_sec())
}

/// CPU of this process so far.
pub fn own_cpu_secs() -> Option<f64> {
    process_cpu_secs(std::process::id() as i32)
}

/// Sum over `pids`; `None` if any is unreadable (a node died mid-run: the figure would lie).
pub fn total_cpu_secs(pids: &[i32]) -> Option<f64> {
    pids.iter().map(|&p| process_cpu_secs(p)).sum()
}

fn ticks_per_sec() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses
/// and may itself contain spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line =
            "4242 (ringkv (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 9 0 1 1 1";
        assert_eq!(parse_stat_cpu_ticks(line), Some(1801));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        // Spin for 200 ms of wall time: at least a few clock ticks of CPU.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        assert!(own_cpu_secs().is_some_and(|s| s > 0.0));
        assert_eq!(total_cpu_secs(&[i32::MAX]), None);
    }
}
