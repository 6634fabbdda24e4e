//! What the benchmark measures about its own process: CPU time of the gateway's
//! threads (from `/proc/self/task`, so the embedded broker and the load generator
//! are not counted), the whole process's CPU, and resident memory.

use std::time::Duration;

/// CPU time consumed so far by the threads whose name starts with one of `prefixes`.
pub fn threads_cpu(prefixes: &[&str]) -> Duration {
    let mut ticks: u64 = 0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !prefixes.iter().any(|p| comm.trim_end().starts_with(p)) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        ticks += stat_ticks(&stat);
    }
    // /proc reports in USER_HZ, which Linux fixes at 100 for this interface.
    Duration::from_millis(ticks * 10)
}

/// CPU time (user + system) of the whole process, broker and load included.
pub fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    Duration::from_millis(stat_ticks(&stat) * 10)
}

/// utime + stime of a `/proc/.../stat` line, in USER_HZ ticks.
fn stat_ticks(stat: &str) -> u64 {
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    utime + stime
}

/// (current RSS, peak RSS) of this process in KiB, from `/proc/self/status`.
pub fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The `q` quantile (0..=1) of `v`, which gets sorted.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::quantile(&mut v, 0.5), 51.0);
        assert_eq!(super::quantile(&mut v, 0.99), 99.0);
    }
}
