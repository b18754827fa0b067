//! Throwaway PostgreSQL clusters (initdb + pg_ctl in a temp dir) for `pgmux dev`, the tests and the benchmarks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(
        "PostgreSQL server binaries not found (set PG_BIN to the directory holding initdb, or apt-get install postgresql)"
    )]
    NoBinaries,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct PgOptions {
    pub max_connections: u32,
    /// Lines appended to postgresql.conf.
    pub extra_conf: Vec<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 200,
            extra_conf: Vec::new(),
        }
    }
}

/// The seed's objects: database, application role, auth user.
#[derive(Debug, Clone)]
pub struct Seed {
    pub database: String,
    pub app_user: String,
    pub app_password: String,
    pub auth_user: String,
    pub auth_password: String,
}

/// A running private cluster; dropping it stops PostgreSQL and deletes its files.
#[derive(Debug)]
pub struct TempPostgres {
    root: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    running: bool,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Where initdb/pg_ctl live: `PG_BIN`, else `initdb` on PATH, else `pg_config --bindir`, else the
/// newest `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Result<PathBuf, DevError> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(p) = std::env::var("PG_BIN") {
        let p = PathBuf::from(p);
        return if has(&p) {
            Ok(p)
        } else {
            Err(DevError::NoBinaries)
        };
    }
    if let Ok(path) = std::env::var("PATH") {
        for d in std::env::split_paths(&path) {
            if has(&d) {
                // follow symlinks (e.g. /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb)
                // so psql and pgbench are found next to the server binaries
                let real = std::fs::canonicalize(d.join("initdb")).ok();
                let real_dir = real
                    .as_ref()
                    .and_then(|r| r.parent())
                    .map(Path::to_path_buf);
                return Ok(real_dir.filter(|r| has(r)).unwrap_or(d));
            }
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has(&d) {
            return Ok(d);
        }
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in rd.flatten() {
            let v: u32 = e.file_name().to_string_lossy().parse().unwrap_or(0);
            let d = e.path().join("bin");
            if has(&d) && best.as_ref().is_none_or(|(bv, _)| v > *bv) {
                best = Some((v, d));
            }
        }
    }
    best.map(|b| b.1).ok_or(DevError::NoBinaries)
}

