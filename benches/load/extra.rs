//! Load benchmark extras (LOAD_EXTRA=1): a connection storm through auth_query, memory with many idle clients, and the client-count sweep with its SVG chart.

use bytes::{Buf, BytesMut};
use pgmux::auth::{ScramClient, ScramClientKeys};
use pgmux::protocol::frontend;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::chart::{Series, chart};

/// SCRAM keys by (salt, iterations): the client's PBKDF2 runs once, so a storm measures the
/// pooler, not the client's hashing.
pub type KeyCache = Arc<Mutex<Vec<(Vec<u8>, u32, ScramClientKeys)>>>;

async fn read_msg(s: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<(u8, BytesMut)> {
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
            if buf.len() > len {
                let tag = buf[0];
                buf.advance(5);
                return Ok((tag, buf.split_to(len - 4)));
            }
        }
        if s.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

fn attr(msg: &str, key: char) -> Option<&str> {
    msg.split(',')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// Log in with SCRAM-SHA-256 (keys from `cache` when the salt is known) and wait for
/// ReadyForQuery. Returns the open connection.
pub async fn login(
    port: u16,
    db: &str,
    user: &str,
    password: &str,
    cache: &KeyCache,
) -> std::io::Result<TcpStream> {
    let bad = |m: &str| std::io::Error::other(m.to_string());
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut out = BytesMut::new();
    frontend::startup_message(&mut out, &[("user", user), ("database", db)]);
    s.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(512);
    let mut scram: Option<ScramClient> = None;
    loop {
        let (tag, body) = read_msg(&mut s, &mut buf).await?;
        match tag {
            b'R' => {
                let code = u32::from_be_bytes(body[0..4].try_into().unwrap());
                out.clear();
                match code {
                    0 => {}
                    10 => {
                        // the keys are known only after server-first (salt): set below
                        let c = ScramClient::with_password(password);
                        frontend::sasl_initial_response(
                            &mut out,
                            "SCRAM-SHA-256",
                            &c.client_first(),
                        );
                        scram = Some(c);
                        s.write_all(&out).await?;
                    }
                    11 => {
                        let msg = std::str::from_utf8(&body[4..]).map_err(|_| bad("utf8"))?;
                        let salt = base64_decode(attr(msg, 's').ok_or_else(|| bad("no salt"))?);
                        let iters: u32 = attr(msg, 'i')
                            .and_then(|v| v.parse().ok())
                            .ok_or_else(|| bad("no iterations"))?;
                        let keys = {
                            let known = cache
                                .lock()
                                .unwrap()
                                .iter()
                                .find(|(s, i, _)| *s == salt && *i == iters)
                                .map(|x| x.2.clone());
                            match known {
                                Some(k) => k,
                                None => {
                                    let k = ScramClientKeys::from_password(password, &salt, iters);
                                    cache.lock().unwrap().push((salt.clone(), iters, k.clone()));
                                    k
                                }
                            }
                        };
                        let mut keyed = scram.take().ok_or_else(|| bad("SASL order"))?;
                        keyed.set_keys(keys);
                        let fin = keyed
                            .server_first(&body[4..])
                            .map_err(|e| bad(&e.to_string()))?;
                        frontend::sasl_response(&mut out, &fin);
                        scram = Some(keyed);
                        s.write_all(&out).await?;
                    }
                    12 => {
                        scram
                            .as_ref()
                            .ok_or_else(|| bad("SASL order"))?
                            .server_final(&body[4..])
                            .map_err(|e| bad(&e.to_string()))?;
                    }
                    other => return Err(bad(&format!("auth request {other}"))),
                }
            }
            b'E' => return Err(bad(&String::from_utf8_lossy(&body))),
            b'Z' => return Ok(s),
            _ => {}
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

async fn select_one(s: &mut TcpStream) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    frontend::query(&mut out, "select 1");
    s.write_all(&out).await?;
    let mut buf = BytesMut::new();
    loop {
        let (tag, body) = read_msg(s, &mut buf).await?;
        match tag {
            b'Z' => return Ok(()),
            b'E' => {
                return Err(std::io::Error::other(
                    String::from_utf8_lossy(&body).to_string(),
                ));
            }
            _ => {}
        }
    }
}

/// `n` clients connect at once, log in, run `select 1` and stay until all are done. Returns
/// (wall time until the last one's answer, failures).
pub fn storm(
    port: u16,
    user: &str,
    password: &str,
    n: usize,
    cache: &KeyCache,
) -> (Duration, usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // warm the key cache with one login (its PBKDF2 is not the pooler's cost)
        let _ = login(port, "synergyflow", user, password, cache).await;
        let t = Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let (user, password, cache) = (user.to_string(), password.to_string(), cache.clone());
            tasks.push(tokio::spawn(async move {
                let mut s = login(port, "synergyflow", &user, &password, &cache).await?;
                let logged_in = t.elapsed();
                select_one(&mut s).await?;
                Ok::<_, std::io::Error>((s, logged_in))
            }));
        }
        let mut failed = 0;
        let mut last_login = Duration::ZERO;
        let mut keep = Vec::with_capacity(n);
        // one deadline for the whole storm: a pooler that never answers cannot stall the run
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for task in tasks {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok((s, l)))) => {
                    last_login = last_login.max(l);
                    keep.push(s)
                }
                _ => failed += 1,
            }
        }
        if std::env::var("LOAD_DEBUG").is_ok() {
            eprintln!("storm: last login after {last_login:?}");
        }
        (t.elapsed(), failed)
    })
}

