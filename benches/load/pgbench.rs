//! One pgbench run against one target: TPS and latency from pgbench, the pooler's CPU and RSS
//! over the whole run and over the steady window, and where the machine's CPU went meanwhile.

use super::Target;
use super::cpu::{Machine, Steady, children_cpu, postgres_cpu, proc_usage, sys_cpu, usage};
use pgmux::dev::TempPostgres;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Clone, Default)]
pub struct RunResult {
    pub ok: bool,
    pub tps: f64,
    pub avg_ms: f64,
    pub p99_ms: f64,
    pub cpu_per_10k: Option<f64>,
    /// The pooler's CPU per 10k transactions once every client is connected (from pgbench's
    /// first progress report to its end): the steady state, without the login storm.
    pub steady_cpu_per_10k: Option<f64>,
    /// pgbench's own CPU (user+sys of the finished child) per 10k transactions.
    pub client_cpu_per_10k: Option<f64>,
    /// Where the CPU went in the steady window: pgbench, PostgreSQL's processes, the whole
    /// machine (per 10k transactions), and the machine's idle and steal shares.
    pub steady: Option<Steady>,
    pub rss_mib: Option<f64>,
    pub note: String,
    /// Parse messages the pooler sent to PostgreSQL per 10k transactions (pgmux's SHOW STATS_TOTALS).
    pub server_parses_per_10k: Option<f64>,
}

/// A snapshot at the start of the steady window.
struct SteadyStart {
    epoch_us: u64,
    pooler: Option<(f64, u64)>,
    pooler_sys: f64,
    pgbench: f64,
    postgres: Option<f64>,
    machine: Machine,
}

fn field<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .map(str::trim)
}

