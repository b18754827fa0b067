//! Statistics over all pools: per-database sums, stats_period averages and the periodic log line.

pub mod histogram;
pub mod http;
pub mod metrics;

use crate::pool::stats::Snapshot;
use crate::state::Shared;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

/// The two most recent stats_period snapshots per pool, as PgBouncer keeps them (older/newer).
#[derive(Debug)]
pub struct Periods {
    inner: Mutex<PeriodsInner>,
}

#[derive(Debug)]
struct PeriodsInner {
    older_at: Instant,
    newer_at: Instant,
    older: BTreeMap<(String, String), Snapshot>,
    newer: BTreeMap<(String, String), Snapshot>,
}

impl Default for Periods {
    fn default() -> Self {
        let now = Instant::now();
        Periods {
            inner: Mutex::new(PeriodsInner {
                older_at: now - std::time::Duration::from_secs(1),
                newer_at: now,
                older: BTreeMap::new(),
                newer: BTreeMap::new(),
            }),
        }
    }
}

/// Totals and last-period averages of one database.
#[derive(Debug, Clone, Default)]
pub struct DbStats {
    pub total: Snapshot,
    pub avg: Snapshot,
}

impl Periods {
    /// Rotate snapshots (called every stats_period) and return (total, average) over all pools.
    pub fn rotate(&self, shared: &Shared) -> (Snapshot, Snapshot) {
        let mut cur = BTreeMap::new();
        for p in shared.pools.iter() {
            cur.insert(p.key().clone(), p.stats.snapshot());
        }
        let mut g = self.inner.lock().unwrap();
        g.older = std::mem::replace(&mut g.newer, cur);
        g.older_at = std::mem::replace(&mut g.newer_at, Instant::now());
        let mut total = Snapshot::default();
        let mut old = Snapshot::default();
        for (k, s) in &g.newer {
            total.add(s);
            if let Some(o) = g.older.get(k) {
                old.add(o);
            }
        }
        let dur = g.older_at.elapsed().as_micros() as u64;
        (total, total.average(&old, dur))
    }

    /// Per-database totals (live) and averages over the last complete period, by database name.
    pub fn by_database(&self, shared: &Shared) -> BTreeMap<String, DbStats> {
        let g = self.inner.lock().unwrap();
        let dur = g.newer_at.duration_since(g.older_at).as_micros() as u64;
        let mut out: BTreeMap<String, (Snapshot, Snapshot, Snapshot)> = BTreeMap::new();
        for p in shared.pools.iter() {
            let e = out.entry(p.db.clone()).or_default();
            e.0.add(&p.stats.snapshot());
            if let Some(n) = g.newer.get(p.key()) {
                e.1.add(n);
            }
            if let Some(o) = g.older.get(p.key()) {
                e.2.add(o);
            }
        }
        out.into_iter()
            .map(|(db, (total, newer, older))| {
                (
                    db,
                    DbStats {
                        total,
                        avg: newer.average(&older, dur),
                    },
                )
            })
            .collect()
    }
}

/// PgBouncer's stats line, written every stats_period when log_stats is on.
pub fn log_line(avg: &Snapshot) -> String {
    format!(
        "stats: {} xacts/s, {} queries/s, {} client parses/s, {} server parses/s, {} binds/s, in {} B/s, out {} B/s, xact {} us, query {} us, wait {} us",
        avg.xacts,
        avg.queries,
        avg.client_parses,
        avg.server_parses,
        avg.binds,
        avg.bytes_received,
        avg.bytes_sent,
        avg.xact_time_us,
        avg.query_time_us,
        avg.wait_time_us
    )
}
