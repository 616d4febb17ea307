//! Latency figures: exact percentiles over every sample (nearest rank on
//! the sorted samples, no histogram buckets), in microseconds.

use std::time::Duration;

use serde::Serialize;

/// Percentiles of a set of durations, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

/// The summary of `samples`; `None` when there are none.
pub fn summarize(mut samples: Vec<Duration>) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    Some(Summary {
        count: samples.len(),
        p50: micros(nearest_rank(&samples, 50)),
        p90: micros(nearest_rank(&samples, 90)),
        p99: micros(nearest_rank(&samples, 99)),
        max: micros(samples.last().copied().unwrap_or_default()),
    })
}

/// The smallest sample with at least `percent` % of the samples at or
/// below it (`sorted` ascending).
pub fn nearest_rank(sorted: &[Duration], percent: usize) -> Duration {
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Milliseconds with a fraction, as reports show times.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `part / whole`, 1 when there is nothing to count.
pub fn fraction(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_exact_nearest_ranks() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let s = summarize(samples).expect("samples");
        assert_eq!(
            (s.count, s.p50, s.p90, s.p99, s.max),
            (100, 50, 90, 99, 100)
        );
        let one = summarize(vec![Duration::from_millis(2)]).expect("one sample");
        assert_eq!((one.p50, one.p99, one.max), (2000, 2000, 2000));
        assert_eq!(summarize(Vec::new()), None);
    }
}
