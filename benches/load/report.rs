//! The load benchmark's report: the targets' medians, the ratios the targets of issue 10 are
//! judged by, where the CPU went, and the single-client latencies, as markdown.

use super::pgbench::RunResult;
use super::{POOL, Target, cpu, median, pgmux_bin};
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub fn write(
    targets: &[Target],
    modes: &[&str],
    results: &BTreeMap<(usize, usize), Vec<RunResult>>,
    single: &[(&str, Vec<f64>)],
    secs: u32,
    rounds: u32,
    tls: bool,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "pgbench -S (select-only), -j 2, {secs} s per run, median of {rounds} round(s), pool size {POOL}{}.\n",
        if tls {
            ", clients to the poolers over TLS (sslmode=require)"
        } else {
            ""
        }
    );
    let _ = writeln!(md, "pgmux binary: `{}`.\n", pgmux_bin().display());
    let _ = writeln!(
        md,
        "| target | protocol | clients | TPS | avg ms | p99 ms | pooler CPU s / 10k xact (steady) | pooler CPU s / 10k xact (with logins) | pgbench CPU s / 10k xact | peak RSS MiB | server Parse / 10k xact |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    let mut tps_of: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    for ((mi, ti), rs) in results {
        let t = &targets[*ti];
        let ok: Vec<&RunResult> = rs.iter().filter(|r| r.ok).collect();
        if ok.len() < rs.len() {
            // a run that lost transactions does not count, even if other rounds were lucky
            let failed = rs.iter().find(|r| !r.ok).unwrap();
            let _ = writeln!(
                md,
                "| {} | {} | {} | failed in {} of {} rounds: {} | | | | | | | |",
                t.name,
                modes[*mi],
                t.clients,
                rs.len() - ok.len(),
                rs.len(),
                failed.note.replace('|', "/")
            );
            continue;
        }
        let tps = median(ok.iter().map(|r| r.tps).collect());
        tps_of.insert((*mi, *ti), tps);
        let cpu = ok.iter().filter_map(|r| r.cpu_per_10k).collect::<Vec<_>>();
        let steady = ok
            .iter()
            .filter_map(|r| r.steady_cpu_per_10k)
            .collect::<Vec<_>>();
        let rss = ok.iter().filter_map(|r| r.rss_mib).fold(0.0f64, f64::max);
        let parses = ok
            .iter()
            .filter_map(|r| r.server_parses_per_10k)
            .collect::<Vec<_>>();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {:.3} | {} | {} |",
            t.name,
            modes[*mi],
            t.clients,
            tps,
            median(ok.iter().map(|r| r.avg_ms).collect()),
            median(ok.iter().map(|r| r.p99_ms).collect()),
            if steady.is_empty() {
                "-".into()
            } else {
                format!("{:.3}", median(steady))
            },
            if cpu.is_empty() {
                "-".into()
            } else {
                format!("{:.3}", median(cpu))
            },
            median(ok.iter().filter_map(|r| r.client_cpu_per_10k).collect()),
            if !t.pids.is_empty() {
                format!("{rss:.1}")
            } else {
                "-".into()
            },
            if parses.is_empty() {
                "-".into()
            } else {
                format!("{:.0}", median(parses))
            },
        );
    }
    let _ = writeln!(md);
    let idx = |name: &str| targets.iter().position(|t| t.name == name);
    for (mi, mode) in modes.iter().enumerate() {
        let mux = idx("pgmux").and_then(|i| tps_of.get(&(mi, i)));
        let pgb = idx("PgBouncer").and_then(|i| tps_of.get(&(mi, i)));
        let direct = tps_of.get(&(mi, 0));
        if let (Some(m), Some(b)) = (mux, pgb) {
            let _ = writeln!(md, "- {mode}: pgmux / PgBouncer TPS = {:.2}", m / b);
        }
        if let (Some(m), Some(d)) = (mux, direct) {
            let _ = writeln!(
                md,
                "- {mode}: pgmux / direct(50 clients) TPS = {:.2}",
                m / d
            );
        }
    }
    let rows: Vec<cpu::Row> = results
        .iter()
        .map(|((mi, ti), rs)| cpu::Row {
            target: targets[*ti].name,
            mode: modes[*mi],
            runs: rs
                .iter()
                .filter(|r| r.ok)
                .filter_map(|r| Some((r.steady_cpu_per_10k, r.steady?)))
                .collect(),
        })
        .collect();
    cpu::steady_table(&mut md, &rows);
    for (mi, mode) in modes.iter().enumerate() {
        let Some(row) = rows.iter().find(|r| r.mode == *mode && r.target == "pgmux") else {
            continue;
        };
        if let (Some(d), Some(c), Some(b), Some((p, sys))) = (
            tps_of.get(&(mi, 0)),
            row.ceiling(),
            tps_of.get(&(mi, 0)).and_then(|d| row.budget(0.75 * d)),
            row.pooler(),
        ) {
            let _ = writeln!(
                md,
                "- {mode}: 0.75x direct is {:.0} TPS; with the rest of the machine's CPU per \
                 transaction as measured behind pgmux, a pooler costing nothing would reach about \
                 {c:.0} TPS ({:.2}x direct), and one reaching 0.75x could spend at most {b:.3} s \
                 per 10k transactions (pgmux spent {p:.3}, {sys:.3} of it in the kernel)",
                0.75 * d,
                c / d
            );
        }
    }
    let _ = writeln!(
        md,
        "\nSingle client, `SELECT` via pgbench -S -M simple, average latency (the targets interleaved in each round):"
    );
    for (name, runs) in single {
        let done: Vec<f64> = runs.iter().copied().filter(|x| x.is_finite()).collect();
        if done.is_empty() {
            let _ = writeln!(md, "- {name}: no run completed");
            continue;
        }
        let all: Vec<String> = done.iter().map(|x| format!("{x:.3}")).collect();
        let _ = writeln!(
            md,
            "- {name}: {:.3} ms (median of {}: {})",
            median(done.clone()),
            done.len(),
            all.join(", ")
        );
    }
    let runs_of = |name: &str| single.iter().find(|(n, _)| *n == name).map(|(_, r)| r);
    if let (Some(mux), Some(pgb)) = (runs_of("pgmux"), runs_of("PgBouncer"))
        && let Some(line) = paired(mux, pgb)
    {
        let _ = writeln!(md, "- pgmux less PgBouncer, round by round: {line}");
    }
    md
}

/// The round-by-round differences `a - b` in µs (rounds where both completed): their median and
/// in how many rounds `a` was not slower.
fn paired(a: &[f64], b: &[f64]) -> Option<String> {
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (x - y) * 1000.0)
        .collect();
    if d.is_empty() {
        return None;
    }
    let not_slower = d.iter().filter(|x| **x <= 0.0).count();
    let all: Vec<String> = d.iter().map(|x| format!("{x:+.0}")).collect();
    Some(format!(
        "median {:+.0} µs, not slower in {not_slower} of {} rounds ({} µs)",
        median(d.clone()),
        d.len(),
        all.join(", ")
    ))
}
