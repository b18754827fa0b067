//! Per-pool counters (transactions, queries, bytes, times in microseconds) and latency histograms behind SHOW STATS and metrics.

use crate::stats::histogram::{BOUNDS_US, Histogram};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counter shards per pool: each worker thread adds to its own (no cache line bouncing between
/// cores on every transaction); readers sum them.
const SHARDS: usize = 8;

/// A pool's counters, sharded by worker thread.
#[derive(Debug)]
pub struct PoolStats {
    shards: Box<[Shard]>,
}

impl Default for PoolStats {
    fn default() -> Self {
        PoolStats {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// One thread's share of a pool's counters (on its own cache lines).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Shard {
    pub server_assignments: AtomicU64,
    pub xacts: AtomicU64,
    pub queries: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub xact_time_us: AtomicU64,
    pub query_time_us: AtomicU64,
    pub wait_time_us: AtomicU64,
    pub client_parses: AtomicU64,
    pub server_parses: AtomicU64,
    pub binds: AtomicU64,
    pub client_logins: AtomicU64,
    pub query_hist: Histogram,
    pub xact_hist: Histogram,
    pub wait_hist: Histogram,
}

/// A plain copy of the counters at one moment (summed per database for SHOW STATS).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub server_assignments: u64,
    pub xacts: u64,
    pub queries: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub xact_time_us: u64,
    pub query_time_us: u64,
    pub wait_time_us: u64,
    pub client_parses: u64,
    pub server_parses: u64,
    pub binds: u64,
    pub client_logins: u64,
}

impl PoolStats {
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The calling thread's shard, to add to.
    #[inline]
    pub fn local(&self) -> &Shard {
        &self.shards[shard_index()]
    }

    /// The counters summed over the shards.
    pub fn snapshot(&self) -> Snapshot {
        let mut t = Snapshot::default();
        for s in self.shards.iter() {
            t.add(&s.snapshot());
        }
        t
    }

    /// One histogram (0 query, 1 transaction, 2 wait) summed over the shards: cumulative
    /// counts per bound (+Inf last) and the sum in µs.
    pub fn histogram(&self, which: u8) -> ([u64; BOUNDS_US.len() + 1], u64) {
        let mut out = [0u64; BOUNDS_US.len() + 1];
        let mut sum = 0;
        for s in self.shards.iter() {
            let h = match which {
                0 => &s.query_hist,
                1 => &s.xact_hist,
                _ => &s.wait_hist,
            };
            let (c, su) = h.cumulative();
            for (o, v) in out.iter_mut().zip(c) {
                *o += v;
            }
            sum += su;
        }
        (out, sum)
    }
}

impl Shard {
    fn snapshot(&self) -> Snapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            server_assignments: l(&self.server_assignments),
            xacts: l(&self.xacts),
            queries: l(&self.queries),
            bytes_received: l(&self.bytes_received),
            bytes_sent: l(&self.bytes_sent),
            xact_time_us: l(&self.xact_time_us),
            query_time_us: l(&self.query_time_us),
            wait_time_us: l(&self.wait_time_us),
            client_parses: l(&self.client_parses),
            server_parses: l(&self.server_parses),
            binds: l(&self.binds),
            client_logins: l(&self.client_logins),
        }
    }
}

impl Snapshot {
    pub fn add(&mut self, o: &Snapshot) {
        self.server_assignments += o.server_assignments;
        self.xacts += o.xacts;
        self.queries += o.queries;
        self.bytes_received += o.bytes_received;
        self.bytes_sent += o.bytes_sent;
        self.xact_time_us += o.xact_time_us;
        self.query_time_us += o.query_time_us;
        self.wait_time_us += o.wait_time_us;
        self.client_parses += o.client_parses;
        self.server_parses += o.server_parses;
        self.binds += o.binds;
        self.client_logins += o.client_logins;
    }

    /// PgBouncer's averages between two snapshots `dur_us` apart: counts and bytes per second,
    /// times per transaction / query / server assignment.
    pub fn average(&self, old: &Snapshot, dur_us: u64) -> Snapshot {
        if dur_us == 0 {
            return Snapshot::default();
        }
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let rate = |a: u64, b: u64| d(a, b).saturating_mul(1_000_000) / dur_us;
        let per = |t: u64, ot: u64, n: u64| d(t, ot).checked_div(n).unwrap_or(0);
        let queries = d(self.queries, old.queries);
        let xacts = d(self.xacts, old.xacts);
        let assigns = d(self.server_assignments, old.server_assignments);
        Snapshot {
            server_assignments: rate(self.server_assignments, old.server_assignments),
            xacts: rate(self.xacts, old.xacts),
            queries: rate(self.queries, old.queries),
            bytes_received: rate(self.bytes_received, old.bytes_received),
            bytes_sent: rate(self.bytes_sent, old.bytes_sent),
            xact_time_us: per(self.xact_time_us, old.xact_time_us, xacts),
            query_time_us: per(self.query_time_us, old.query_time_us, queries),
            wait_time_us: per(self.wait_time_us, old.wait_time_us, assigns),
            client_parses: rate(self.client_parses, old.client_parses),
            server_parses: rate(self.server_parses, old.server_parses),
            binds: rate(self.binds, old.binds),
            client_logins: rate(self.client_logins, old.client_logins),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_add_up() {
        let st = std::sync::Arc::new(PoolStats::default());
        let threads: Vec<_> = (0..SHARDS + 3)
            .map(|_| {
                let st = st.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        PoolStats::add(&st.local().xacts, 1);
                        st.local().wait_hist.observe(300);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = 100 * (SHARDS as u64 + 3);
        assert_eq!(st.snapshot().xacts, n);
        let (cum, sum) = st.histogram(2);
        assert_eq!(cum[BOUNDS_US.len()], n);
        assert_eq!(cum[1], 0);
        assert_eq!(cum[2], n);
        assert_eq!(sum, 300 * n);
    }

    #[test]
    fn averages_as_pgbouncer() {
        let old = Snapshot::default();
        let cur = Snapshot {
            xacts: 120,
            xact_time_us: 1200,
            queries: 240,
            query_time_us: 480,
            server_assignments: 60,
            wait_time_us: 600,
            bytes_received: 6000,
            ..Default::default()
        };
        let a = cur.average(&old, 60_000_000);
        assert_eq!(a.xacts, 2);
        assert_eq!(a.queries, 4);
        assert_eq!(a.xact_time_us, 10);
        assert_eq!(a.query_time_us, 2);
        assert_eq!(a.wait_time_us, 10);
        assert_eq!(a.bytes_received, 100);
        assert_eq!(cur.average(&old, 0), Snapshot::default());
    }
}
