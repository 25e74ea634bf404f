//! Medians and ratio lines for the bench reports.

/// The median of `xs` (mean of the middle two for an even count); NaN when empty.
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// "ratio (target ≥ t, met/MISSED)" for a throughput-style ratio where higher is better.
pub fn verdict_at_least(ratio: f64, target: f64) -> String {
    let ok = if ratio >= target { "met" } else { "MISSED" };
    format!("{ratio:.2}x (target >= {target}x: {ok})")
}

/// "ratio (target ≤ t, met/MISSED)" for a cost-style ratio where lower is better.
pub fn verdict_at_most(ratio: f64, target: f64) -> String {
    let ok = if ratio <= target { "met" } else { "MISSED" };
    format!("{ratio:.2}x (target <= {target}x: {ok})")
}

/// CPU seconds (user + system, all threads) used so far by process `pid` (`None`: this
/// process), from `/proc/<pid>/stat` at the kernel's 100 Hz tick. On a shared machine this is
/// the fairer cost measure: it does not count the time other processes held the CPU.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