/// Open `n` logged-in idle connections (500 logging in at a time) and call `measure` while
/// they are all open. Returns (connections that logged in, what `measure` returned).
pub fn idle<T>(
    port: u16,
    user: &str,
    password: &str,
    n: usize,
    cache: &KeyCache,
    measure: impl FnOnce() -> T,
) -> (usize, T) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let open: Vec<TcpStream> = rt.block_on(async {
        let mut open = Vec::with_capacity(n);
        let mut left = n;
        // one deadline for all the logins
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while left > 0 && tokio::time::Instant::now() < deadline {
            let batch = left.min(500);
            let mut tasks = Vec::with_capacity(batch);
            for _ in 0..batch {
                let (user, password, cache) =
                    (user.to_string(), password.to_string(), cache.clone());
                tasks.push(tokio::spawn(async move {
                    login(port, "synergyflow", &user, &password, &cache).await
                }));
            }
            for t in tasks {
                let Ok(t) = tokio::time::timeout_at(deadline, t).await else {
                    continue;
                };
                match t {
                    Ok(Ok(s)) => open.push(s),
                    Ok(Err(e)) => {
                        if open.is_empty() {
                            eprintln!("idle login failed: {e}");
                        }
                    }
                    Err(_) => {}
                }
            }
            left -= batch;
        }
        open
    });
    // let the pooler settle (idle buffers released) before measuring
    std::thread::sleep(Duration::from_secs(2));
    let m = measure();
    let count = open.len();
    rt.block_on(async move { drop(open) });
    (count, m)
}

/// A pooler started for the extras: its port and pid.
pub struct Started {
    pub name: &'static str,
    pub port: u16,
    pub pid: u32,
}

/// Start pgmux (and PgBouncer, when installed) with `tweak` applied to the benchmark's ini.
fn start_pair(
    ctx: &super::Ctx,
    guard: &mut super::Kill,
    tag: &str,
    tweak: &dyn Fn(String, &str) -> String,
) -> Vec<Started> {
    let mut out = Vec::new();
    let port = super::free_port();
    let name = format!("pgmux-{tag}");
    let text = tweak(
        super::ini(ctx.pg_port, port, &ctx.dir, &name, false),
        "pgmux",
    );
    std::fs::write(ctx.dir.join(format!("{name}.ini")), text).unwrap();
    let child = super::own_session(&mut std::process::Command::new(super::pgmux_bin()))
        .arg("-q")
        .arg(ctx.dir.join(format!("{name}.ini")))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start pgmux");
    let pid = child.id();
    guard.0.push(child);
    if super::wait_port(port) {
        out.push(Started {
            name: "pgmux",
            port,
            pid,
        });
    }
    if let Some(pgb) = super::find_pgbouncer() {
        let port = super::free_port();
        let name = format!("pgbouncer-{tag}");
        let text = tweak(
            super::ini(ctx.pg_port, port, &ctx.dir, &name, false),
            "pgbouncer",
        );
        std::fs::write(ctx.dir.join(format!("{name}.ini")), text).unwrap();
        let _ = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&ctx.dir)
            .status();
        // runuser resets the soft fd limit to 1024: raise it to the hard limit as pgmux does
        let child = super::own_session(&mut std::process::Command::new("runuser"))
            .args([
                "-u",
                "postgres",
                "--",
                "sh",
                "-c",
                "ulimit -n \"$(ulimit -Hn)\"; exec \"$0\" -q \"$1\"",
            ])
            .arg(&pgb)
            .arg(ctx.dir.join(format!("{name}.ini")))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        guard.0.push(child);
        if super::wait_port(port) {
            let pid: u32 = std::fs::read_to_string(ctx.dir.join(format!("{name}.pid")))
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0);
            guard.1.push(pid);
            out.push(Started {
                name: "PgBouncer",
                port,
                pid,
            });
        }
    }
    out
}

