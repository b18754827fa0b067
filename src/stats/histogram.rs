//! Fixed-bucket latency histogram with atomic counters (one relaxed add per observation).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds in microseconds; observations above the last go to +Inf.
pub const BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000, 60_000_000,
];

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    #[inline]
    pub fn observe(&self, us: u64) {
        let i = BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Cumulative counts per bound (the last one is +Inf = total count) and the sum in µs.
    pub fn cumulative(&self) -> ([u64; BOUNDS_US.len() + 1], u64) {
        let mut out = [0u64; BOUNDS_US.len() + 1];
        let mut acc = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            acc += b.load(Relaxed);
            out[i] = acc;
        }
        (out, self.sum_us.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(50);
        h.observe(100);
        h.observe(101);
        h.observe(100_000_000);
        let (c, sum) = h.cumulative();
        assert_eq!(c[0], 2, "<= 100us");
        assert_eq!(c[1], 3);
        assert_eq!(c[BOUNDS_US.len() - 1], 3);
        assert_eq!(c[BOUNDS_US.len()], 4);
        assert_eq!(sum, 50 + 100 + 101 + 100_000_000);
    }
}
