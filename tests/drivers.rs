//! The driver matrix: pgJDBC, asyncpg, psycopg 3 and node-postgres, each with 1000 concurrent
//! clients onto 5 server connections in transaction mode, running repeated prepared queries with
//! parameters inside and outside transactions and checking every result (scripts in
//! tests/drivers/). `.ci/run` installs the drivers; a missing driver fails the test.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLIENTS: usize = 1000;

/// The drivers run one at a time: 1000 logins each are enough load for a 2-core machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_driver(name: &str, mut cmd: Command) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (pg, seed) = postgres(100);
    pg.psql(
        "synergyflow",
        &format!(
            "create table drv(client int, i int); grant all on drv to {}",
            seed.app_user
        ),
    )
    .unwrap();
    let mux = Pgmux::start(
        &pg,
        // 1000 concurrent SCRAM logins (the PBKDF2 runs in each driver, a cold JVM's is slow) can
        // take longer than the default 60 s login timeout on 2 cores; what is tested here is
        // statements, not login speed
        "default_pool_size = 5\nmax_client_conn = 1100\nquery_wait_timeout = 60\nclient_login_timeout = 300",
        &[(&seed.app_user, &seed.app_password)],
    );
    let port = mux.port.to_string();
    cmd.args([
        "127.0.0.1",
        &port,
        "synergyflow",
        &seed.app_user,
        &seed.app_password,
    ])
    .arg(CLIENTS.to_string())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: cannot start ({e}); run .ci/run to install drivers"));
    let deadline = started + Duration::from_secs(360);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name}: did not finish within 360 s\n{}", mux.log_text());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "{name} failed:\n{stdout}\n{stderr}");
    eprintln!("{name}: {} in {:?}", stdout.trim(), started.elapsed());
    assert!(
        backends(&pg, "synergyflow", &seed.app_user) <= 5,
        "{name}: more than 5 server connections"
    );
    // no client was dropped by the pooler with an error along the way
    let log = mux.log_text();
    assert!(!log.contains("pooler error"), "{name}: {log}");
}

fn drivers_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/drivers"))
}

#[test]
fn pgjdbc_default_prepare_threshold() {
    let jar = "/usr/share/java/postgresql.jar";
    assert!(
        Path::new(jar).exists(),
        "pgJDBC missing: apt-get install libpostgresql-jdbc-java (.ci/run does)"
    );
    let mut cmd = Command::new("java");
    cmd.args(["-Xss512k", "-cp", jar])
        .arg(drivers_dir().join("DriverTest.java"));
    run_driver("pgJDBC", cmd);
}

#[test]
fn asyncpg_statement_cache() {
    let mut cmd = Command::new("python3");
    cmd.arg(drivers_dir().join("asyncpg_test.py"));
    run_driver("asyncpg", cmd);
}

#[test]
fn psycopg3_prepare_threshold_0_and_pipeline() {
    let mut cmd = Command::new("python3");
    cmd.arg(drivers_dir().join("psycopg_test.py"));
    run_driver("psycopg", cmd);
}

#[test]
fn node_postgres_named_queries() {
    assert!(
        drivers_dir().join("node_modules/pg").exists(),
        "node-postgres missing: npm install in tests/drivers (.ci/run does)"
    );
    let mut cmd = Command::new("node");
    cmd.arg(drivers_dir().join("node_test.js"));
    run_driver("node-postgres", cmd);
}
