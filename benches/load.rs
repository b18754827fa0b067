//! Side-by-side load benchmark: pgbench select-only with 1000 clients onto 50 server connections
//! through pgmux and PgBouncer (same settings), and 50 clients straight to PostgreSQL, in one run.
//!
//! `cargo bench --bench load` (env: LOAD_ROUNDS, LOAD_SECS, LOAD_QUICK=1 for a short smoke run).
//!
//! pgmux is the shipped build: `cargo build --release` in `target/shipped` (see `pgmux_bin`).

#[path = "load/chart.rs"]
mod chart;
#[path = "load/cpu.rs"]
mod cpu;
#[path = "load/extra.rs"]
mod extra;
#[path = "load/pgbench.rs"]
mod pgbench;
#[path = "load/report.rs"]
mod report;

use pgbench::{RunResult, run_pgbench};

use pgmux::dev::{PgOptions, TempPostgres};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLIENTS: u32 = 1000;
const POOL: u32 = 50;

fn env_u32(k: &str, d: u32) -> u32 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// The pgmux binary under test. `cargo bench` builds the binary with the dev-dependencies'
/// features (tokio-postgres turns on more of socket2, tokio-util, futures-util, serde), which
/// changes the hash of tokio and of pgmux itself, so the PGO profile (taken from the release
/// build) matches none of their functions: that binary ran about 18% more instructions and ten
/// times the L1i misses per transaction. A full run therefore builds what users run,
/// `cargo build --release --bin pgmux`, in its own target directory (`target/shipped`, so the
/// two feature sets do not rebuild each other); `LOAD_QUICK=1` (the CI smoke run) and
/// `LOAD_BIN=bench` use cargo's own build, `LOAD_BIN=<path>` any binary.
fn pgmux_bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let quick = std::env::var("LOAD_QUICK").is_ok_and(|v| v == "1");
        let choice = std::env::var("LOAD_BIN").unwrap_or_default();
        let bench_build = PathBuf::from(env!("CARGO_BIN_EXE_pgmux"));
        if choice == "bench" || (quick && choice.is_empty()) {
            return bench_build;
        }
        if !choice.is_empty() {
            return PathBuf::from(choice);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = root.join("target/shipped");
        eprintln!(
            "building the shipped pgmux (cargo build --release) in {}",
            target.display()
        );
        let ok = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args(["build", "--release", "--bin", "pgmux", "--target-dir"])
            .arg(&target)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cargo build --release of pgmux failed");
        target.join("release/pgmux")
    })
}

