//! Summaries of repeated measurements: medians, nearest-rank percentiles and means over samples.
//!
//! The machine these benches run on is shared and noisy, so every figure the crate reports is a
//! median (or a percentile) of several runs, never a single run. This module only computes; it must
//! not time anything itself.

use std::time::Duration;

/// A set of measurements, in one unit chosen by the caller (usually nanoseconds).
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<f64>,
    sorted: bool,
}

impl Samples {
    /// No samples yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Samples from durations, in nanoseconds.
    pub fn from_durations(durations: &[Duration]) -> Self {
        durations.iter().map(|d| d.as_nanos() as f64).collect()
    }

    /// Adds one sample.
    pub fn push(&mut self, value: f64) {
        self.values.push(value);
        self.sorted = false;
    }

    /// Adds one duration, in nanoseconds.
    pub fn push_duration(&mut self, duration: Duration) {
        self.push(duration.as_nanos() as f64);
    }

    /// The samples, in no particular order.
    pub fn into_values(self) -> Vec<f64> {
        self.values
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.values.sort_by(f64::total_cmp);
            self.sorted = true;
        }
    }

    /// The median (mean of the two middle samples for an even count); NaN when empty.
    pub fn median(&mut self) -> f64 {
        self.sort();
        let n = self.values.len();
        match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => self.values[n / 2],
            _ => (self.values[n / 2 - 1] + self.values[n / 2]) / 2.0,
        }
    }

    /// The nearest-rank percentile `p` (0–100); NaN when empty.
    pub fn percentile(&mut self, p: f64) -> f64 {
        self.sort();
        let n = self.values.len();
        if n == 0 {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.values[rank.clamp(1, n) - 1]
    }

    /// The arithmetic mean; NaN when empty.
    pub fn mean(&self) -> f64 {
        self.values.iter().sum::<f64>() / self.values.len() as f64
    }

    /// The largest sample; NaN when empty.
    pub fn max(&self) -> f64 {
        self.values.iter().copied().fold(f64::NAN, f64::max)
    }
}

impl FromIterator<f64> for Samples {
    fn from_iter<I: IntoIterator<Item = f64>>(iter: I) -> Self {
        Self {
            values: iter.into_iter().collect(),
            sorted: false,
        }
    }
}

impl Extend<f64> for Samples {
    fn extend<I: IntoIterator<Item = f64>>(&mut self, iter: I) {
        self.values.extend(iter);
        self.sorted = false;
    }
}

/// The median of `runs` calls of `measure`, each returning nanoseconds (or any one unit).
pub fn median_of(runs: usize, mut measure: impl FnMut() -> f64) -> f64 {
    (0..runs.max(1))
        .map(|_| measure())
        .collect::<Samples>()
        .median()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        let mut s: Samples = [5.0, 1.0, 3.0, 2.0, 4.0].into_iter().collect();
        assert_eq!(s.median(), 3.0);
        assert_eq!(s.percentile(50.0), 3.0);
        assert_eq!(s.percentile(99.0), 5.0);
        assert_eq!(s.percentile(0.0), 1.0);
        assert_eq!(s.mean(), 3.0);
        s.push(6.0);
        assert_eq!(s.median(), 3.5);
        assert_eq!(s.max(), 6.0);
    }
}
