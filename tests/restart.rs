//! Restarts that drop nothing: a second pgmux takes over the port (so_reuseport) while the
//! first drains on SIGINT, under pgbench load; no transaction fails.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_with_so_reuseport_drops_no_transaction() {
    let _migrate = Sysctl::migrate_req();
    let (pg, seed) = postgres(100);
    let users = [(seed.app_user.as_str(), seed.app_password.as_str())];
    let lines = "so_reuseport = 1\nunix_socket_dir =\ndefault_pool_size = 10";
    let mut old = Pgmux::start(&pg, lines, &users);
    let port = old.port;
    let conn = format!(
        "host=127.0.0.1 port={port} dbname=synergyflow user={}",
        seed.app_user
    );
    pgbench_init(&pg, &conn, &seed.app_password);
    // read-write pgbench, a new connection per transaction (-C) as pooled apps reconnect
    let bench = Command::new(pg.tool("pgbench"))
        .args(["-c", "16", "-j", "2", "-T", "8", "-C", "-n", &conn])
        .env("PGPASSWORD", &seed.app_password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // the new process binds the same port, then the old one is told to drain
    let new = Pgmux::start_on(&pg, lines, &users, port);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let code =
        tokio::task::block_in_place(|| old.signal_and_wait(libc::SIGINT, Duration::from_secs(20)));
    assert_eq!(code, Some(0), "the old process drains and exits");
    let out = tokio::task::block_in_place(|| bench.wait_with_output()).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgbench failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
    let processed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next()?.trim().parse().ok())
        .unwrap_or(0);
    assert!(processed > 100, "{stdout}");
    // the survivor served transactions after the takeover, and the books balance
    assert!(new.log_text().contains("login attempt"));
    assert!(pgbench_balances_add_up(&pg));
}
