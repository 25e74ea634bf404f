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

/// Pushes the records a benchmark just built out of the CPU caches, by writing and reading a
/// buffer of twice this machine's last-level cache (32 MiB L3 here; 64 MiB is also ample for
/// most servers). A GC pass in production runs minutes after the records it frees were last
/// touched, with the application's own traffic in between: it meets them cold. Measured right
/// after they were created, 1,000 expired records (100k sessions, 1%) still sit in cache while
/// 10,000 (1M sessions) do not, and the comparison measures the cache, not the store.
pub fn evict_caches() {
    let mut buf = vec![0u8; 64 << 20];
    for (i, b) in buf.iter_mut().enumerate().step_by(64) {
        *b = i as u8;
    }
    std::hint::black_box(buf.iter().step_by(64).map(|&b| u64::from(b)).sum::<u64>());
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
