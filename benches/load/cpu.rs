//! CPU and memory accounting of the load benchmark: a process from `/proc/<pid>/stat`, pgbench as
//! a waited-for child, PostgreSQL's whole process tree, and the machine from `/proc/stat`.

use std::path::Path;

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// The fields of `/proc/<pid>/stat` after the command name (field 3, the state, is index 0).
fn stat_fields(pid: u32) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    // the state is a letter: keep the positions by parsing it as 0
    after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect()
}

/// User+system CPU seconds of all waited-for children (pgbench runs) so far.
pub fn children_cpu() -> f64 {
    // SAFETY: getrusage fills a zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// (user+system CPU seconds, peak RSS in KiB) of a process.
pub fn proc_usage(pid: u32) -> (f64, u64) {
    let f = stat_fields(pid);
    let cpu = if f.len() > 13 {
        (f[11] + f[12]) as f64 / clk_tck()
    } else {
        0.0
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}

/// System (kernel) CPU seconds summed over `pids`.
pub fn sys_cpu(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|&p| stat_fields(p).get(12).copied().unwrap_or(0))
        .sum::<u64>() as f64
        / clk_tck()
}

/// CPU and peak RSS summed over `pids`, None when there are none.
pub fn usage(pids: &[u32]) -> Option<(f64, u64)> {
    (!pids.is_empty()).then(|| {
        pids.iter()
            .map(|&p| proc_usage(p))
            .fold((0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    })
}

/// CPU seconds a PostgreSQL cluster has used: the postmaster's own and its reaped children's
/// (backends that ended), plus every living child's (backends, checkpointer, WAL writer, ...).
/// None when the postmaster's pid cannot be read.
pub fn postgres_cpu(data_dir: &Path) -> Option<f64> {
    let pid: u32 = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    let pm = stat_fields(pid);
    if pm.len() < 15 {
        return None;
    }
    let mut ticks = pm[11] + pm[12] + pm[13] + pm[14];
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let f = stat_fields(child);
        if f.len() > 12 && f[1] == pid as u64 {
            ticks += f[11] + f[12];
        }
    }
    Some(ticks as f64 / clk_tck())
}

/// The machine's CPU time from `/proc/stat`, in jiffies of all CPUs together.
#[derive(Clone, Copy, Debug, Default)]
pub struct Machine {
    /// user, nice, system, irq and softirq: work done on this machine's CPUs.
    pub work: u64,
    /// idle and iowait: CPU time nobody used.
    pub idle: u64,
    /// time the host gave to other guests while this one wanted to run.
    pub steal: u64,
}

impl Machine {
    pub fn now() -> Machine {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let v: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|x| x.parse().ok())
            .collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        Machine {
            work: at(0) + at(1) + at(2) + at(5) + at(6),
            idle: at(3) + at(4),
            steal: at(7),
        }
    }

    /// The time from `self` to `later`.
    pub fn until(self, later: Machine) -> Machine {
        Machine {
            work: later.work.saturating_sub(self.work),
            idle: later.idle.saturating_sub(self.idle),
            steal: later.steal.saturating_sub(self.steal),
        }
    }

    pub fn work_secs(self) -> f64 {
        self.work as f64 / clk_tck()
    }

    /// Share of the time, steal included, that was busy (work or steal), in percent.
    pub fn busy_pct(self) -> f64 {
        100.0 * (self.work + self.steal) as f64 / (self.work + self.idle + self.steal).max(1) as f64
    }

    /// Share of the CPU time this machine had (steal excluded) that nobody used, in percent.
    pub fn idle_pct(self) -> f64 {
        100.0 * self.idle as f64 / (self.work + self.idle).max(1) as f64
    }

    /// Share of all CPU time the host took away, in percent.
    pub fn steal_pct(self) -> f64 {
        100.0 * self.steal as f64 / (self.work + self.idle + self.steal).max(1) as f64
    }

    /// CPU seconds this machine had (work + idle, steal excluded).
    pub fn had_secs(self) -> f64 {
        (self.work + self.idle) as f64 / clk_tck()
    }
}

/// The steady window's CPU, per 10k transactions unless a share.
#[derive(Clone, Copy, Debug)]
pub struct Steady {
    /// The pooler's system time (its share of the pooler's CPU spent in the kernel).
    pub pooler_sys: f64,
    pub pgbench: f64,
    pub postgres: f64,
    pub machine: f64,
    pub idle_pct: f64,
    pub steal_pct: f64,
    /// CPU seconds per second this machine had in the window (its cores, less the host's steal).
    pub cores: f64,
}

/// One run: the pooler's steady CPU per 10k transactions (None for direct connections), and
/// where the rest went.
pub type Run = (Option<f64>, Steady);

/// One line of the table: a target's runs in one protocol.
pub struct Row<'a> {
    pub target: &'a str,
    pub mode: &'a str,
    pub runs: Vec<Run>,
}

