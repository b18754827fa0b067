//! Test harness: a throwaway PostgreSQL (pgmux::dev) with pgmux started in front of it as a real process.
#![allow(dead_code)]

pub mod fake_dns;
pub mod faults;
pub mod raw;

use pgmux::dev::{PgOptions, Seed, TempPostgres};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// PostgreSQL plus the seed objects.
pub fn postgres(max_connections: u32) -> (TempPostgres, Seed) {
    postgres_with(max_connections, &[])
}

/// PostgreSQL with extra postgresql.conf lines, plus the seed objects.
pub fn postgres_with(max_connections: u32, extra: &[&str]) -> (TempPostgres, Seed) {
    let extra_conf = extra.iter().map(|s| s.to_string()).collect();
    let pg = TempPostgres::start(&PgOptions {
        max_connections,
        extra_conf,
    })
    .expect("start PostgreSQL");
    let seed = pg.create_seed().expect("create seed");
    (pg, seed)
}

pub struct Pgmux {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub ini: PathBuf,
}

static DIR_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Pgmux {
    /// Start pgmux with `[databases]` pointing at `pg` (synergyflow and postgres), the given
    /// `[pgbouncer]` lines (appended after the defaults, so they win) and userlist entries.
    pub fn start(pg: &TempPostgres, pgbouncer_lines: &str, userlist: &[(&str, &str)]) -> Pgmux {
        Self::start_on(pg, pgbouncer_lines, userlist, free_port())
    }

    /// Like `start`, on a given port (several processes with so_reuseport share one).
    pub fn start_on(
        pg: &TempPostgres,
        pgbouncer_lines: &str,
        userlist: &[(&str, &str)],
        port: u16,
    ) -> Pgmux {
        Self::start_env(pg, pgbouncer_lines, userlist, port, &[])
    }

    /// Like `start_on`, with extra environment variables for the pgmux process.
    pub fn start_env(
        pg: &TempPostgres,
        pgbouncer_lines: &str,
        userlist: &[(&str, &str)],
        port: u16,
        env: &[(&str, &str)],
    ) -> Pgmux {
        let dir = std::env::temp_dir().join(format!(
            "pgmux-test-{}-{}",
            std::process::id(),
            DIR_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("pgmux.log");
        let mut ul = String::new();
        for (u, p) in userlist {
            ul.push_str(&format!("\"{u}\" \"{p}\"\n"));
        }
        std::fs::write(dir.join("userlist.txt"), ul).unwrap();
        let ini = dir.join("pgbouncer.ini");
        let text = format!(
            "[databases]\n\
             synergyflow = host=127.0.0.1 port={pgport} dbname=synergyflow\n\
             postgres = host=127.0.0.1 port={pgport}\n\
             aliasdb = host=127.0.0.1 port={pgport} dbname=synergyflow\n\
             \n[pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir = {dir}\n\
             auth_type = scram-sha-256\n\
             auth_file = {dir}/userlist.txt\n\
             logfile = {log}\n\
             pool_mode = transaction\n\
             max_client_conn = 1000\n\
             default_pool_size = 50\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             {pgbouncer_lines}\n",
            pgport = pg.port(),
            dir = dir.display(),
            log = log.display(),
        );
        std::fs::write(&ini, text).unwrap();
        Self::spawn_env(dir, port, log, ini, env)
    }

    pub fn spawn(dir: PathBuf, port: u16, log: PathBuf, ini: PathBuf) -> Pgmux {
        Self::spawn_env(dir, port, log, ini, &[])
    }

    fn spawn_env(
        dir: PathBuf,
        port: u16,
        log: PathBuf,
        ini: PathBuf,
        env: &[(&str, &str)],
    ) -> Pgmux {
        let child = Command::new(env!("CARGO_BIN_EXE_pgmux"))
            .envs(env.iter().copied())
            .arg("-q")
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pgmux");
        let m = Pgmux {
            child: Some(child),
            port,
            dir,
            log,
            ini,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        // listening: the port answers and this process says so (another process may share
        // the port through so_reuseport)
        while TcpStream::connect(("127.0.0.1", port)).is_err()
            || !m.log_text().contains("listening on")
        {
            assert!(
                Instant::now() < deadline,
                "pgmux did not start listening:\n{}",
                m.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    pub fn url(&self, db: &str, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={db} user={user} password={password} connect_timeout=10",
            self.port
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Send a signal and wait for the process to exit; returns its exit status code.
    pub fn signal_and_wait(&mut self, sig: i32, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe { libc_kill(child.id() as i32, sig) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Pgmux {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("pgmux log ({}):\n{}", self.log.display(), self.log_text());
        }
    }
}

/// tokio-postgres connection with its driver task spawned.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Count backends of `user` in `db` as PostgreSQL sees them.
pub fn backends(pg: &TempPostgres, db: &str, user: &str) -> usize {
    pg.psql(
        "postgres",
        &format!("select count(*) from pg_stat_activity where datname='{db}' and usename='{user}'"),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

/// Raw startup: send a StartupMessage with these params (and protocol version), return the first
/// ErrorResponse's (severity, code, message), or None if the server asked for authentication.
pub fn raw_startup(
    port: u16,
    version: u32,
    params: &[(&str, &str)],
) -> Option<(String, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&startup_message(version, params)).unwrap();
    read_error(&mut s)
}

/// Read messages until an ErrorResponse (returned) or an authentication request (None).
pub fn read_error(s: &mut TcpStream) -> Option<(String, String, String)> {
    loop {
        let mut hdr = [0u8; 5];
        s.read_exact(&mut hdr).ok()?;
        let len = u32::from_be_bytes(hdr[1..5].try_into().unwrap()) as usize - 4;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        match hdr[0] {
            b'E' => return Some(error_fields(&body)),
            b'R' => return None,
            _ => continue,
        }
    }
}

pub fn error_fields(body: &[u8]) -> (String, String, String) {
    let (mut sev, mut code, mut msg) = (String::new(), String::new(), String::new());
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let t = body[i];
        let end = body[i + 1..].iter().position(|&c| c == 0).unwrap() + i + 1;
        let v = String::from_utf8_lossy(&body[i + 1..end]).into_owned();
        match t {
            b'S' => sev = v,
            b'C' => code = v,
            b'M' => msg = v,
            _ => {}
        }
        i = end + 1;
    }
    (sev, code, msg)
}

/// The (code, message) of a tokio-postgres error that came from the server side.
pub fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    match e.as_db_error() {
        Some(d) => (d.code().code().to_string(), d.message().to_string()),
        None => (String::new(), e.to_string()),
    }
}

/// The data rows of a simple-query reply, as optional strings.
pub fn rows_of(msgs: &[tokio_postgres::SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// A v3 StartupMessage for `user` and `database`.
pub fn startup_packet(user: &str, database: &str) -> Vec<u8> {
    startup_message(196608, &[("user", user), ("database", database)])
}

/// A StartupMessage with this protocol version and these parameters.
pub fn startup_message(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut pkt = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    pkt.extend(body);
    pkt
}

/// `pgbench -i -s 1` through `conn` (a libpq connection string), asserting it worked.
pub fn pgbench_init(pg: &TempPostgres, conn: &str, password: &str) {
    let init = Command::new(pg.tool("pgbench"))
        .args(["-i", "-s", "1", "-q", conn])
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
}

/// The TPC-B invariant after pgbench: every committed transfer is in the history.
pub fn pgbench_balances_add_up(pg: &TempPostgres) -> bool {
    pg.psql(
        "synergyflow",
        "select (select sum(abalance) from pgbench_accounts) = (select sum(delta) from pgbench_history)",
    )
    .unwrap()
    .trim()
        == "t"
}

/// pgmux with the seed's app user and an `admin` console user (password `admin-pw`).
pub fn start_with_admin(pg: &TempPostgres, seed: &pgmux::dev::Seed, extra: &str) -> Pgmux {
    Pgmux::start(
        pg,
        &format!("admin_users = admin\n{extra}"),
        &[(&seed.app_user, &seed.app_password), ("admin", "admin-pw")],
    )
}

/// Restores a sysctl value when dropped.
pub struct Sysctl(&'static str, Option<String>);

impl Sysctl {
    /// net.ipv4.tcp_migrate_req = 1: connections queued on a listener that closes move to
    /// another listener of its so_reuseport group instead of being reset (Linux >= 5.14).
    pub fn migrate_req() -> Sysctl {
        let path = "/proc/sys/net/ipv4/tcp_migrate_req";
        let old = std::fs::read_to_string(path).ok();
        std::fs::write(path, "1").expect("set net.ipv4.tcp_migrate_req (needs root)");
        Sysctl(path, old)
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Some(v) = &self.1 {
            let _ = std::fs::write(self.0, v.trim());
        }
    }
}

/// GET `path` from the metrics listener on loopback `port`: (status code, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text[9..12].parse().unwrap();
    (code, text.split_once("\r\n\r\n").unwrap().1.to_string())
}