fn free_port() -> Result<u16, DevError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn check(what: &str, out: std::io::Result<Output>) -> Result<String, DevError> {
    let out = out.map_err(|e| DevError::Command {
        what: what.into(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(DevError::Command {
            what: what.into(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl TempPostgres {
    pub fn start(opts: &PgOptions) -> Result<TempPostgres, DevError> {
        let bin = find_bin_dir()?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let root = std::env::temp_dir().join(format!(
            "pgmux-pg-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let data = root.join("data");
        let sock = root.join("sock");
        std::fs::create_dir_all(&sock)?;
        let as_postgres = is_root();
        let mut pg = TempPostgres {
            log: root.join("postgres.log"),
            root,
            data,
            sock,
            bin,
            port: 0,
            as_postgres,
            running: false,
        };
        if as_postgres {
            check(
                "chown",
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&pg.root)
                    .output(),
            )?;
        }
        check(
            "initdb",
            pg.cmd("initdb")
                .arg("-D")
                .arg(&pg.data)
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ])
                .output(),
        )?;
        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nmax_connections = {}\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 128MB\npassword_encryption = 'scram-sha-256'\nlog_min_messages = warning\n",
            pg.sock.display(),
            opts.max_connections
        );
        for l in &opts.extra_conf {
            conf.push_str(l);
            conf.push('\n');
        }
        pg.append(&pg.data.join("postgresql.conf"), &conf)?;
        pg.write(
            &pg.data.join("pg_hba.conf"),
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all trust_user 127.0.0.1/32 trust\n\
             host all md5_user 127.0.0.1/32 md5\nhost all plain_user 127.0.0.1/32 password\n\
             host all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n",
        )?;
        let mut last = None;
        for _ in 0..5 {
            pg.port = free_port()?;
            match pg.pg_ctl_start() {
                Ok(()) => {
                    pg.running = true;
                    return Ok(pg);
                }
                Err(e) => last = Some(e), // most likely the port was taken meanwhile
            }
        }
        Err(last.unwrap_or(DevError::NoBinaries))
    }

    fn cmd(&self, prog: &str) -> Command {
        let path = self.bin.join(prog);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn write(&self, path: &Path, text: &str) -> Result<(), DevError> {
        std::fs::write(path, text)?;
        Ok(())
    }

    fn append(&self, path: &Path, text: &str) -> Result<(), DevError> {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)?
            .write_all(text.as_bytes())?;
        Ok(())
    }

    fn pg_ctl_start(&self) -> Result<(), DevError> {
        check(
            "pg_ctl start",
            self.cmd("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log)
                .args([
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &format!("-p {}", self.port),
                    "start",
                ])
                .output(),
        )
        .map_err(|e| DevError::Command {
            what: "pg_ctl start".into(),
            detail: format!("{e}\n{}", self.log_tail()),
        })
        .map(|_| ())
    }

    fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        t.lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    pub fn socket_dir(&self) -> &Path {
        &self.sock
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// Path of a client program (psql, pgbench): next to the server binaries, else from PATH.
    pub fn tool(&self, name: &str) -> PathBuf {
        let p = self.bin.join(name);
        if p.is_file() { p } else { PathBuf::from(name) }
    }

    /// The temp directory holding data, socket and logs (removed on drop).
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    pub fn superuser(&self) -> &str {
        "postgres"
    }

    /// Run SQL as the superuser; returns psql's unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, DevError> {
        check(
            "psql",
            Command::new(self.tool("psql"))
                .args([
                    "-X",
                    "-At",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                ])
                .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
                .output(),
        )
    }

    /// Create the seed's database, roles and the auth_query function (in `postgres` and `synergyflow`).
    pub fn create_seed(&self) -> Result<Seed, DevError> {
        let seed = Seed {
            database: "synergyflow".into(),
            app_user: "synergyflow_app".into(),
            app_password: "synergyflow-dev-password".into(),
            auth_user: "pgmux_auth".into(),
            auth_password: "pgmux-auth-password".into(),
        };
        self.psql(
            "postgres",
            &format!(
                "CREATE ROLE {} LOGIN PASSWORD '{}' CONNECTION LIMIT 200; CREATE ROLE {} LOGIN PASSWORD '{}'; \
                 CREATE ROLE trust_user LOGIN; CREATE ROLE plain_user LOGIN PASSWORD 'plain-password'; \
                 SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 'md5-password'; \
                 GRANT ALL ON DATABASE postgres TO trust_user, md5_user, plain_user;",
                seed.app_user, seed.app_password, seed.auth_user, seed.auth_password
            ),
        )?;
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {} OWNER {}", seed.database, seed.app_user),
        )?;
        let func = format!(
            "CREATE FUNCTION public.user_search(uname text) RETURNS TABLE (usename name, passwd text) \
             LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS \
             $$ SELECT usename, CASE WHEN valuntil < now() THEN NULL ELSE passwd END FROM pg_catalog.pg_shadow WHERE usename = uname $$; \
             REVOKE ALL ON FUNCTION public.user_search(text) FROM public; \
             GRANT EXECUTE ON FUNCTION public.user_search(text) TO {};",
            seed.auth_user
        );
        self.psql("postgres", &func)?;
        self.psql(&seed.database, &func)?;
        Ok(seed)
    }

    /// Restart keeping the port and data (`mode`: smart, fast or immediate).
    pub fn restart(&self, mode: &str) -> Result<(), DevError> {
        check(
            "pg_ctl stop",
            self.cmd("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", mode, "-w", "stop"])
                .output(),
        )?;
        self.pg_ctl_start()
    }

    /// Start a stopped server again on the same port.
    pub fn start_again(&mut self) -> Result<(), DevError> {
        if !self.running {
            self.pg_ctl_start()?;
            self.running = true;
        }
        Ok(())
    }

    /// Stop the server (idempotent).
    pub fn stop(&mut self) {
        if self.running {
            let _ = self
                .cmd("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
            self.running = false;
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Everything `pgmux dev` runs: the cluster, the seed, and a pgbouncer.ini + userlist for pgmux.
pub struct DevEnv {
    pub pg: TempPostgres,
    pub seed: Seed,
    pub dir: PathBuf,
    pub ini_path: PathBuf,
    pub userlist_path: PathBuf,
    pub listen_port: u16,
}

impl DevEnv {
    pub fn psql_command(&self) -> String {
        format!(
            "psql \"host=127.0.0.1 port={} dbname={} user={} password={}\"",
            self.listen_port, self.seed.database, self.seed.app_user, self.seed.app_password
        )
    }
}

/// Start a cluster, create the seed, and write pgmux's config with the seed pooler's settings.
pub fn prepare_dev_env(listen_port: Option<u16>) -> Result<DevEnv, DevError> {
    let pg = TempPostgres::start(&PgOptions::default())?;
    let seed = pg.create_seed()?;
    let dir = pg.root_dir().join("pgmux");
    std::fs::create_dir_all(&dir)?;
    let listen_port = match listen_port {
        Some(p) => p,
        None => free_port()?,
    };
    let userlist_path = dir.join("userlist.txt");
    // only the auth user: application users are looked up with auth_query
    std::fs::write(
        &userlist_path,
        format!("\"{}\" \"{}\"\n", seed.auth_user, seed.auth_password),
    )?;
    let ini_path = dir.join("pgbouncer.ini");
    std::fs::write(
        &ini_path,
        format!(
            ";; generated by `pgmux dev`: the synergyflow-pooler settings in front of a throwaway PostgreSQL\n\
             [databases]\n\
             synergyflow = host=127.0.0.1 port={pgport} dbname=synergyflow\n\
             postgres = host=127.0.0.1 port={pgport}\n\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {listen_port}\n\
             unix_socket_dir = {dir}\n\
             ;; md5 upgrades to SCRAM for SCRAM verifiers, as in the CloudNativePG Pooler's hba\n\
             auth_type = md5\n\
             auth_file = {userlist}\n\
             auth_user = {auth_user}\n\
             auth_query = SELECT usename, passwd FROM user_search($1)\n\
             auth_dbname = postgres\n\
             pool_mode = transaction\n\
             max_client_conn = 1000\n\
             default_pool_size = 50\n\
             min_pool_size = 10\n\
             reserve_pool_size = 10\n\
             reserve_pool_timeout = 5\n\
             max_db_connections = 50\n\
             max_user_connections = 50\n\
             server_idle_timeout = 600\n\
             server_lifetime = 3600\n\
             server_connect_timeout = 15\n\
             query_timeout = 300\n\
             query_wait_timeout = 120\n\
             client_idle_timeout = 0\n\
             idle_transaction_timeout = 600\n\
             log_connections = 1\n\
             log_disconnections = 1\n\
             log_pooler_errors = 1\n\
             stats_period = 60\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             admin_users = pgbouncer\n",
            pgport = pg.port(),
            dir = dir.display(),
            userlist = userlist_path.display(),
            auth_user = seed.auth_user,
        ),
    )?;
    Ok(DevEnv {
        pg,
        seed,
        dir,
        ini_path,
        userlist_path,
        listen_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_lifecycle_and_seed() {
        let mut pg = TempPostgres::start(&PgOptions::default()).unwrap();
        assert_eq!(pg.psql("postgres", "select 1").unwrap().trim(), "1");
        let seed = pg.create_seed().unwrap();
        let v = pg
            .psql(
                &seed.database,
                &format!("select passwd from user_search('{}')", seed.app_user),
            )
            .unwrap();
        assert!(v.starts_with("SCRAM-SHA-256$"), "{v}");
        let m = pg
            .psql("postgres", "select passwd from user_search('md5_user')")
            .unwrap();
        assert!(m.starts_with("md5"), "{m}");
        let port = pg.port();
        let root = pg.root_dir().to_path_buf();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        let other = TempPostgres::start(&PgOptions::default()).unwrap();
        assert_ne!(other.port(), port);
        pg.stop();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        drop(pg);
        assert!(!root.exists());
    }
}