impl Row<'_> {
    /// CPU per 10k transactions a pooler could spend and still let the machine run `tps`, with
    /// everything else costing what it did per transaction here (median over the runs).
    pub fn budget(&self, tps: f64) -> Option<f64> {
        (!self.runs.is_empty()).then(|| {
            super::median(
                self.runs
                    .iter()
                    .map(|(p, s)| s.cores * 10_000.0 / tps - (s.machine - p.unwrap_or(0.0)))
                    .collect(),
            )
        })
    }

    /// Median of the pooler's (CPU, system CPU) per 10k transactions.
    pub fn pooler(&self) -> Option<(f64, f64)> {
        let cpu: Vec<f64> = self.runs.iter().filter_map(|x| x.0).collect();
        (!cpu.is_empty()).then(|| {
            (
                super::median(cpu),
                super::median(self.runs.iter().map(|x| x.1.pooler_sys).collect()),
            )
        })
    }

    /// Transactions per second the machine could run if the pooler cost no CPU and everything
    /// else cost what it did per transaction, all of the machine's CPU busy (median over the
    /// runs).
    pub fn ceiling(&self) -> Option<f64> {
        (!self.runs.is_empty()).then(|| {
            super::median(
                self.runs
                    .iter()
                    .map(|(p, s)| s.cores * 10_000.0 / (s.machine - p.unwrap_or(0.0)).max(1e-6))
                    .collect(),
            )
        })
    }
}

/// The steady window's CPU by process, as a markdown table (medians over the rounds).
pub fn steady_table(md: &mut String, rows: &[Row]) {
    use std::fmt::Write as _;
    let _ = writeln!(
        md,
        "\nWhere the CPU went in the steady window (from pgbench's first progress report to its end; \
         s per 10k transactions, medians): \"rest\" is the machine's work less the three named \
         (the benchmark's own process, the kernel's loopback work outside them, ...); \"zero-cost \
         pooler ceiling\" is the TPS the machine's CPU would allow if the pooler cost nothing and \
         everything else cost what it did per transaction here.\n"
    );
    let _ = writeln!(
        md,
        "| target | protocol | pooler | of which system | pgbench | PostgreSQL | rest | whole machine | idle % | steal % | cores had | zero-cost pooler ceiling TPS |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        if r.runs.is_empty() {
            continue;
        }
        let m = |f: &dyn Fn(&Run) -> f64| super::median(r.runs.iter().map(f).collect());
        let pooler = r.runs.iter().all(|x| x.0.is_some());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {:.0} | {:.2} | {:.0} |",
            r.target,
            r.mode,
            if pooler {
                format!("{:.3}", m(&|x| x.0.unwrap_or(0.0)))
            } else {
                "-".into()
            },
            if pooler {
                format!("{:.3}", m(&|x| x.1.pooler_sys))
            } else {
                "-".into()
            },
            m(&|x| x.1.pgbench),
            m(&|x| x.1.postgres),
            m(&|x| x.1.machine - x.0.unwrap_or(0.0) - x.1.pgbench - x.1.postgres),
            m(&|x| x.1.machine),
            m(&|x| x.1.idle_pct),
            m(&|x| x.1.steal_pct),
            m(&|x| x.1.cores),
            r.ceiling().unwrap_or(0.0),
        );
    }
}