fn vm_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// One storm's outcome.
struct StormRun {
    secs: f64,
    failed: usize,
    cpu: f64,
    clients: f64,
    busy: f64,
}

/// The extras, as a markdown section.
pub fn run(ctx: &super::Ctx, guard: &mut super::Kill, targets: &[super::Target]) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let (storm_n, idle_n) = if ctx.quick {
        (100, 500)
    } else {
        (1000, 10_000)
    };

    // LOAD_EXTRA_ONLY=sweep,storm,idle picks parts (default: all)
    let part =
        |p: &str| std::env::var("LOAD_EXTRA_ONLY").map_or(true, |v| v.split(',').any(|x| x == p));
    if part("sweep") {
        // TPS and p99 against client count, simple protocol
        let counts: &[u32] = if ctx.quick {
            &[50, 200]
        } else {
            &[50, 200, 1000, 2000]
        };
        let mut series: Vec<Series> = Vec::new();
        // fresh poolers: the main run may have left PgBouncer's servers in a bad state (-M prepared
        // fails on PgBouncer < 1.21 and leaves named statements behind)
        let fresh = start_pair(ctx, guard, "sweep", &|ini: String, _: &str| ini);
        let mut sweep_targets: Vec<super::Target> = targets
            .iter()
            .filter(|t| t.name == "PostgreSQL direct")
            .map(|t| super::Target {
                name: t.name,
                port: t.port,
                clients: t.clients,
                pids: vec![],
            })
            .collect();
        sweep_targets.extend(fresh.iter().map(|st| super::Target {
            name: st.name,
            port: st.port,
            clients: 0,
            pids: vec![st.pid],
        }));
        for t in &sweep_targets {
            let mut pts = Vec::new();
            for &c in counts {
                if t.name == "PostgreSQL direct" && c + super::POOLER_SLOTS > super::MAX_CONNECTIONS
                {
                    continue;
                }
                let tc = super::Target {
                    name: t.name,
                    port: t.port,
                    clients: c,
                    pids: t.pids.clone(),
                };
                let r = super::run_pgbench(
                    &ctx.pg,
                    &tc,
                    "simple",
                    ctx.secs,
                    &ctx.dir.join("pgbench-log"),
                    &ctx.app_password,
                    "disable",
                );
                eprintln!(
                    "sweep {} {c}: {:.0} tps p99 {:.2} ms {}",
                    t.name, r.tps, r.p99_ms, r.note
                );
                if r.ok {
                    pts.push((c, r.tps, r.p99_ms));
                }
            }
            series.push((t.name.to_string(), pts));
        }
        let _ = writeln!(
            md,
            "\nClient-count sweep (simple protocol, {} s per point):\n",
            ctx.secs
        );
        let _ = writeln!(md, "| target | clients | TPS | p99 ms |\n|---|---|---|---|");
        for (name, pts) in &series {
            for (c, tps, p99) in pts {
                let _ = writeln!(md, "| {name} | {c} | {tps:.0} | {p99:.2} |");
            }
        }
        let svg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/load-sweep.svg");
        match chart(&svg, &series) {
            Ok(()) => {
                let _ = writeln!(md, "\nChart: `{}`", svg.display());
            }
            Err(e) => eprintln!("chart: {e}"),
        }
    }

    if part("storm") {
        // connection storm through auth_query: the app user is not in the userlist
        let aq = ctx.dir.join("userlist-aq.txt");
        std::fs::write(
            &aq,
            format!("\"{}\" \"{}\"\n", ctx.auth_user, ctx.auth_password),
        )
        .unwrap();
        let _ = writeln!(
            md,
            "Connection storm: {storm_n} clients connect at once (SCRAM-SHA-256, password looked up with auth_query through `{}`), each runs `select 1`; time until the last answer (the clients' PBKDF2 is done once beforehand, so this is the poolers' time), fresh poolers each round, median of the rounds:\n",
            ctx.auth_user
        );
        // fresh poolers for each round (a pool warmed by one storm would speed up the next), the
        // median round reported per pooler
        let mut runs: Vec<(String, Vec<StormRun>)> = Vec::new();
        for round in 0..ctx.rounds.max(1) {
            for (tag, cache_ttl) in [("storm", 0u32), ("storm-cached", 60)] {
                let aq_path = aq.display().to_string();
                let auth_user = ctx.auth_user.clone();
                let tweak = move |ini: String, who: &str| {
                    // the benchmark's auth_file (with the app user) is replaced by one with the
                    // auth user; a listen backlog that holds the whole storm (else dropped SYNs
                    // cost 1 s retries)
                    let mut s = ini.replace("auth_file = ", "; auth_file = ");
                    s.push_str("listen_backlog = 4096\n");
                    s.push_str(&format!(
                        "auth_file = {aq_path}\nauth_user = {auth_user}\nauth_query = SELECT usename, passwd FROM user_search($1)\n"
                    ));
                    if who == "pgmux" && cache_ttl > 0 {
                        s.push_str(&format!("auth_query_cache_ttl = {cache_ttl}\n"));
                    }
                    s
                };
                let started = start_pair(ctx, guard, &format!("{tag}-{round}"), &tweak);
                for st in &started {
                    if cache_ttl > 0 && st.name != "pgmux" {
                        continue;
                    }
                    let cache: KeyCache = Arc::default();
                    let cpu0 = super::cpu::proc_usage(st.pid).0;
                    let own0 = super::cpu::proc_usage(std::process::id()).0;
                    let m0 = super::cpu::Machine::now();
                    let (took, failed) =
                        storm(st.port, &ctx.app_user, &ctx.app_password, storm_n, &cache);
                    let cpu = super::cpu::proc_usage(st.pid).0 - cpu0;
                    // the clients run in this process: their CPU, and how busy the machine was
                    let clients = super::cpu::proc_usage(std::process::id()).0 - own0;
                    let busy = m0.until(super::cpu::Machine::now()).busy_pct();
                    let label = if cache_ttl > 0 {
                        format!("{} with auth_query_cache_ttl = {cache_ttl}", st.name)
                    } else {
                        st.name.to_string()
                    };
                    eprintln!(
                        "storm round {} {label}: {took:?}, {failed} failed, pooler CPU {cpu:.2} s, clients' CPU {clients:.2} s, machine {busy:.0}% busy",
                        round + 1
                    );
                    let run = StormRun {
                        secs: took.as_secs_f64(),
                        failed,
                        cpu,
                        clients,
                        busy,
                    };
                    match runs.iter_mut().find(|(l, _)| *l == label) {
                        Some((_, v)) => v.push(run),
                        None => runs.push((label, vec![run])),
                    }
                }
                // this round's poolers go, with their server connections
                for st in &started {
                    // SAFETY: kill(2) on a pooler this benchmark started.
                    unsafe { libc::kill(st.pid as i32, libc::SIGTERM) };
                }
            }
        }
        for (label, mut v) in runs {
            v.sort_by(|a, b| a.secs.total_cmp(&b.secs));
            let all: Vec<String> = v.iter().map(|r| format!("{:.2}", r.secs)).collect();
            let m = &v[v.len() / 2];
            let failed: usize = v.iter().map(|r| r.failed).sum();
            let _ = writeln!(
                md,
                "- {label}: {:.2} s median of {} (all: {} s; the median round's pooler CPU {:.2} s, clients' CPU {:.2} s, all cores {:.0}% busy){}",
                m.secs,
                v.len(),
                all.join(" / "),
                m.cpu,
                m.clients,
                m.busy,
                if failed > 0 {
                    format!(" ({failed} failed in all)")
                } else {
                    String::new()
                }
            );
        }
    }

    if part("idle") {
        // memory with many idle logged-in clients
        let _ = writeln!(
            md,
            "\nMemory with {idle_n} idle logged-in clients (VmRSS after they logged in; max_client_conn raised for both):\n"
        );
        let tweak = |ini: String, _: &str| {
            ini.replace(
                "max_client_conn = 2000",
                &format!("max_client_conn = {}", idle_n + 100),
            )
        };
        for st in start_pair(ctx, guard, "idle", &tweak) {
            let before = vm_rss_mib(st.pid);
            let cache: KeyCache = Arc::default();
            let (n, rss) = idle(
                st.port,
                &ctx.app_user,
                &ctx.app_password,
                idle_n,
                &cache,
                || vm_rss_mib(st.pid),
            );
            eprintln!(
                "idle {}: {n} clients, RSS {before:.1} -> {rss:.1} MiB",
                st.name
            );
            let _ = writeln!(
                md,
                "- {}: {n} clients logged in, RSS {before:.1} MiB before, {rss:.1} MiB with them",
                st.name
            );
        }
    }
    md
}
