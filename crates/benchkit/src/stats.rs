//! Medians and percentiles of measured durations (pure).

#[cfg(test)]
mod tests;

/// Figures of one series of measurements, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// The summary of `values`; `None` when there are none (or one is not a number).
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Self {
            n: v.len(),
            min: *v.first()?,
            median: percentile_sorted(&v, 50.0)?,
            p99: percentile_sorted(&v, 99.0)?,
            max: *v.last()?,
        })
    }
}

/// The nearest-rank percentile `p` (0 < p ≤ 100) of sorted values: the smallest value with at
/// least p % of the values at or below it. With fewer than 100 values p99 is the maximum, so a
/// single bad trial is never hidden.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let n = sorted.len() as f64;
    let rank = (p / 100.0 * n).ceil().max(1.0);
    // `rank` is between 1 and n, both small whole numbers.
    let index = usize::try_from(rank as u64).ok()?.checked_sub(1)?;
    sorted.get(index).copied()
}