pub fn run_pgbench(
    pg: &TempPostgres,
    t: &Target,
    mode: &str,
    secs: u32,
    logdir: &Path,
    password: &str,
    sslmode: &str,
) -> RunResult {
    let _ = std::fs::remove_dir_all(logdir);
    std::fs::create_dir_all(logdir).unwrap();
    let before = usage(&t.pids);
    let children_before = children_cpu();
    let out = Command::new(pg.tool("pgbench"))
        .current_dir(logdir)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &t.port.to_string(),
            "-U",
            "synergyflow_app",
            "-S",
            "-n",
            "-j",
            "2",
        ])
        .args([
            "-c",
            &t.clients.to_string(),
            "-T",
            &secs.to_string(),
            "-M",
            mode,
            "-l",
            "-P",
            "1",
            "synergyflow",
        ])
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", sslmode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pgbench");
    // the first progress report means every client is connected: the steady state starts
    let mut out = out;
    let err_pipe = out.stderr.take().unwrap();
    let pids = t.pids.clone();
    let pgbench_pid = out.id();
    let data_dir = pg.data_dir().to_path_buf();
    let progress = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut first = None;
        let mut text = String::new();
        for line in std::io::BufReader::new(err_pipe)
            .lines()
            .map_while(Result::ok)
        {
            if first.is_none() && line.starts_with("progress:") {
                let epoch_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_micros() as u64;
                first = Some(SteadyStart {
                    epoch_us,
                    pooler: usage(&pids),
                    pooler_sys: sys_cpu(&pids),
                    pgbench: proc_usage(pgbench_pid).0,
                    postgres: postgres_cpu(&data_dir),
                    machine: Machine::now(),
                });
            }
            text.push_str(&line);
            text.push('\n');
        }
        (first, text)
    });
    // a wedged pooler must not hang the benchmark: pgbench gets its run time plus 60 s
    let pid = out.id();
    let watchdog = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs as u64 + 60);
        while std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
            // SAFETY: kill(pid, 0) only probes whether our child still exists.
            if unsafe { libc::kill(pid as i32, 0) } != 0 {
                return;
            }
        }
        // SAFETY: kill(2) on the pgbench we started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let out = out.wait_with_output().expect("wait for pgbench");
    let machine_end = Machine::now();
    let end_epoch_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let _ = watchdog.join();
    let after = usage(&t.pids);
    let sys_end = sys_cpu(&t.pids);
    let client_cpu = children_cpu() - children_before;
    // backends of direct connections end with pgbench: let the postmaster reap them
    std::thread::sleep(Duration::from_millis(100));
    let postgres_end = postgres_cpu(pg.data_dir());
    let (steady_from, stderr) = progress.join().unwrap_or_default();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let tps: f64 = field(&stdout, "tps =")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let processed: f64 = field(&stdout, "number of transactions actually processed:")
        .and_then(|v| v.split('/').next()?.trim().parse().ok())
        .unwrap_or(0.0);
    let avg_ms: f64 = field(&stdout, "latency average =")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let mut lat: Vec<u64> = Vec::new();
    // transactions that ended in the steady window (log: client xact latency_us script epoch_s us)
    let steady_start = steady_from.as_ref().map(|f| f.epoch_us).unwrap_or(u64::MAX);
    let mut steady_xacts = 0u64;
    if let Ok(rd) = std::fs::read_dir(logdir) {
        for e in rd.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            for l in text.lines() {
                let f: Vec<&str> = l.split_whitespace().collect();
                if let Some(us) = f.get(2).and_then(|v| v.parse::<u64>().ok()) {
                    lat.push(us);
                }
                if let (Some(s), Some(u)) = (
                    f.get(4).and_then(|v| v.parse::<u64>().ok()),
                    f.get(5).and_then(|v| v.parse::<u64>().ok()),
                ) && s * 1_000_000 + u >= steady_start
                {
                    steady_xacts += 1;
                }
            }
        }
    }
    lat.sort_unstable();
    let p99_ms = if lat.is_empty() {
        0.0
    } else {
        lat[(lat.len() * 99 / 100).min(lat.len() - 1)] as f64 / 1000.0
    };
    let ok = out.status.success() && tps > 0.0;
    let note = if ok {
        String::new()
    } else {
        let e = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(2)
            .collect::<Vec<_>>()
            .join(" | ");
        if std::env::var("LOAD_DEBUG").is_ok() {
            eprintln!("--- pgbench stdout:\n{stdout}\n--- stderr:\n{stderr}");
        }
        format!("failed (exit {:?}): {e}", out.status.code())
    };
    let cpu_per_10k = match (before, after) {
        (Some(b), Some(a)) if processed > 0.0 => Some((a.0 - b.0) / processed * 10_000.0),
        _ => None,
    };
    let per_10k = |secs: f64| secs / steady_xacts as f64 * 10_000.0;
    let steady_cpu_per_10k = match (steady_from.as_ref().and_then(|f| f.pooler), after) {
        (Some(b), Some(a)) if steady_xacts > 0 => Some(per_10k(a.0 - b.0)),
        _ => None,
    };
    let postgres_start = steady_from.as_ref().and_then(|f| f.postgres);
    let steady = match (&steady_from, postgres_start, postgres_end) {
        (Some(f), Some(pg_start), Some(pg_end)) if steady_xacts > 0 => {
            let m = f.machine.until(machine_end);
            let wall = end_epoch_us.saturating_sub(f.epoch_us) as f64 / 1e6;
            Some(Steady {
                pooler_sys: per_10k(sys_end - f.pooler_sys),
                // the whole run's pgbench CPU less what it had used when the window opened
                pgbench: per_10k(client_cpu - f.pgbench),
                postgres: per_10k(pg_end - pg_start),
                machine: per_10k(m.work_secs()),
                idle_pct: m.idle_pct(),
                steal_pct: m.steal_pct(),
                cores: m.had_secs() / wall.max(1e-3),
            })
        }
        _ => None,
    };
    RunResult {
        ok,
        tps,
        avg_ms,
        p99_ms,
        cpu_per_10k,
        steady_cpu_per_10k,
        client_cpu_per_10k: (processed > 0.0).then(|| client_cpu / processed * 10_000.0),
        steady,
        rss_mib: after.map(|a| a.1 as f64 / 1024.0),
        note,
        server_parses_per_10k: None,
    }
}
