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