/// Starts a pooler in a session of its own, as a service or a container runs it. Linux's
/// autogroup scheduling (on by default) makes every session a scheduling group: a pooler started
/// in the benchmark's session would share a group with pgbench, and each `send` that wakes a
/// pgbench thread would let it preempt the pooler inside that group (measured 2026-12-07: pgmux
/// switched out 0.43 times per transaction there, 0.23 in a session of its own; PgBouncer 0.28
/// and 0.19). Every pooler gets the same; PostgreSQL has its own already (pg_ctl's setsid).
/// `LOAD_SESSION=shared` keeps the poolers in the benchmark's session, as every run before
/// 2026-12-07 05:36 UTC did. The child also gets SIGTERM if the benchmark dies, since the
/// terminal's ^C no longer reaches it.
fn own_session(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    if std::env::var("LOAD_SESSION").is_ok_and(|v| v == "shared") {
        return cmd;
    }
    // SAFETY: setsid(2) and prctl(2) are async-signal-safe and act on the child alone.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        })
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

struct Target {
    name: &'static str,
    port: u16,
    clients: u32,
    /// The pooler's processes (several for an so_reuseport group); empty for PostgreSQL.
    pids: Vec<u32>,
}

/// (transactions, server parses) summed over SHOW STATS_TOTALS of a pooler's admin console.
fn stats_totals(pg: &TempPostgres, port: u16, user: &str, password: &str) -> Option<(u64, u64)> {
    let out = Command::new(pg.tool("psql"))
        .args([
            "-X",
            "-At",
            "-F",
            ",",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(["-U", user, "-d", "pgbouncer", "-c", "SHOW STATS_TOTALS"])
        .env("PGPASSWORD", password)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut x = 0;
    let mut p = 0;
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = l.split(',').collect();
        if f.len() < 12 {
            return None;
        }
        x += f[2].parse::<u64>().ok()?;
        p += f[10].parse::<u64>().ok()?;
    }
    Some((x, p))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn ini(pg_port: u16, port: u16, dir: &Path, name: &str, tls: bool) -> String {
    let tls_lines = if tls {
        format!(
            "client_tls_sslmode = prefer\nclient_tls_cert_file = {d}/tls.crt\nclient_tls_key_file = {d}/tls.key\nserver_tls_sslmode = disable\n",
            d = dir.display()
        )
    } else {
        "server_tls_sslmode = disable\n".to_string()
    };
    format!(
        "[databases]\nsynergyflow = host=127.0.0.1 port={pg_port} dbname=synergyflow\n\n[pgbouncer]\n\
         listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {dir}\nauth_type = scram-sha-256\n\
         auth_file = {dir}/userlist.txt\npool_mode = transaction\nmax_client_conn = 2000\ndefault_pool_size = {POOL}\n\
         max_db_connections = {POOL}\nignore_startup_parameters = extra_float_digits,options\n\
         log_connections = 0\nlog_disconnections = 0\nlogfile = {dir}/{name}.log\npidfile = {dir}/{name}.pid\n\
         stats_users = synergyflow_app\n",
        dir = dir.display()
    ) + &tls_lines
}

fn find_pgbouncer() -> Option<PathBuf> {
    if Path::new("/usr/sbin/pgbouncer").is_file() {
        return Some("/usr/sbin/pgbouncer".into());
    }
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(|d| Path::new(d).join("pgbouncer"))
        .find(|p| p.is_file())
}

struct Kill(Vec<Child>, Vec<u32>);

/// What the extras need from the main run.
struct Ctx {
    pg: TempPostgres,
    pg_port: u16,
    dir: PathBuf,
    quick: bool,
    secs: u32,
    /// Rounds of each storm (fresh poolers each round); the median is reported.
    rounds: u32,
    app_user: String,
    app_password: String,
    auth_user: String,
    auth_password: String,
}
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in &self.1 {
            // SAFETY: kill(2) on a pid we started.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
    }
}

/// PostgreSQL's max_connections for the run: 2000 direct clients in the sweep, plus the servers
/// the poolers of the run still hold (50 each, up to 7 of them with LOAD_PROCS=1 LOAD_EXTRA=1).
pub const MAX_CONNECTIONS: u32 = 2600;
/// Slots left to the poolers' servers when deciding whether a direct sweep point fits.
pub const POOLER_SLOTS: u32 = 500;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("load benchmark: run it with `cargo bench --bench load`");
        return;
    }
    let quick = std::env::var("LOAD_QUICK").is_ok_and(|v| v == "1");
    let rounds = if quick { 1 } else { env_u32("LOAD_ROUNDS", 3) };
    let secs = if quick { 10 } else { env_u32("LOAD_SECS", 15) };
    pgmux::app::raise_fd_limit();

    eprintln!("starting PostgreSQL ...");
    let pg = TempPostgres::start(&PgOptions {
        max_connections: MAX_CONNECTIONS,
        extra_conf: vec![],
    })
    .expect("start PostgreSQL");
    let seed = pg.create_seed().expect("seed");
    let init = Command::new(pg.tool("pgbench"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            "postgres",
            "-i",
            "-q",
            "-s",
            "10",
            "synergyflow",
        ])
        .output()
        .expect("pgbench -i");
    assert!(
        init.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    pg.psql(
        "synergyflow",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO synergyflow_app",
    )
    .unwrap();
    // the seed's role limit (200) would cap the client-count sweep of direct connections
    pg.psql("postgres", "ALTER ROLE synergyflow_app CONNECTION LIMIT -1")
        .unwrap();

    let dir = pg.root_dir().join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("userlist.txt"),
        format!("\"{}\" \"{}\"\n", seed.app_user, seed.app_password),
    )
    .unwrap();
    let mut guard = Kill(vec![], vec![]);

    // LOAD_TLS=1: clients reach both poolers over TLS (a self-signed certificate from rcgen)
    let tls = std::env::var("LOAD_TLS").is_ok_and(|v| v == "1");
    if tls {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let _ =
            std::fs::set_permissions(dir.join("tls.key"), std::fs::Permissions::from_mode(0o600));
    }
    let mux_port = free_port();
    std::fs::write(
        dir.join("pgmux.ini"),
        ini(pg.port(), mux_port, &dir, "pgmux", tls),
    )
    .unwrap();
    let mux = own_session(&mut Command::new(pgmux_bin()))
        .arg("-q")
        .arg(dir.join("pgmux.ini"))
        .stdout(Stdio::null())
        .spawn()
        .expect("start pgmux");
    let mux_pid = mux.id();
    guard.0.push(mux);
    assert!(wait_port(mux_port), "pgmux did not start");

    let mut targets = vec![Target {
        name: "PostgreSQL direct",
        port: pg.port(),
        clients: POOL,
        pids: vec![],
    }];
    targets.push(Target {
        name: "pgmux",
        port: mux_port,
        clients: CLIENTS,
        pids: vec![mux_pid],
    });
    // LOAD_PROCS=1: pgmux on one worker thread, two such processes sharing one port
    // (so_reuseport, peered), as PgBouncer users run several processes, and one process with a
    // runtime per core (PGMUX_RUNTIME=shards)
    if std::env::var("LOAD_PROCS").is_ok_and(|v| v == "1") {
        // the benchmark's ini plus `extra`, written as `<name>.ini`
        let write_ini = |name: &str, port: u16, extra: &str| {
            let path = dir.join(format!("{name}.ini"));
            std::fs::write(&path, ini(pg.port(), port, &dir, name, tls) + extra).unwrap();
            path
        };
        let start = |name: &str, port: u16, extra: &str, env: &[(&str, &str)]| {
            let child = own_session(&mut Command::new(pgmux_bin()))
                .arg("-q")
                .arg(write_ini(name, port, extra))
                .env("PGMUX_THREADS", "1")
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .spawn()
                .expect("start pgmux");
            let pid = child.id();
            (child, pid)
        };
        // one more pgmux process with its own port
        let single = |guard: &mut Kill, name: &'static str, env: &[(&str, &str)]| {
            let port = free_port();
            let (c, pid) = start(&name.replace(' ', "-"), port, "", env);
            guard.0.push(c);
            assert!(wait_port(port), "{name} did not start");
            Target {
                name,
                port,
                clients: CLIENTS,
                pids: vec![pid],
            }
        };
        targets.push(single(&mut guard, "pgmux 1 thread", &[]));
        let p2 = free_port();
        let mut inis = Vec::new();
        for i in 1..=2u32 {
            let sock = dir.join(format!("proc{i}"));
            std::fs::create_dir_all(&sock).unwrap();
            let half = POOL / 2;
            let extra = format!(
                "so_reuseport = 1\nunix_socket_dir = {s}\ndefault_pool_size = {half}\nmax_db_connections = {half}\n\
                 peer_id = {i}\n[peers]\n1 = host={d}/proc1 port={p2}\n2 = host={d}/proc2 port={p2}\n",
                s = sock.display(),
                d = dir.display()
            );
            inis.push(write_ini(&format!("pgmux-proc{i}"), p2, &extra));
        }
        // Both processes in one session, as in one container: with autogroup scheduling a
        // session is a scheduling group, and a session each gave them two shares of the CPU
        // against pgbench's one (the README's run of 95e183d; checked with both in one session).
        let mut sh = own_session(&mut Command::new("sh"))
            .arg("-c")
            .arg(r#""$0" -q "$1" >/dev/null & echo $!; sleep 0.3; "$0" -q "$2" >/dev/null & echo $!; wait"#)
            .arg(pgmux_bin())
            .args(&inis)
            .env("PGMUX_THREADS", "1")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the two pgmux processes");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(sh.stdout.take().unwrap()));
        let pids: Vec<u32> = (0..2)
            .map(|_| lines.next().unwrap().unwrap().trim().parse().unwrap())
            .collect();
        guard.0.push(sh);
        guard.1.extend(&pids);
        assert!(wait_port(p2), "pgmux processes did not start");
        targets.push(Target {
            name: "pgmux 2 procs x 1 thread",
            port: p2,
            clients: CLIENTS,
            pids,
        });
        // one process, a runtime per core (PGMUX_RUNTIME=shards), one pool
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .to_string();
        let env = [("PGMUX_RUNTIME", "shards"), ("PGMUX_THREADS", &cores)];
        targets.push(single(&mut guard, "pgmux shards", &env));
    }
    if let Some(pgb) = find_pgbouncer() {
        let port = free_port();
        std::fs::write(
            dir.join("pgbouncer.ini"),
            ini(pg.port(), port, &dir, "pgbouncer", tls),
        )
        .unwrap();
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
        let am_root = unsafe { libc::geteuid() } == 0;
        let mut cmd = if am_root {
            // runuser resets the soft fd limit to 1024: raise it to the hard limit, as pgmux
            // does for itself, so 1000+ clients fit
            let mut c = Command::new("runuser");
            c.args([
                "-u",
                "postgres",
                "--",
                "sh",
                "-c",
                "ulimit -n \"$(ulimit -Hn)\"; exec \"$0\" \"$@\"",
            ])
            .arg(&pgb);
            c
        } else {
            Command::new(&pgb)
        };
        let child = own_session(&mut cmd)
            .arg("-q")
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        guard.0.push(child);
        if wait_port(port) {
            let pid: u32 = std::fs::read_to_string(dir.join("pgbouncer.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0);
            guard.1.push(pid);
            let v = Command::new(&pgb)
                .arg("--version")
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .unwrap_or_default();
            eprintln!("using {v}");
            targets.push(Target {
                name: "PgBouncer",
                port,
                clients: CLIENTS,
                pids: if pid > 0 { vec![pid] } else { vec![] },
            });
        } else {
            eprintln!("PgBouncer did not start; continuing without it");
        }
    } else {
        eprintln!("PgBouncer not installed; comparing pgmux with PostgreSQL only");
    }

    let all_modes = ["simple", "extended", "prepared"];
    let only = std::env::var("LOAD_MODES").unwrap_or_default();
    let modes: Vec<&str> = all_modes
        .iter()
        .copied()
        .filter(|m| only.is_empty() || only.split(',').any(|o| o == *m))
        .collect();
    if let Ok(t) = std::env::var("LOAD_TARGETS") {
        targets.retain(|x| {
            t.split(',')
                .any(|n| x.name.to_lowercase().contains(&n.to_lowercase()))
        });
    }
    let mut results: BTreeMap<(usize, usize), Vec<RunResult>> = BTreeMap::new();
    // modes outermost: a pooler that fails one mode (PgBouncer < 1.21 with -M prepared) cannot
    // spoil the rounds of the others
    for (mi, mode) in modes.iter().enumerate() {
        for round in 0..rounds {
            for (ti, t) in targets.iter().enumerate() {
                let before = (t.name == "pgmux")
                    .then(|| stats_totals(&pg, t.port, &seed.app_user, &seed.app_password))
                    .flatten();
                let sslmode = if tls && t.name != "PostgreSQL direct" {
                    "require"
                } else {
                    "disable"
                };
                let mut r = run_pgbench(
                    &pg,
                    t,
                    mode,
                    secs,
                    &dir.join("pgbench-log"),
                    &seed.app_password,
                    sslmode,
                );
                if let (Some((x0, p0)), Some((x1, p1))) = (
                    before,
                    stats_totals(&pg, t.port, &seed.app_user, &seed.app_password),
                ) && x1 > x0
                {
                    r.server_parses_per_10k = Some((p1 - p0) as f64 * 10_000.0 / (x1 - x0) as f64);
                }
                eprintln!(
                    "round {} {:>8} {:<18} {:>5} clients: {:>8.0} tps  avg {:.3} ms  p99 {:.3} ms {}",
                    round + 1,
                    mode,
                    t.name,
                    t.clients,
                    r.tps,
                    r.avg_ms,
                    r.p99_ms,
                    r.note
                );
                results.entry((mi, ti)).or_default().push(r);
            }
        }
    }
    // single-client latency: `rounds` rounds, the targets interleaved in each, median reported;
    // a failed run is NaN, so round i of every target stays at index i (for paired differences)
    let mut single: Vec<(&str, Vec<f64>)> = targets.iter().map(|t| (t.name, Vec::new())).collect();
    for _ in 0..rounds {
        for (t, (_, runs)) in targets.iter().zip(single.iter_mut()) {
            let t1 = Target {
                name: t.name,
                port: t.port,
                clients: 1,
                pids: t.pids.clone(),
            };
            let r = run_pgbench(
                &pg,
                &t1,
                "simple",
                if quick { 2 } else { 5 },
                &dir.join("pgbench-log"),
                &seed.app_password,
                if tls && t.name != "PostgreSQL direct" {
                    "require"
                } else {
                    "disable"
                },
            );
            runs.push(if r.avg_ms > 0.0 { r.avg_ms } else { f64::NAN });
        }
    }

    let md = report::write(&targets, &modes, &results, &single, secs, rounds, tls);
    println!("\n{md}");
    let target_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&target_dir);
    let _ = std::fs::write(target_dir.join("load-report.md"), &md);
    // LOAD_EXTRA=1: connection storm, idle clients' memory, client-count sweep and chart
    if std::env::var("LOAD_EXTRA").is_ok_and(|v| v == "1") {
        let ctx = Ctx {
            pg_port: pg.port(),
            pg,
            dir: dir.clone(),
            quick,
            secs,
            rounds,
            app_user: seed.app_user.clone(),
            app_password: seed.app_password.clone(),
            auth_user: seed.auth_user.clone(),
            auth_password: seed.auth_password.clone(),
        };
        let more = extra::run(&ctx, &mut guard, &targets);
        println!("\n{more}");
        let _ = std::fs::write(target_dir.join("load-report-extra.md"), &more);
        drop(guard);
        drop(ctx);
    } else {
        drop(guard);
    }
}
